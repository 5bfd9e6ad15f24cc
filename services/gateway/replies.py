"""The session reply channel: plans from the orchestrator to the instance holding the session.

Each gateway instance reads one partition of ``cwmp.replies`` (chosen from its id) and tells the
orchestrator, in every inbound event's ``reply_to``, to write there. Several instances may share
a partition when there are more instances than partitions; each keeps only the plans for its own
sessions. Plans are only useful while their session lives, so reading starts at the end of the
partition and offsets are never committed.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from services.bus.events import TOPIC_REPLIES, SessionPlan
from services.bus.kafka import topic_name, topic_partitions
from services.common.settings import Settings

log = logging.getLogger(__name__)


def reply_partition(gateway_id: str, partitions: int) -> int:
    return zlib.crc32(gateway_id.encode()) % partitions


class ReplyChannel:
    def __init__(self, settings: Settings, gateway_id: str,
                 deliver: Callable[[SessionPlan], None]) -> None:
        self.settings = settings
        self.gateway_id = gateway_id
        self.deliver = deliver
        self.reply_to = ""
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        partitions = await topic_partitions(self.settings, TOPIC_REPLIES)
        partition = reply_partition(self.gateway_id, partitions)
        self.reply_to = f"{TOPIC_REPLIES}:{partition}"
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=20)
        await consumer.start()
        assigned = TopicPartition(topic_name(self.settings, TOPIC_REPLIES), partition)
        consumer.assign([assigned])
        await consumer.seek_to_end(assigned)
        # Resolve the position now: a plan produced right after start must not be skipped.
        await consumer.position(assigned)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="reply-channel")

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading session replies failed; retrying")
                await asyncio.sleep(1)
                continue
            for records in batches.values():
                for record in records:
                    self._dispatch(record.value)

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
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
