"""One session per device at a time, across every gateway instance: a lock with expiry.

The lock is a MongoDB document per device (``_id`` = device id). Taking it is one atomic
upsert that succeeds only when no live lock exists; it expires on its own (``expires_at``) so a
gateway that died mid-session blocks its device for at most the idle timeout. A TTL index
removes stale documents eventually; the expiry check itself never depends on the TTL monitor.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError


class SessionLocks:
    def __init__(self, collection: AsyncCollection) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)

    async def acquire(self, device_id: str, session_id: str, gateway_id: str, ttl: float) -> bool:
        """Take the lock for ``session_id``; False when another live session holds it."""
        now = datetime.now(UTC)
        try:
            # Matches only a lock that is ours already or expired; otherwise the upsert inserts
            # a second document with the same _id, which the unique _id index refuses.
            await self.collection.update_one(
                {"_id": device_id, "$or": [{"session_id": session_id}, {"expires_at": {"$lte": now}}]},
                {"$set": {"session_id": session_id, "gateway_id": gateway_id,
                          "expires_at": now + timedelta(seconds=ttl), "taken_at": now}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return True

    async def refresh(self, device_id: str, session_id: str, ttl: float) -> bool:
        result = await self.collection.update_one(
            {"_id": device_id, "session_id": session_id},
            {"$set": {"expires_at": datetime.now(UTC) + timedelta(seconds=ttl)}})
        return result.matched_count == 1

    async def release(self, device_id: str, session_id: str) -> None:
        await self.collection.delete_one({"_id": device_id, "session_id": session_id})
