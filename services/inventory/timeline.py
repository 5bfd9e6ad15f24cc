"""Each device's timeline: the ``device.events`` of every service, kept in MongoDB for the API.

``device.events`` is published by the inventory (registered, booted, value_changed, informed,
went_silent, ...) and by the orchestrator (task, fault and firmware kinds). The recorder reads the
topic in its own consumer group (``<prefix>inventory-timeline``) and stores each event once
(``_id`` = its ``event_id``, so a redelivered event is a duplicate key, ignored) in
``device_timeline``, kept ``TIMELINE_DAYS`` days (TTL index). Offsets are committed only after
the batch is stored; while MongoDB is down the recorder retries the same batch.

``GET /api/v1/devices/{id}/events`` (read-only) pages through one device's events, newest first.
A scoped principal (services.common.scopes) reads the timeline of a device of its scope only; any
other device's answers 404 as an unknown one does, events stored or not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from fastapi import FastAPI, HTTPException, Path, Query, status
from fastapi.params import Depends
from pydantic import BaseModel, Field, ValidationError
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from services.bus.events import TOPIC_DEVICE_EVENTS, DeviceEvent, ValueChange
from services.bus.kafka import make_consumer, topic_name
from services.common import scopes
from services.common.apikeys import Principal
from services.common.settings import Settings

log = logging.getLogger(__name__)

COLLECTION = "device_timeline"
GROUP = "inventory-timeline"
TIMELINE_DAYS = 30
DUPLICATE_KEY = 11000


class TimelineEvent(BaseModel):
    event_id: str
    time: datetime
    kind: str
    changes: list[ValueChange] = Field(default_factory=list, description="value_changed: old and new values")
    details: dict[str, Any] = Field(default_factory=dict)


class Timeline(BaseModel):
    events: list[TimelineEvent]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for older events; null at the end")


def document(event: DeviceEvent) -> dict[str, Any]:
    return {"_id": event.event_id, "device_id": event.device_id, "time": event.time, "kind": event.kind,
            "changes": [change.model_dump() for change in event.changes], "details": event.details,
            "expires_at": event.time + timedelta(days=TIMELINE_DAYS)}


async def ensure_indexes(db: AsyncDatabase) -> None:
    await db[COLLECTION].create_index([("device_id", ASCENDING), ("time", DESCENDING), ("_id", DESCENDING)])
    await db[COLLECTION].create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)


async def store(db: AsyncDatabase, events: Sequence[DeviceEvent]) -> int:
    """Store ``events``; those stored before (same event id) are skipped. Returns how many were new."""
    if not events:
        return 0
    try:
        result = await db[COLLECTION].insert_many([document(e) for e in events], ordered=False)
        return len(result.inserted_ids)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        return int(exc.details.get("nInserted", 0))


def _decode(records: list[ConsumerRecord]) -> list[DeviceEvent]:
    events = []
    for record in records:
        try:
            events.append(DeviceEvent.model_validate_json(record.value))
        except (ValidationError, ValueError, TypeError):
            log.warning("a device.events message that does not decode was skipped",
                        extra={"partition": record.partition, "offset": record.offset})
    return events


class TimelineRecorder:
    def __init__(self, settings: Settings, db: AsyncDatabase) -> None:
        self.settings, self.db = settings, db
        self.consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await ensure_indexes(self.db)
        self.consumer = make_consumer(self.settings, TOPIC_DEVICE_EVENTS, group_id=topic_name(self.settings, GROUP),
                                      fetch_max_wait_ms=500)
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="inventory-timeline")

    async def healthy(self) -> bool:
        """Readiness: the loop is running."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.consumer is not None:
            await self.consumer.stop()

    async def _run(self) -> None:
        assert self.consumer is not None
        while not self._stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=1000)
            if not batch:
                continue
            events = _decode([record for records in batch.values() for record in records])
            delay = 0.5
            while True:
                try:
                    await store(self.db, events)
                    break
                except PyMongoError as exc:
                    log.warning("timeline not stored (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            try:
                await self.consumer.commit()
            except KafkaError as exc:  # a rebalance: the batch is replayed, and ignored as duplicates
                log.warning("timeline offset commit failed (%s)", type(exc).__name__)


def _cursor(document: dict[str, Any]) -> str:
    raw = json.dumps([document["time"].astimezone(UTC).isoformat(), document["_id"]])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after(cursor: str) -> dict[str, Any]:
    try:
        when, event_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        at = datetime.fromisoformat(when)
    except (ValueError, TypeError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "cursor: not a cursor of this list") from exc
    return {"$or": [{"time": {"$lt": at}}, {"time": at, "_id": {"$lt": event_id}}]}


def add_routes(app: FastAPI, db: AsyncDatabase, reader: Depends) -> None:
    """``reader``: the read-only dependency that admits scoped principals (it yields the principal)."""

    @app.get("/api/v1/devices/{device_id}/events", summary="A device's events, newest first",
             response_model=Timeline, tags=["devices"], responses={404: {"description": "a device outside the "
                                                                                      "caller's scope"}},
             description=f"The device.events of the last {TIMELINE_DAYS} days (value changes with old and new "
                         "values, boots, Informs, silences, task outcomes, faults, firmware upgrades).")
    async def device_events(
        device_id: Annotated[str, Path(description="Device id, percent-encoded (and once more in the path)")],
        kind: Annotated[str | None, Query(description="only events of this kind")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
        principal: Principal = reader,
    ) -> dict[str, Any]:
        if not await scopes.device_in_scope(db, principal, device_id):
            # Not 403: a device of another scope is as unknown as one that does not exist.
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
        query: dict[str, Any] = {"device_id": device_id}
        if kind:
            query["kind"] = kind
        if cursor:
            query = {"$and": [query, _after(cursor)]}
        found = await db[COLLECTION].find(query, {"expires_at": 0, "device_id": 0}).sort(
            [("time", DESCENDING), ("_id", DESCENDING)]).limit(limit + 1).to_list()
        page = found[:limit]
        return {"events": [{"event_id": d["_id"], **{k: v for k, v in d.items() if k != "_id"}} for d in page],
                "next_cursor": _cursor(page[-1]) if len(found) > limit else None}
