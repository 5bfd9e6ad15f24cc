"""Kafka in and out: the cwmp.inbound consumer, the plan and device-event publisher, the sweep loop.

Events of one device are handled strictly in order (they share a partition, and within a fetched
batch each device's events run one after the other); different devices run concurrently. Offsets
are committed only after every event of the batch was handled, so a crash means redelivery, never
loss; the engine answers a redelivered event with the same plan. An event that keeps failing (a
MongoDB outage, say) is retried with backoff before it is given up with an error log, so one bad
event cannot stall a partition forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from services.bus.events import (
    TOPIC_DEVICE_EVENTS,
    TOPIC_INBOUND,
    DeviceEvent,
    InboundEvent,
    SessionPlan,
    decode_inbound,
    encode,
)
from services.bus.kafka import make_consumer, topic_name
from services.common.settings import Settings
from services.orchestrator.engine import Engine

log = logging.getLogger(__name__)

HANDLE_ATTEMPTS = 5
MAX_CONCURRENT_DEVICES = 64
SWEEP_INTERVAL_SECONDS = 30.0


def parse_reply_to(reply_to: str) -> tuple[str, int | None]:
    """``"cwmp.replies:3"`` -> (``"cwmp.replies"``, 3); the topic part is the unprefixed name."""
    topic, sep, partition = reply_to.rpartition(":")
    if sep and partition.isdigit():
        return topic, int(partition)
    return reply_to, None


class KafkaPublisher:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.producer = producer

    async def plan(self, reply_to: str, plan: SessionPlan) -> None:
        topic, partition = parse_reply_to(reply_to)
        await self.producer.send_and_wait(topic_name(self.settings, topic), encode(plan),
                                          key=plan.device_id.encode(), partition=partition)

    async def device_events(self, events: list[DeviceEvent]) -> None:
        topic = topic_name(self.settings, TOPIC_DEVICE_EVENTS)
        for event in events:
            await self.producer.send_and_wait(topic, encode(event), key=event.device_id.encode())


class InboundConsumer:
    def __init__(self, settings: Settings, engine: Engine, **consumer_options: object) -> None:
        self.settings = settings
        self.engine = engine
        self.consumer_options = consumer_options
        self.consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_DEVICES)

    @property
    def group_id(self) -> str:
        return f"{self.settings.kafka_topic_prefix}orchestrator"

    async def start(self) -> None:
        self.consumer = make_consumer(self.settings, TOPIC_INBOUND, group_id=self.group_id,
                                      **self.consumer_options)
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="orchestrator-consumer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.consumer is not None:
            await self.consumer.stop()

    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        assert self.consumer is not None
        while True:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=500)
            if not batch:
                continue
            per_device: dict[str, list[InboundEvent]] = defaultdict(list)
            for records in batch.values():
                for record in records:
                    event = _decode(record.value)
                    if event is not None:
                        per_device[event.device_id].append(event)
            await asyncio.gather(*(self._device(events) for events in per_device.values()))
            try:
                await self.consumer.commit()
            except KafkaError:
                # A rebalance took the partitions away; the new owner re-handles from the last
                # commit and gets the same answers.
                log.warning("offset commit failed", exc_info=True)

    async def _device(self, events: list[InboundEvent]) -> None:
        async with self._limit:
            for event in events:
                await self._handle(event)

    async def _handle(self, event: InboundEvent) -> None:
        for attempt in range(1, HANDLE_ATTEMPTS + 1):
            try:
                await self.engine.handle(event)
                return
            except (PyMongoError, KafkaError, OSError) as exc:
                if attempt == HANDLE_ATTEMPTS:
                    log.error("event given up after repeated failures", extra={
                        "device_id": event.device_id, "session_id": event.session_id, "type": event.type,
                        "error": type(exc).__name__})
                    return
                await asyncio.sleep(min(5.0, 0.2 * 2 ** attempt) * random.uniform(0.8, 1.2))
            except Exception:
                # A bug, not an outage: retrying would fail the same way.
                log.exception("event handling failed", extra={"device_id": event.device_id,
                                                              "session_id": event.session_id, "type": event.type})
                return


def _decode(raw: bytes | None) -> InboundEvent | None:
    if raw is None:
        return None
    try:
        return decode_inbound(raw)
    except ValidationError as exc:
        log.error("undecodable cwmp.inbound message skipped", extra={"errors": exc.error_count()})
        return None


async def sweep_forever(engine: Engine, interval: float = SWEEP_INTERVAL_SECONDS) -> None:
    """Expire, time out and free tasks; several instances may sweep, writes are conditional."""
    while True:
        await asyncio.sleep(interval * random.uniform(0.8, 1.2))
        try:
            changed = await engine.sweep_once()
            if changed:
                log.info("sweep changed tasks", extra={"count": changed})
        except (PyMongoError, KafkaError, OSError):
            log.warning("sweep failed; next round will retry", exc_info=True)
