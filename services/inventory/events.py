"""Publishing device facts on ``device.events`` (key = device id, so per-device order holds)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from services.bus.events import TOPIC_DEVICE_EVENTS, DeviceEvent, encode
from services.bus.kafka import topic_name
from services.common.redaction import redact_model
from services.common.settings import Settings
from services.inventory.changes import Fact
from services.inventory.metrics import EVENTS_PUBLISHED


def to_event(fact: Fact) -> DeviceEvent:
    return DeviceEvent(event_id=fact.event_id, time=fact.time, kind=fact.kind,  # type: ignore[arg-type]
                       device_id=fact.device_id, changes=list(fact.changes), details=fact.details)


async def publish(producer: AIOKafkaProducer, settings: Settings, events: Iterable[DeviceEvent]) -> None:
    """Send all, then wait for all: one broker round trip per batch rather than per event.

    Events of one device go to one partition in send order, so their order is kept.
    """
    topic = topic_name(settings, TOPIC_DEVICE_EVENTS)
    # device.events is public: no secret parameter value leaves on it (services.common.redaction).
    batch = [redact_model(event) for event in events]
    pending = [await producer.send(topic, encode(event), key=event.device_id.encode()) for event in batch]
    if pending:
        await asyncio.gather(*pending)
    for event in batch:
        EVENTS_PUBLISHED.labels(event.kind).inc()
