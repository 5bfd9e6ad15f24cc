"""The inventory's consumer of ``cwmp.inbound``: batches in, MongoDB writes, device events out.

Per batch: decode (a malformed message is logged and skipped), apply to MongoDB (store), publish
the resulting device events, and only then mark the batch's offsets for the next commit (at most
one a second). A crash anywhere before a commit replays what it would have covered, which the
idempotent writes absorb (at-least-once delivery, exactly-once effect on the device records). A
dependency that is down (MongoDB, or Kafka for the events) pauses the partitions and retries the
same batch with backoff, polling meanwhile so the group does not evict us; nothing is skipped and
nothing is committed until it succeeds.

Limit: a crash between the MongoDB write and the publish of its events loses those events (the
replayed message is recognised as applied). Events carry ids derived from the inbound message,
so the other direction (duplicates) can be filtered by subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from services.bus.events import TOPIC_INBOUND, decode_inbound
from services.bus.kafka import LostLogWatchdog, make_consumer, topic_name
from services.common.settings import Settings
from services.inventory import events as device_events
from services.inventory.changes import Observation, PlanConfig, observe
from services.inventory.metrics import BATCH_SECONDS, CONSUMER_LAG, MESSAGES, RETRIES
from services.inventory.store import BatchResult, apply_observations

log = logging.getLogger(__name__)

T = TypeVar("T")
GROUP = "inventory"
# Device groups of one batch applied concurrently (store.apply_observations).
LANES = 4
COMMIT_INTERVAL_SECONDS = 1.0
# At most every ACS_INVENTORY_FETCH_INTERVAL seconds a fetch that finds data. No session waits on
# the inventory, and a broker without an index (the local Tansu) lists a partition's whole log for
# every fetch that finds something new in it: fetched as they arrive, Informs cost it one listing
# each. Local-broker tuning: on Apache Kafka 0 fetches as records arrive.


def group_id(settings: Settings) -> str:
    # The topic prefix isolates deployments (and test runs) sharing a cluster; groups follow it, or
    # two deployments' inventories would rebalance against each other.
    return topic_name(settings, GROUP)


def plan_config(settings: Settings) -> PlanConfig:
    return PlanConfig(silent_after_intervals=settings.silent_after_intervals,
                      default_interval=settings.periodic_inform_interval,
                      informed_events=settings.informed_events)


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying the same batch for; others would fail again the same way."""
    if isinstance(exc, ConnectionFailure | WTimeoutError | ExecutionTimeout | KafkaError | OSError):
        return True
    if isinstance(exc, BulkWriteError):
        return bool(exc.details.get("writeConcernErrors")) and not exc.details.get("writeErrors")
    if isinstance(exc, OperationFailure):
        return exc.has_error_label("RetryableWriteError") or exc.has_error_label("TransientTransactionError")
    return isinstance(exc, PyMongoError) and exc.timeout


class _Stopping(Exception):
    """Raised inside a retry loop when the service is shutting down."""


