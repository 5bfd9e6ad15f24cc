"""The event contracts: every message that crosses Kafka, as pydantic models.

JSON on the wire, one ``schema_version`` per message, a ``type`` discriminator per topic. Adding
an optional field is a compatible change; removing or renaming one needs a new schema version.
docs/events.md (AsyncAPI in docs/asyncapi.yaml) documents the same for subscribers.

Topics:
- ``cwmp.inbound`` (key: device id): what CPEs sent, published by the gateway; and the deletion
  of a device, published by the inventory API, so that it is handled in order with its Informs.
- ``cwmp.replies`` (partition chosen by the gateway instance that holds the session): what the
  orchestrator decided that a session should send next.
- ``device.events`` (key: device id): the public stream for other systems, published by
  inventory (device facts) and orchestrator (task outcomes).
- ``file.events`` (key: file name): CPE downloads and uploads, completed or failed, published by
  the fileserver.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1

TOPIC_INBOUND = "cwmp.inbound"
TOPIC_REPLIES = "cwmp.replies"
TOPIC_DEVICE_EVENTS = "device.events"
TOPIC_FILE_EVENTS = "file.events"
TOPIC_CAMPAIGN_EVENTS = "campaign.events"
# Public: the audit trail's records (services/common/audit.py), for SIEMs.
TOPIC_AUDIT = "acs.audit"
ALL_TOPICS = (TOPIC_INBOUND, TOPIC_REPLIES, TOPIC_DEVICE_EVENTS, TOPIC_FILE_EVENTS, TOPIC_CAMPAIGN_EVENTS,
              TOPIC_AUDIT)
# How long each topic keeps messages. Inbound messages are consumed within seconds, but a day
# covers a consumer outage; replies are useless once their session is over; the public streams
# keep a week for subscribers that were away.
TOPIC_RETENTION_MS = {
    TOPIC_INBOUND: 24 * 3600 * 1000,
    TOPIC_REPLIES: 3600 * 1000,
    TOPIC_DEVICE_EVENTS: 7 * 24 * 3600 * 1000,
    TOPIC_FILE_EVENTS: 7 * 24 * 3600 * 1000,
    TOPIC_CAMPAIGN_EVENTS: 7 * 24 * 3600 * 1000,
    TOPIC_AUDIT: 30 * 24 * 3600 * 1000,
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = SCHEMA_VERSION
    event_id: str = Field(default_factory=new_id)
    time: datetime = Field(default_factory=utcnow)


# --- cwmp.inbound ---------------------------------------------------------------------------------


class DeviceIdentity(BaseModel):
    model_config = ConfigDict(frozen=True)

    manufacturer: str = ""
    oui: str
    product_class: str = ""
    serial_number: str


class InformEventCode(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    command_key: str = ""


class ParameterValue(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    value: str
    type: str = "xsd:string"


class SessionRef(Contract):
    """Fields that every message from a CPE session carries."""

    device_id: str
    session_id: str
    # Where the orchestrator sends its replies: "<topic>:<partition>" of the gateway instance.
    reply_to: str
    gateway_id: str


class InformReceived(SessionRef):
    type: Literal["inform"] = "inform"
    device: DeviceIdentity
    events: list[InformEventCode]
    parameters: list[ParameterValue]
    retry_count: int = 0
    current_time: str = ""
    # False: the gateway ended the session itself (nothing was due, services/common/workdue.py);
    # the Inform is for the inventory, and the orchestrator skips it.
    plan_needed: bool = True
    # The work-due counters the gateway read for the device before publishing ("<all>:<device>");
    # the orchestrator stores it when nothing is due. None: not read (marker off).
    work_due_token: str | None = None
    cwmp_namespace: str = "urn:dslforum-org:cwmp-1-0"
    cwmp_version: str | None = None
    remote_address: str = ""

    def event_codes(self) -> set[str]:
        return {event.code for event in self.events}


class CpeRequestReceived(SessionRef):
    """A CPE-initiated RPC (TransferComplete, AutonomousTransferComplete, RequestDownload...).

    The gateway answers the CPE itself once this event is acknowledged by the broker, so the
    CPE can forget the request only after we cannot lose it (TR-069 3.7.1.5).
    """

    type: Literal["cpe_request"] = "cpe_request"
    method: str
    rpc: dict[str, Any]


class RpcResponseReceived(SessionRef):
    """The CPE's answer to an RPC that the orchestrator planned (matched by ``rpc_id``)."""

    type: Literal["rpc_response"] = "rpc_response"
    rpc_id: str
    method: str
    rpc: dict[str, Any]
    # The request this answers, as sent (e.g. which object a DeleteObject removed).
    request: dict[str, Any] | None = None


class SetParameterValuesFaultEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    parameter_name: str
    fault_code: int
    fault_string: str = ""


class RpcFaultReceived(SessionRef):
    type: Literal["rpc_fault"] = "rpc_fault"
    rpc_id: str
    method: str
    fault_code: int
    fault_string: str = ""
    parameter_faults: list[SetParameterValuesFaultEntry] = Field(default_factory=list)
    request: dict[str, Any] | None = None


class SessionEnded(SessionRef):
    """The session is over: ``completed`` (204 sent), ``timeout``, ``error`` or ``dropped``.

    RPCs that were planned but never sent are listed so the orchestrator can requeue them. A
    session that completed after an empty plan (most periodic Informs) has nothing to settle and
    ends without this event.
    """

    type: Literal["session_ended"] = "session_ended"
    outcome: Literal["completed", "timeout", "error", "dropped"]
    unsent_rpc_ids: list[str] = Field(default_factory=list)
    # The RPCs the CPE was sent and never answered. When given, every other planned RPC without
    # an answer was never sent, including those of a plan that arrived after the session ended.
    unanswered_rpc_ids: list[str] | None = None
    reason: str = ""


class DeviceDeleted(Contract):
    """An operator deleted the device (``DELETE /api/v1/devices/{id}``): forget it everywhere.

    Published by the inventory API on ``cwmp.inbound`` with the device id as key, so every consumer
    sees it in order with the device's Informs: an Inform published before the deletion is handled
    before it (and forgotten with the rest), one published after is a first contact. Not part of a
    session: no ``session_id``.
    """

    type: Literal["device_deleted"] = "device_deleted"
    device_id: str
    # Who asked (the API key's name), for the logs of the services that act on it.
    deleted_by: str = ""


InboundEvent = Annotated[
    InformReceived | CpeRequestReceived | RpcResponseReceived | RpcFaultReceived | SessionEnded
    | DeviceDeleted,
    Field(discriminator="type"),
]
INBOUND_ADAPTER: TypeAdapter[InboundEvent] = TypeAdapter(InboundEvent)


# --- cwmp.replies ---------------------------------------------------------------------------------


