"""The went_silent sweep: devices whose Informs stopped arriving.

Each Inform moves the device's ``silent_deadline`` to ``silent_after_intervals`` times its
periodic interval later (changes.py). The sweep reads due deadlines through a sparse index, so its
cost follows the number of silent devices, not the fleet size. Claiming a silence removes the
deadline with a conditional update, so each silence is published once even with several inventory
instances sweeping; the next Inform sets a new deadline and the device can go silent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo.asynchronous.database import AsyncDatabase

from services.bus.events import DeviceEvent
from services.common.settings import Settings
from services.inventory import events as device_events
from services.inventory import store

log = logging.getLogger(__name__)

SWEEP_SECONDS = 30.0
SWEEP_BATCH = 500
_NAMESPACE = uuid.UUID("7c1d3c9e-2d0f-4f44-8a3e-5b7f3f0a9c12")


class SilenceSweeper:
    def __init__(self, settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer, *,
                 every: float = SWEEP_SECONDS, batch: int = SWEEP_BATCH) -> None:
        self.settings = settings
        self.db = db
        self.producer = producer
        self.every = every
        self.batch = batch
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except Exception:  # a failed sweep is retried at the next tick
                log.warning("silence sweep failed; retrying in %.0f s", self.every, exc_info=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every):  # not wait_for: see consumer.py
                    await self._stopping.wait()

    async def sweep(self, now: datetime | None = None) -> int:
        """Publish went_silent for every device past its deadline; returns how many."""
        now = now or datetime.now(UTC)
        published = 0
        while True:
            due = await store.due_silences(self.db, now, self.batch)
            claimed = [document for document in due if await store.claim_silence(
                self.db, document["_id"], document["silent_deadline"], now)]
            if claimed:
                try:
                    await device_events.publish(self.producer, self.settings,
                                                [_event(document, now) for document in claimed])
                except Exception:
                    # Hand the silences back so that the next sweep publishes them.
                    for document in claimed:
                        await store.release_silence(self.db, document["_id"], document["silent_deadline"])
                    raise
                published += len(claimed)
            if len(due) < self.batch:
                return published


def _event(document: dict[str, Any], now: datetime) -> DeviceEvent:
    deadline: datetime = document["silent_deadline"]
    last_inform = document.get("last_inform")
    return DeviceEvent(
        event_id=uuid.uuid5(_NAMESPACE, f"{document['_id']}/{deadline.isoformat()}").hex,
        time=now, kind="went_silent", device_id=document["_id"],
        details={"last_inform": _iso(last_inform), "silent_deadline": _iso(deadline),
                 "inform_interval": document.get("inform_interval")})


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
