"""The "work due" marker: may the gateway end a device's routine session itself?

A routine periodic Inform with nothing due for the device needs no plan: the gateway can answer
it, publish the Inform for the inventory only (``InformReceived.plan_needed`` false, which the
orchestrator skips unread) and end the session with 204. Only the orchestrator knows whether
something is due, so it leaves a marker per device in MongoDB (collection ``work_due``), and
everything that can create work for a device invalidates it with :func:`mark_due`.

Generations make it race-free without conditional writes. Each device document has a counter
``gen``; one document ``_id: "*"`` has a counter for every device at once. :func:`mark_due` bumps
the device's counter (or the global one). The gateway reads both counters (:class:`DueReader`,
batched like the session locks) and sends the pair as ``work_due_token`` in the Inform; the
orchestrator, after planning nothing for that Inform with no task open, stores the token it got
as the device's ``idle`` token (:func:`mark_idle`). The device is idle for the gateway only while
the stored token equals the current counters: any :func:`mark_due` after the gateway's read
changes them. Because the gateway read the counters before the orchestrator read the device's
tasks, a task inserted and marked after that read makes the token stale, and a task marked before
it was seen by the orchestrator.

The marker is also bound to what the orchestrator saw: a fingerprint of the Inform's parameters
(a changed ConnectionRequestURL, software version or any value a policy could match on sends the
Inform to the orchestrator), and an expiry (ACS_WORK_DUE_IDLE_SECONDS), after which one Inform
goes to the orchestrator again (tags edited elsewhere). Only an Inform whose events are exactly
``2 PERIODIC`` may be ended by the gateway (whatever its RetryCount: a device with a task open
is never idle, so no task was cut short by the failure being retried).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

COLLECTION = "work_due"
ALL_DEVICES = "*"
ROUTINE_EVENTS = frozenset({"2 PERIODIC"})


def collection(db: AsyncDatabase) -> AsyncCollection:
    return db[COLLECTION]


async def mark_due(db: AsyncDatabase, device_ids: Iterable[str] | None = None) -> None:
    """Something may be due for these devices (None: for every device): their next Inform goes
    to the orchestrator. Call it after the work is stored (a task inserted, a policy saved)."""
    marks = collection(db)
    if device_ids is None:
        await marks.update_one({"_id": ALL_DEVICES}, {"$inc": {"gen": 1}}, upsert=True)
        return
    ids = sorted(set(device_ids))
    if ids:
        await marks.bulk_write([UpdateOne({"_id": d}, {"$inc": {"gen": 1}}, upsert=True) for d in ids],
                               ordered=False)


async def mark_idle(db: AsyncDatabase, device_id: str, token: str, fingerprint: str, seconds: float) -> None:
    """Nothing is due for the device as of ``token`` (the one its Inform carried)."""
    until = datetime.now(UTC) + timedelta(seconds=seconds)
    await collection(db).update_one({"_id": device_id},
                                    {"$set": {"idle": token, "fingerprint": fingerprint, "idle_until": until}},
                                    upsert=True)


def inform_fingerprint(parameters: Iterable[tuple[str, str]]) -> str:
    """Of the Inform's (name, value) pairs, whatever their order."""
    digest = hashlib.blake2b(digest_size=12)
    for name, value in sorted(parameters):
        digest.update(name.encode())
        digest.update(b"\x00")
        digest.update(value.encode())
        digest.update(b"\x01")
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class DueState:
    token: str  # the current counters, "<global>:<device>"
    idle: bool  # the orchestrator said nothing is due as of this token, for this fingerprint


def due_state(device: dict[str, Any] | None, everyone: dict[str, Any] | None, fingerprint: str,
              now: datetime) -> DueState:
    token = f"{int((everyone or {}).get('gen', 0))}:{int((device or {}).get('gen', 0))}"
    if device is None:
        return DueState(token, False)
    until = device.get("idle_until")
    if isinstance(until, datetime) and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    idle = (device.get("idle") == token and device.get("fingerprint") == fingerprint
            and isinstance(until, datetime) and until > now)
    return DueState(token, idle)


class DueReader:
    """The gateway's reads of the marker, group-committed: the reads of a few milliseconds go to
    MongoDB as one ``find`` (run beside the session lock's insert, so no extra wait)."""

    def __init__(self, marks: AsyncCollection, window: float = 0.002, max_batch: int = 500) -> None:
        self.marks = marks
        self.window = window
        self.max_batch = max_batch
        self._waiting: dict[str, list[asyncio.Future[dict[str, Any] | None]]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._pending = asyncio.Event()

    async def state(self, device_id: str, fingerprint: str) -> DueState:
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(device_id, []).append(future)
        self._pending.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever(), name="work-due-reads")
        found = await future
        assert found is not None
        return due_state(found.get("device"), found.get(ALL_DEVICES), fingerprint, datetime.now(UTC))

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None

    async def _flush_forever(self) -> None:
        while True:
            await self._pending.wait()
            if len(self._waiting) < self.max_batch:
                await asyncio.sleep(self.window)
            self._pending.clear()
            waiting, self._waiting = self._waiting, {}
            if waiting:
                await self._read(waiting)

    async def _read(self, waiting: dict[str, list[asyncio.Future[dict[str, Any] | None]]]) -> None:
        try:
            found = {d["_id"]: d async for d in self.marks.find({"_id": {"$in": [ALL_DEVICES, *waiting]}})}
        except PyMongoError as exc:
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        everyone = found.get(ALL_DEVICES)
        for device_id, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result({"device": found.get(device_id), ALL_DEVICES: everyone})
