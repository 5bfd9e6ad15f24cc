"""One session per device at a time, across every gateway instance: a lock with expiry.

The lock is a MongoDB document per device (``_id`` = device id) holding the session id, the
gateway instance and an expiry. A TTL index removes stale documents eventually; nothing here
depends on it.

The newest authenticated Inform takes the lock, whoever held it: a CPE that dropped its TCP
connection mid-session and starts over must not wait for its old session to time out.
:meth:`SessionLocks.acquire` says whose lock it took (session, instance and the instance's
address), so that the old session can be ended where it lives; :meth:`holders` lets an instance
check, in one query, which of its sessions lost their lock. Refresh and release name the session,
so an old session can neither extend nor delete the lock of the one that replaced it.

Every session takes and releases its lock, so these two writes are on the hot path of every
Inform. They are group-committed: requests arriving within a few milliseconds go to MongoDB as
one ``insert_many`` and one ``delete_many``, which costs the client and the server a fraction of
one round trip per lock (measured in benchmarks/gateway.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000


@dataclass(frozen=True, slots=True)
class Holder:
    """The session whose lock :meth:`SessionLocks.acquire` took over."""

    session_id: str
    gateway_id: str
    live: bool  # False: it had expired (its gateway died or lost touch with MongoDB)
    owner_url: str = ""  # where the other gateway instances reach the holder's instance


@dataclass
class _Batch:
    inserts: list[tuple[dict[str, Any], asyncio.Future[bool]]] = field(default_factory=list)
    deletes: list[tuple[dict[str, Any], asyncio.Future[None]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.inserts) + len(self.deletes)


class SessionLocks:
    def __init__(self, collection: AsyncCollection, window: float = 0.002, max_batch: int = 500) -> None:
        self.collection = collection
        self.window = window
        self.max_batch = max_batch
        self._batch = _Batch()
        self._flusher: asyncio.Task[None] | None = None
        self._pending = asyncio.Event()

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)

    async def acquire(self, device_id: str, session_id: str, gateway_id: str, ttl: float,
                      owner_url: str = "") -> Holder | None:
        """Take the lock for ``session_id`` whoever holds it; the other session it was taken from.

        None when the device was free (or the lock was this session's already). The caller must
        have authenticated an Inform of this device: taking a lock ends another session.
        """
        now = datetime.now(UTC)
        lock = {"session_id": session_id, "gateway_id": gateway_id, "owner_url": owner_url,
                "expires_at": now + timedelta(seconds=ttl), "taken_at": now}
        # The common case: no lock at all, and a batched insert takes it.
        inserted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._batch.inserts.append(({"_id": device_id, **lock}, inserted))
        self._wake()
        if await inserted:
            return None
        # A lock exists: take it over in one atomic step that also says whose it was (upsert in
        # case its session released it meanwhile).
        previous = await self.collection.find_one_and_update(
            {"_id": device_id}, {"$set": lock}, upsert=True, return_document=ReturnDocument.BEFORE,
            projection={"session_id": True, "gateway_id": True, "owner_url": True, "expires_at": True})
        if previous is None or previous.get("session_id") == session_id:
            return None
        expires_at = previous.get("expires_at")
        if isinstance(expires_at, datetime) and expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)  # pymongo answers naive UTC by default
        return Holder(str(previous.get("session_id")), str(previous.get("gateway_id", "")),
                      live=isinstance(expires_at, datetime) and expires_at > now,
                      owner_url=str(previous.get("owner_url", "")))

    async def holders(self, device_ids: list[str]) -> dict[str, str]:
        """Device id -> the session id holding its lock, for the devices that have one."""
        cursor = self.collection.find({"_id": {"$in": device_ids}}, {"session_id": True})
        return {doc["_id"]: doc.get("session_id", "") async for doc in cursor}

    async def refresh(self, device_id: str, session_id: str, ttl: float, gateway_id: str = "") -> bool:
        """Extend the session's lock (taking it again if it expired and vanished meanwhile).

        False when another session holds the device now: this one was taken over.
        """
        now = datetime.now(UTC)
        try:
            await self.collection.update_one(
                {"_id": device_id, "session_id": session_id},
                {"$set": {"expires_at": now + timedelta(seconds=ttl)},
                 "$setOnInsert": {"gateway_id": gateway_id, "taken_at": now}}, upsert=True)
        except DuplicateKeyError:
            return False  # the document exists with another session's id
        return True

    async def release(self, device_id: str, session_id: str) -> None:
        released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batch.deletes.append(({"_id": device_id, "session_id": session_id}, released))
        self._wake()
        await released

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None

    # --- group commit ----------------------------------------------------------------------------

    def _wake(self) -> None:
        self._pending.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever(), name="session-lock-batches")

    async def _flush_forever(self) -> None:
        while True:
            await self._pending.wait()
            # Let the requests of a few milliseconds gather, unless the batch is full already.
            if len(self._batch) < self.max_batch:
                await asyncio.sleep(self.window)
            self._pending.clear()
            batch, self._batch = self._batch, _Batch()
            if batch.inserts or batch.deletes:
                await asyncio.gather(self._insert(batch.inserts), self._delete(batch.deletes))

    async def _insert(self, inserts: list[tuple[dict[str, Any], asyncio.Future[bool]]]) -> None:
        if not inserts:
            return
        refused: set[int] = set()
        try:
            await self.collection.insert_many([doc for doc, _ in inserts], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != DUPLICATE_KEY for error in errors):
                _fail(inserts, exc)
                return
            refused = {int(error["index"]) for error in errors}
        except PyMongoError as exc:
            _fail(inserts, exc)
            return
        for index, (_, future) in enumerate(inserts):
            if not future.done():
                future.set_result(index not in refused)

    async def _delete(self, deletes: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        if not deletes:
            return
        try:
            await self.collection.delete_many({"$or": [query for query, _ in deletes]})
        except PyMongoError as exc:
            _fail(deletes, exc)
            return
        for _, future in deletes:
            if not future.done():
                future.set_result(None)


def _fail(items: list[tuple[dict[str, Any], asyncio.Future[Any]]], exc: BaseException) -> None:
    log.warning("session lock batch failed", extra={"error": repr(exc), "size": len(items)})
    for _, future in items:
        if not future.done():
            future.set_exception(exc)
