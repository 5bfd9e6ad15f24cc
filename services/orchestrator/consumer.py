"""Kafka in and out: the cwmp.inbound consumer, the plan and device-event publisher, the sweep loop.

Events of one device are handled strictly in order (they share a partition, and each device has
one queue drained by one worker); different devices run concurrently. An offset is committed only
once it and every offset before it in its partition were handled, so a crash means redelivery,
never loss; the engine answers a redelivered event with the same plan. An event that keeps failing (a
MongoDB outage, say) is retried with backoff before it is given up with an error log, so one bad
event cannot stall a partition forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
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
from services.bus.kafka import LostLogWatchdog, make_consumer, topic_name
from services.common.redaction import redact_model
from services.common.settings import Settings
from services.orchestrator.engine import Engine

log = logging.getLogger(__name__)

HANDLE_ATTEMPTS = 5
# Devices handled at once. Handling is mostly waiting on MongoDB and Kafka, so many can overlap.
MAX_CONCURRENT_DEVICES = 256
# Events fetched but not handled yet; fetching pauses above it (memory, and fairness on rebalance).
MAX_IN_FLIGHT = 5000
COMMIT_INTERVAL_SECONDS = 1.0
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
        if not events:
            return
        topic = topic_name(self.settings, TOPIC_DEVICE_EVENTS)
        # device.events is public: no secret parameter value leaves on it (services.common.redaction).
        events = [redact_model(event) for event in events]
        # Sent together, acknowledged together: one broker round trip, not one per event.
        sent = [await self.producer.send(topic, encode(event), key=event.device_id.encode()) for event in events]
        await asyncio.gather(*sent)


class OffsetTracker:
    """Which offsets of a partition are done, so that a commit never skips unhandled work.

    Events of different devices finish out of order; the committable offset of a partition is
    the lowest one still being handled (or the next after the last seen, when none is).
    """

    def __init__(self) -> None:
        self.pending: dict[TopicPartition, set[int]] = defaultdict(set)
        self.next_offset: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        self.pending[tp].add(offset)
        self.next_offset[tp] = max(self.next_offset.get(tp, 0), offset + 1)

    def skipped(self, tp: TopicPartition, offset: int) -> None:
        """An offset with nothing to handle (an Inform the gateway answered, an undecodable one)."""
        self.next_offset[tp] = max(self.next_offset.get(tp, 0), offset + 1)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        self.pending[tp].discard(offset)

    def committable(self) -> dict[TopicPartition, int]:
        ready = {}
        for tp, next_offset in self.next_offset.items():
            offset = min(self.pending[tp]) if self.pending[tp] else next_offset
            if offset > self.committed.get(tp, -1):
                ready[tp] = offset
        return ready

    def in_flight(self) -> int:
        return sum(len(offsets) for offsets in self.pending.values())

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.pending.pop(tp, None)
            self.next_offset.pop(tp, None)
            self.committed.pop(tp, None)


class _ForgetOnRebalance(ConsumerRebalanceListener):
    """Partitions lost or (re)gained start afresh in the tracker.

    After a rejoin (a rebalance, or a broker restart that made the group coordinator forget us)
    the log may not be the one the tracker saw: a broker that lost its log numbers from 0
    again, and committing the old offsets into it would make the next owner skip that many.
    """

    def __init__(self, offsets: OffsetTracker) -> None:
        self.offsets = offsets

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.offsets.forget(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.offsets.forget(assigned)


class InboundConsumer:
    """A pipeline: fetching never waits for handling, except when too much is in flight.

    Each device has its own queue, drained by one worker at a time (strict per-device order);
    many devices are handled concurrently. A slow device therefore delays only itself, not the
    plans of every other session, which a fetch-handle-commit loop over whole batches would.
    """

    def __init__(self, settings: Settings, engine: Engine, **consumer_options: object) -> None:
        self.settings = settings
        self.engine = engine
        self.consumer_options = consumer_options
        self.consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_DEVICES)
        self._queues: dict[str, deque[tuple[InboundEvent, TopicPartition, int]]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._offsets = OffsetTracker()
        self._room = asyncio.Event()
        self._room.set()
        self._watchdog: LostLogWatchdog | None = None

    @property
    def group_id(self) -> str:
        return f"{self.settings.kafka_topic_prefix}orchestrator"

    async def start(self) -> None:
        self.consumer = make_consumer(self.settings, TOPIC_INBOUND, group_id=self.group_id,
                                      listener=_ForgetOnRebalance(self._offsets), **self.consumer_options)
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="orchestrator-consumer")
        # Rewound partitions start afresh in the tracker: their old offsets belong to a lost log.
        self._watchdog = LostLogWatchdog(self.consumer, on_rewind=self._offsets.forget)
        self._watchdog.start()

    async def stop(self) -> None:
        if self._watchdog is not None:
            await self._watchdog.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._workers:
            # Let the events in hand finish (they are short), then commit what is done.
            _, running = await asyncio.wait(self._workers, timeout=10)
            for worker in running:
                worker.cancel()
        if self.consumer is not None:
            with contextlib.suppress(KafkaError):
                await self._commit()
            await self.consumer.stop()

    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        assert self.consumer is not None
        last_commit = time.monotonic()
        while True:
            await self._room.wait()
            batch = await self.consumer.getmany(timeout_ms=100, max_records=500)
            assigned = self.consumer.assignment()
            self._offsets.forget([tp for tp in list(self._offsets.next_offset) if tp not in assigned])
            for tp, records in batch.items():
                for record in records:
                    event = _decode(record.value)
                    if event is None:
                        self._offsets.skipped(tp, record.offset)
                        continue
                    self._offsets.started(tp, record.offset)
                    self._enqueue(event, tp, record.offset)
            if self._offsets.in_flight() >= MAX_IN_FLIGHT:
                self._room.clear()  # the workers set it again as they catch up
            if time.monotonic() - last_commit >= COMMIT_INTERVAL_SECONDS:
                last_commit = time.monotonic()
                try:
                    await self._commit()
                except KafkaError:
                    # A rebalance took the partitions away; the new owner re-handles from the last
                    # commit and gets the same answers.
                    log.warning("offset commit failed", exc_info=True)

    def _enqueue(self, event: InboundEvent, tp: TopicPartition, offset: int) -> None:
        queue = self._queues.get(event.device_id)
        if queue is not None:
            queue.append((event, tp, offset))  # its worker is running and will take it
            return
        self._queues[event.device_id] = deque([(event, tp, offset)])
        worker = asyncio.create_task(self._device(event.device_id))
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

    async def _device(self, device_id: str) -> None:
        queue = self._queues[device_id]
        try:
            async with self._limit:
                while queue:
                    event, tp, offset = queue[0]
                    await self._handle(event)
                    queue.popleft()
                    self._offsets.finished(tp, offset)
                    if self._offsets.in_flight() < MAX_IN_FLIGHT // 2:
                        self._room.set()
        finally:
            del self._queues[device_id]

    async def _commit(self) -> None:
        assert self.consumer is not None
        ready = self._offsets.committable()
        if ready:
            await self.consumer.commit({tp: offset for tp, offset in ready.items()})
            self._offsets.committed.update(ready)

    async def _handle(self, event: InboundEvent) -> None:
        for attempt in range(1, HANDLE_ATTEMPTS + 1):
            try:
                await self.engine.handle(event)
                return
            except (PyMongoError, KafkaError, OSError) as exc:
                if attempt == HANDLE_ATTEMPTS:
                    log.error("event given up after repeated failures", extra={
                        "device_id": event.device_id, "session_id": _session_of(event), "type": event.type,
                        "error": type(exc).__name__})
                    return
                await asyncio.sleep(min(5.0, 0.2 * 2 ** attempt) * random.uniform(0.8, 1.2))
            except Exception:
                # A bug, not an outage: retrying would fail the same way.
                log.exception("event handling failed", extra={"device_id": event.device_id,
                                                              "session_id": _session_of(event), "type": event.type})
                return


def _session_of(event: InboundEvent) -> str | None:
    # A DeviceDeleted belongs to no session.
    return getattr(event, "session_id", None)


# An Inform whose session the gateway ended itself (nothing due, services/common/workdue.py):
# for the inventory only. Recognised without decoding it (the encoder writes compact JSON).
GATEWAY_ENDED = b'"plan_needed":false'


def _decode(raw: bytes | None) -> InboundEvent | None:
    if raw is None or GATEWAY_ENDED in raw:
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