class _DropDoneOnRebalance(ConsumerRebalanceListener):
    """Offsets applied but not committed are dropped for partitions lost or (re)gained.

    Committed later, they could belong to a log the broker no longer has (a broker restarted
    without it numbers from 0 again) and make the next owner skip that many messages. Dropped,
    they cost a replay, which the idempotent writes absorb.
    """

    def __init__(self, owner: InventoryConsumer) -> None:
        self.owner = owner

    def _drop(self, partitions: Iterable[TopicPartition]) -> None:
        self.owner.forget(partitions)

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._drop(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._drop(assigned)


class InventoryConsumer:
    def __init__(self, settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer, *,
                 retry_initial: float = 0.5, retry_max: float = 30.0, **consumer_options: object) -> None:
        self.settings = settings
        self.db = db
        self.producer = producer
        self.config = plan_config(settings)
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.consumer_options = consumer_options
        self.consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._done: dict[TopicPartition, int] = {}  # applied, not committed yet
        # Bumped when partitions are lost, regained or rewound: a batch fetched before must not
        # mark offsets done afterwards (they belong to the log before).
        self._epoch = 0
        self._watchdog: LostLogWatchdog | None = None
        self._last_commit = time.monotonic()

    async def start(self) -> None:
        # No session waits on the inventory: an idle partition may hold a fetch for the broker's
        # default 500 ms instead of the session path's 20 ms (fewer idle fetches on both sides).
        options: dict[str, object] = {"fetch_max_wait_ms": 500, **self.consumer_options}
        self.consumer = make_consumer(self.settings, TOPIC_INBOUND, group_id=group_id(self.settings),
                                      listener=_DropDoneOnRebalance(self), **options)
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="inventory-consumer")
        self._watchdog = LostLogWatchdog(self.consumer, on_rewind=self.forget)
        self._watchdog.start()

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is applied but not committed for ``partitions`` (a replay will follow)."""
        gone = set(partitions)
        self._done = {tp: offset for tp, offset in self._done.items() if tp not in gone}
        self._epoch += 1

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def healthy(self) -> bool:
        """Readiness: the loop is running."""
        return self._task is not None and not self._task.done()

    async def stop(self, grace: float = 20.0) -> None:
        """Finish the batch in hand (and commit it), then leave the group."""
        self._stopping.set()
        if self._watchdog is not None:
            await self._watchdog.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                self._task.cancel()
            except Exception:  # the loop's own failure was logged where it happened
                log.debug("consumer loop ended with an error", exc_info=True)
        if self.consumer is not None:
            await self._commit()
            await self.consumer.stop()

    async def _commit(self) -> None:
        """Commit what is applied. At most once a second under load: a commit per batch cost the
        broker a request per fetch, and a replay of a second's worth is absorbed by idempotence."""
        assert self.consumer is not None
        self._last_commit = time.monotonic()
        offsets, self._done = self._done, {}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # Typically a rebalance: the partition's new owner replays from the last commit, and
            # the writes are idempotent, so these batches cost a replay and nothing else.
            log.warning("offset commit failed (%s); the batches will be replayed", type(exc).__name__)

    async def _run(self) -> None:
        assert self.consumer is not None
        while not self._stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=500)
            if not batch:
                await self._commit()  # idle: nothing left uncommitted
                continue
            fetched = time.monotonic()
            try:
                await self.handle(batch)
            except _Stopping:
                return
            except Exception:
                # A bug must not kill the service silently; it would stop all inventory updates.
                log.exception("inventory consumer loop failed")
                raise
            await self._let_records_gather(fetched + self.settings.inventory_fetch_interval - time.monotonic())

    async def _let_records_gather(self, seconds: float) -> None:
        """Fetch nothing for ``seconds``: what arrives meanwhile comes in the next fetch, together.

        Paused, the background fetcher asks for nothing; records it fetched already stay buffered
        (they would be dropped if we polled while paused, hence no poll here). Heartbeats go on.
        """
        assert self.consumer is not None
        if seconds <= 0:
            return
        assigned = self.consumer.assignment()
        self.consumer.pause(*assigned)
        try:
            with contextlib.suppress(TimeoutError):
                # Not wait_for: on Python 3.11 it can swallow a cancellation that arrives as the
                # event is set (simulator/fleet.py met it).
                async with asyncio.timeout(seconds):
                    await self._stopping.wait()
        finally:
            self.consumer.resume(*(tp for tp in assigned if tp in self.consumer.assignment()))

    async def handle(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Apply one batch, publish its events, commit its offsets."""
        assert self.consumer is not None
        started = time.perf_counter()
        epoch = self._epoch
        observations = [o for records in batch.values() for record in records
                        if (o := self._observe(record)) is not None]
        result = await self._until_done(lambda: self._apply(observations), "mongodb")
        events = [device_events.to_event(fact) for fact in result.facts]
        await self._until_done(lambda: device_events.publish(self.producer, self.settings, events), "kafka")
        if epoch == self._epoch:  # else the batch is from before a rebalance or a lost log
            self._done.update({tp: records[-1].offset + 1 for tp, records in batch.items() if records})
        if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_SECONDS:
            await self._commit()
        MESSAGES.labels("applied").inc(result.writes)
        MESSAGES.labels("skipped").inc(result.skipped)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        for tp, records in batch.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None and records:
                CONSUMER_LAG.labels(str(tp.partition)).set(max(0, highwater - records[-1].offset - 1))

    def _observe(self, record: ConsumerRecord) -> Observation | None:
        try:
            observation = observe(decode_inbound(record.value))
        except (ValidationError, ValueError, TypeError) as exc:
            log.warning("malformed message on %s partition %d offset %d skipped: %s", record.topic,
                        record.partition, record.offset, str(exc).splitlines()[0][:300])
            MESSAGES.labels("malformed").inc()
            return None
        if observation is None:
            MESSAGES.labels("ignored").inc()
        return observation

    async def _apply(self, observations: list[Observation]) -> BatchResult:
        try:
            return await apply_observations(self.db, observations, self.config, LANES)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.exception("a batch could not be applied; applying its messages one by one")
        # Isolate the message MongoDB rejects for good (a document over 16 MB, say) so that it
        # does not block its partition forever. Messages applied before are recognised as such.
        result = BatchResult()
        for observation in observations:
            try:
                part = await apply_observations(self.db, [observation], self.config)
            except Exception as exc:
                if is_transient(exc):
                    raise
                log.exception("message cannot be applied; skipped",
                              extra={"device_id": observation.device_id})
                MESSAGES.labels("failed").inc()
                continue
            result.facts += part.facts
            result.writes += part.writes
            result.skipped += part.skipped
        return result

    async def _until_done(self, action: Callable[[], Awaitable[T]], dependency: str) -> T:
        """Run ``action`` until it succeeds; while a dependency is down, pause and keep polling."""
        assert self.consumer is not None
        delay = self.retry_initial
        paused: set[TopicPartition] = set()
        try:
            while True:
                try:
                    return await action()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    RETRIES.labels(dependency).inc()
                    log.warning("%s unavailable (%s); retrying the batch in %.1f s", dependency,
                                type(exc).__name__, delay)
                if self._stopping.is_set():
                    raise _Stopping  # Uncommitted: the batch is replayed after the restart.
                paused |= set(self.consumer.assignment())
                self.consumer.pause(*paused)
                await self._idle(delay)
                delay = min(delay * 2, self.retry_max)
        finally:
            if paused:
                self.consumer.resume(*(tp for tp in paused if tp in self.consumer.assignment()))

    async def _idle(self, seconds: float) -> None:
        """Wait, polling the paused partitions: that returns nothing but counts as a poll for the
        group, so a long outage does not get us evicted (max_poll_interval_ms)."""
        assert self.consumer is not None
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            await self.consumer.getmany(timeout_ms=max(1, int(min(left, 1.0) * 1000)))
