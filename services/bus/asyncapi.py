"""The AsyncAPI document of the ACS's topics, generated from the event contracts.

docs/asyncapi.yaml is this function's output (`acs asyncapi > docs/asyncapi.yaml`); a test keeps
the two equal, so subscribers read exactly what the services send.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from services.bus.events import (
    FILE_EVENT_ADAPTER,
    INBOUND_ADAPTER,
    SCHEMA_VERSION,
    TOPIC_AUDIT,
    TOPIC_CAMPAIGN_EVENTS,
    TOPIC_DEVICE_EVENTS,
    TOPIC_FILE_EVENTS,
    TOPIC_INBOUND,
    TOPIC_REPLIES,
    TOPIC_RETENTION_MS,
    CampaignEvent,
    DeviceEvent,
    SessionPlan,
)
from services.common.audit import AuditEvent

# Where the topics are. The services read the address from ACS_KAFKA_BOOTSTRAP and connect in
# PLAINTEXT: no SASL, no TLS, so the document names no security scheme, and says so.
SERVERS = {
    "kafka": {
        "host": "{bootstrap}",
        "protocol": "kafka",
        "description": "The deployment's Kafka cluster: the host:port list in ACS_KAFKA_BOOTSTRAP (docker-compose: "
                       "kafka:9092; acs up: a local broker on 127.0.0.1). The ACS connects without "
                       "authentication or TLS (PLAINTEXT), so keep the brokers on a private network; subscribers "
                       "connect the same way, or as the cluster's own listeners demand.",
        "variables": {"bootstrap": {"default": "127.0.0.1:9092", "description": "ACS_KAFKA_BOOTSTRAP"}},
        "security": [],
    },
}

CHANNELS: list[tuple[str, str, str, TypeAdapter[Any], str]] = [
    (TOPIC_AUDIT, "AuditEvent", "Public. The audit trail: every write through the API and the console's "
     "sign-ins (failed ones too), with principal, address, request essentials (secrets redacted) and outcome; "
     "the same records as GET /api/v1/audit (docs/security.md#audit-trail). Key: principal.",
     TypeAdapter(AuditEvent), "orchestrator, inventory, fileserver, console"),
    (TOPIC_DEVICE_EVENTS, "DeviceEvent", "Public. Facts about devices for other systems: registration, boots, "
     "informs, value changes with old and new values, silence, task outcomes (succeeded, failed, cancelled, "
     "expired), CPE faults, firmware upgrades. Key: device id.",
     TypeAdapter(DeviceEvent), "inventory, orchestrator"),
    (TOPIC_FILE_EVENTS, "FileEvent", "CPE file downloads and uploads, completed or failed. Key: file name.",
     FILE_EVENT_ADAPTER, "fileserver"),
    (TOPIC_CAMPAIGN_EVENTS, "CampaignEvent", "Public. Firmware campaigns: created, started, waves started and "
     "completed, paused (by a stop rule or a gate, with the reason, or by an operator), resumed, completed, "
     "cancelled, with the devices per state. Key: campaign id.",
     TypeAdapter(CampaignEvent), "orchestrator"),
    (TOPIC_INBOUND, "InboundEvent", "Internal. What CPEs sent, acknowledged by the broker before the CPE's "
     "answer, and device deletions (device_deleted, from the inventory API). Key: device id.",
     INBOUND_ADAPTER, "gateway, inventory"),
    (TOPIC_REPLIES, "SessionPlan", "Internal. The orchestrator's next RPCs for a session, on the partition "
     "named in the event's reply_to.", TypeAdapter(SessionPlan), "orchestrator"),
]


def build_asyncapi() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic, message, description, adapter, publishers in CHANNELS:
        schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[message] = schema
        channel_id = topic.replace(".", "_")
        channels[channel_id] = {
            "address": topic,
            "servers": [{"$ref": "#/servers/kafka"}],
            "description": f"{description} Retention: {TOPIC_RETENTION_MS[topic] // 3_600_000} h.",
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        }
        operations[f"publish_{channel_id}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"Published by {publishers}.",
        }
    messages = {message: {"name": message, "contentType": "application/json",
                          "payload": {"$ref": f"#/components/schemas/{message}"}}
                for _, message, _, _, _ in CHANNELS}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "TR-069 ACS events", "version": str(SCHEMA_VERSION),
                 "description": "Kafka topics of the ACS. JSON values; every message carries schema_version, "
                                "event_id (deduplicate on it: delivery is at least once) and time. Topic names "
                                "may carry the deployment's ACS_KAFKA_TOPIC_PREFIX."},
        "defaultContentType": "application/json",
        "servers": SERVERS,
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def render() -> str:
    import yaml

    return yaml.safe_dump(build_asyncapi(), sort_keys=False, width=110)
