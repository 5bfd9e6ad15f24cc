"""The session reply channel: plans from the orchestrator to the instance holding the session.

Each gateway instance reads a partition of ``cwmp.replies`` and tells the orchestrator, in every
inbound event's ``reply_to``, to write there. Several instances may share a partition when there
are more instances than partitions; each keeps only the plans for its own sessions. Plans are
only useful while their session lives, so reading starts at the end of the partition and offsets
are never committed.

The partition moves: after ``rotate_after`` records (ACS_REPLY_ROTATE_RECORDS, 0: never) the
channel switches to the partition that holds the fewest, and keeps reading the ones it left for
``grace`` seconds (the orchestrator answers a session on the ``reply_to`` of its Inform). Two
reasons. Gateways whose ids hash to the same partition drift apart instead of sharing it for
good. And a broker without retention (the local Tansu keeps every record in memory) serves a
fetch in time proportional to what the partition holds: one partition taking every plan of a
busy gateway cost it 85 % of a core at 150,000 records against 12 % at 2,000 (235 plans/s,
measured); spread over all partitions, each holds a twelfth.

A broker that restarts without its log (the local Tansu keeps it in memory) comes back with
partitions shorter than our position; it answers a fetch there with nothing, and the channel
would wait for ever while the orchestrator writes plans from offset 0. A watchdog
(``LostLogWatchdog``) reads the end of each partition every ``CHECK_SECONDS`` and reads a
partition again from its start when its end moved back; the same probe tells readiness that the
channel works.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from services.bus.events import TOPIC_REPLIES, SessionPlan
from services.bus.kafka import (
    CONSUMER_METADATA_MAX_AGE_MS,
    LostLogWatchdog,
    client_options,
    topic_name,
    topic_partitions,
)
from services.common.settings import Settings

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
# Readiness: the last successful check is at most this old.
HEALTHY_WITHIN_SECONDS = 5.0
# Longer than any session lives: a partition left behind may still receive its sessions' plans.
GRACE_SECONDS = 900.0


def reply_partition(gateway_id: str, partitions: int) -> int:
    return zlib.crc32(gateway_id.encode()) % partitions


def next_partition(ends: dict[int, int], preferred: int, avoid: int | None = None) -> int:
    """The partition holding the fewest records; among equals, the first from ``preferred`` on."""
    count = len(ends)
    candidates = [p for p in ends if p != avoid] or list(ends)
    return min(candidates, key=lambda p: (ends[p], (p - preferred) % count))


class ReplyChannel:
    def __init__(self, settings: Settings, gateway_id: str, deliver: Callable[[SessionPlan], None], *,
                 rotate_after: int | None = None, grace: float = GRACE_SECONDS) -> None:
        self.settings = settings
        self.gateway_id = gateway_id
        self.deliver = deliver
        # ACS_REPLY_ROTATE_RECORDS (local-broker tuning); 0: never move.
        self.rotate_after = settings.reply_rotate_records if rotate_after is None else rotate_after
        self.grace = grace
        self.reply_to = ""
        self._topic = topic_name(settings, TOPIC_REPLIES)
        self._partitions = 0
        self._current: TopicPartition | None = None
        self._current_from = 0  # the offset at which the current partition became ours
        self._left: dict[TopicPartition, float] = {}  # partitions left behind -> when
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._watchdog: LostLogWatchdog | None = None

    async def start(self) -> None:
        self._partitions = await topic_partitions(self.settings, TOPIC_REPLIES)
        # A position outside the log (retention deleted it, or the broker lost it) restarts at
        # the beginning: every plan still there may be for a session of ours.
        consumer = AIOKafkaConsumer(**client_options(self.settings), group_id=None,  # type: ignore[arg-type]
                                    enable_auto_commit=False, fetch_max_wait_ms=20,
                                    auto_offset_reset="earliest", request_timeout_ms=5000,
                                    metadata_max_age_ms=CONSUMER_METADATA_MAX_AGE_MS)
        await consumer.start()
        self._consumer = consumer
        await self._move_to_emptiest()
        self._watchdog = LostLogWatchdog(consumer, interval=CHECK_SECONDS, on_rewind=self._rewound)
        await self._watchdog.check()  # the ends of our partitions, for the next checks
        self._task = asyncio.create_task(self._run(), name="reply-channel")
        self._watchdog.start()

    def healthy(self) -> bool:
        """The channel reads, and its partitions answered the watchdog a moment ago."""
        return (self._task is not None and not self._task.done() and self._watchdog is not None
                and time.monotonic() - self._watchdog.checked_ok_at < HEALTHY_WITHIN_SECONDS)

    def _rewound(self, partitions: list[TopicPartition]) -> None:
        if self._current in partitions:
            self._current_from = 0  # counted from the start of the log the broker has now

    async def _move_to_emptiest(self) -> None:
        """Read from the end of the emptiest partition, then tell the orchestrator to write there.

        In this order, so no plan can reach the new partition before our position there is set.
        """
        consumer = self._consumer
        assert consumer is not None
        every = [TopicPartition(self._topic, p) for p in range(self._partitions)]
        ends = await consumer.end_offsets(every)
        left = self._current
        target = TopicPartition(self._topic, next_partition(
            {tp.partition: ends[tp] for tp in every}, reply_partition(self.gateway_id, self._partitions),
            avoid=left.partition if left else None))
        now = time.monotonic()
        if left is not None and left != target:
            self._left[left] = now
        self._left = {tp: since for tp, since in self._left.items() if now - since < self.grace and tp != target}
        # Reassigning forgets positions: keep each one, so no plan already written is skipped.
        positions = {tp: await consumer.position(tp) for tp in consumer.assignment() if tp in self._left}
        consumer.assign([target, *self._left])
        for tp in self._left:
            consumer.seek(tp, positions.get(tp, ends[tp]))
        consumer.seek(target, ends[target])
        self._current, self._current_from = target, ends[target]
        self.reply_to = f"{TOPIC_REPLIES}:{target.partition}"
        if left is not None:
            log.info("session replies moved to another partition", extra={
                "gateway_id": self.gateway_id, "reply_to": self.reply_to, "still_read": len(self._left)})

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        self._dispatch(record.value)
                current = batches.get(self._current) if self._current is not None else None
                if current and self.rotate_after > 0 \
                        and current[-1].offset + 1 - self._current_from >= self.rotate_after:
                    await self._move_to_emptiest()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading session replies failed; retrying")
                await asyncio.sleep(1)

    def _dispatch(self, raw: bytes | None) -> None:
        if not raw:
            return
        try:
            plan = SessionPlan.model_validate_json(raw)
        except ValidationError:
            log.warning("ignoring a malformed session reply")
            return
        if plan.gateway_id == self.gateway_id:
            self.deliver(plan)

    async def stop(self) -> None:
        if self._watchdog is not None:
            await self._watchdog.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