class PlannedRpc(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Unique id, sent to the CPE as cwmp:ID so that its response is matched to the plan.
    rpc_id: str
    rpc: dict[str, Any]


class SessionPlan(Contract):
    """The next RPCs for one session, in order.

    ``more`` is False when, after these, the session can end (204). When True, the orchestrator
    sends another plan once it has seen the responses to these RPCs (a GetParameterNames walk,
    say); the gateway waits for it up to ACS_SESSION_PLAN_TIMEOUT.
    """

    type: Literal["session_plan"] = "session_plan"
    device_id: str
    session_id: str
    gateway_id: str
    in_reply_to: str
    rpcs: list[PlannedRpc] = Field(default_factory=list)
    more: bool = False


# --- device.events (public) -----------------------------------------------------------------------


class ValueChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    old: str | None
    new: str | None
    type: str = "xsd:string"


class DeviceEvent(Contract):
    """One fact about a device, for subscribers of ``device.events``.

    kind: ``registered`` (first contact), ``booted`` (1 BOOT), ``bootstrapped`` (0 BOOTSTRAP),
    ``informed`` (an Inform; routine periodic ones only with ACS_INFORMED_EVENTS=all),
    ``value_changed`` (changes lists old and new values of the
    parameters that really changed), ``went_silent`` (no Inform for the configured multiple of its
    periodic interval), ``task_succeeded`` / ``task_failed`` / ``task_cancelled`` /
    ``task_expired`` (a task ended; details: task id, name, origin, job id, reason, last fault),
    ``firmware_upgraded`` (details: from/to software version), ``fault_raised`` (the CPE answered
    an RPC with a fault; details: code, string, method, task id, and the per-parameter faults of a
    SetParameterValues), ``software_modules_changed`` (a DUStateChangeComplete or
    AutonomousDUStateChangeComplete; details: ``autonomous``, the CPE's ``results`` per deployment
    unit, ``task_id``), ``autonomous_transfer_completed`` (an AutonomousTransferComplete; details:
    URLs, file type and size, fault), ``download_requested`` (a RequestDownload; details: file type,
    the file the rule chose or why none), ``profile_applied`` / ``profile_failed`` (a configuration
    profile's values were accepted / refused; details: task id, profile ids, parameters or fault),
    ``drift_detected`` (the device reported a value other than its profiles want; details:
    parameter, profile id, mode, corrected, and the values unless secret). Subscribers should
    ignore kinds they do not know: new ones may be added.
    """

    type: Literal["device_event"] = "device_event"
    kind: Literal["registered", "booted", "bootstrapped", "informed", "value_changed", "went_silent",
                  "task_succeeded", "task_failed", "task_cancelled", "task_expired", "firmware_upgraded",
                  "fault_raised", "software_modules_changed", "autonomous_transfer_completed",
                  "download_requested", "profile_applied", "profile_failed", "drift_detected"]
    device_id: str
    changes: list[ValueChange] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


# --- file.events ----------------------------------------------------------------------------------


class FileDownloadEvent(Contract):
    type: Literal["file_download"] = "file_download"
    outcome: Literal["completed", "failed"]
    file_name: str
    device_id: str | None = None
    bytes_sent: int
    duration_seconds: float
    range_request: bool = False
    reason: str = ""


class FileUploadEvent(Contract):
    """A CPE upload (Upload RPC: configuration or log file) completed or failed."""

    type: Literal["file_upload"] = "file_upload"
    outcome: Literal["completed", "failed"]
    file_name: str
    device_id: str | None = None
    command_key: str | None = None
    bytes_received: int
    sha256: str | None = None
    duration_seconds: float
    reason: str = ""


# --- campaign.events ------------------------------------------------------------------------------


class CampaignEvent(Contract):
    """A firmware campaign changed (docs/campaigns.md); key: campaign id.

    kind: ``campaign_created``, ``campaign_started``, ``campaign_wave_started`` /
    ``campaign_wave_completed`` (details: wave number), ``campaign_paused`` (reason; paused_by
    ``rule`` or an operator's name), ``campaign_resumed``, ``campaign_completed``,
    ``campaign_cancelled``. ``counts``: devices per state when the event was made.
    """

    type: Literal["campaign_event"] = "campaign_event"
    kind: Literal["campaign_created", "campaign_started", "campaign_wave_started", "campaign_wave_completed",
                  "campaign_paused", "campaign_resumed", "campaign_completed", "campaign_cancelled"]
    campaign_id: str
    name: str = ""
    state: str
    wave: int | None = None
    reason: str = ""
    counts: dict[str, int] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


FileEvent = Annotated[FileDownloadEvent | FileUploadEvent, Field(discriminator="type")]
FILE_EVENT_ADAPTER: TypeAdapter[FileEvent] = TypeAdapter(FileEvent)


def encode(event: BaseModel) -> bytes:
    return event.model_dump_json().encode()


def decode_inbound(raw: bytes) -> InboundEvent:
    return INBOUND_ADAPTER.validate_json(raw)
