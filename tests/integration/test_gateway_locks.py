"""The per-device session lock on real MongoDB, with its group commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from services.common.settings import Settings
from services.gateway.locks import Holder, SessionLocks

pytestmark = pytest.mark.integration


@pytest.fixture
async def locks(settings: Settings, mongodb_url: str) -> AsyncIterator[SessionLocks]:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
    store = SessionLocks(client[settings.mongodb_database]["locks"])
    await store.ensure_indexes()
    yield store
    await store.close()
    await client.drop_database(settings.mongodb_database)
    await client.close()


async def test_concurrent_sessions_of_a_device_hand_the_lock_on_and_one_holds_it(locks: SessionLocks) -> None:
    results = await asyncio.gather(*(locks.acquire("dev-1", f"s{i}", "gw", 30) for i in range(20)),
                                   *(locks.acquire(f"other-{i}", f"o{i}", "gw", 30) for i in range(50)))
    # Each take-over names the one session it replaced: a chain through all twenty, ending at
    # the one that holds the lock now. Nobody is replaced twice, nobody is forgotten.
    replaced = [holder.session_id for holder in results[:20] if holder is not None]
    [holder] = (await locks.holders(["dev-1"])).values()
    assert sorted([*replaced, holder]) == sorted(f"s{i}" for i in range(20))
    assert all(r is None or r.live for r in results[:20])
    assert results[20:] == [None] * 50  # other devices, batched together, were all free


async def test_release_and_refresh_of_a_replaced_session_leave_the_new_lock_alone(locks: SessionLocks) -> None:
    assert await locks.acquire("dev-2", "a", "gw-1", 30) is None
    taken = await locks.acquire("dev-2", "b", "gw-2", 30)
    assert taken == Holder("a", "gw-1", live=True)
    await locks.release("dev-2", "a")  # the old session ends late, on its own instance
    assert not await locks.refresh("dev-2", "a", 30, "gw-1")
    assert await locks.holders(["dev-2", "nobody"]) == {"dev-2": "b"}
    assert await locks.refresh("dev-2", "b", 30, "gw-2")
    await locks.release("dev-2", "b")
    assert await locks.holders(["dev-2"]) == {}
    assert await locks.acquire("dev-2", "c", "gw-1", 30) is None


async def test_an_expired_lock_is_taken_over_and_says_so(locks: SessionLocks) -> None:
    assert await locks.acquire("dev-3", "dead-gateway-session", "gw-dead", 0.2) is None
    await asyncio.sleep(0.3)
    assert await locks.acquire("dev-3", "new", "gw", 30) == Holder("dead-gateway-session", "gw-dead", live=False)
    assert await locks.refresh("dev-3", "new", 30, "gw")
    assert not await locks.refresh("dev-3", "dead-gateway-session", 30, "gw-dead")


async def test_a_refresh_takes_a_vanished_lock_back(locks: SessionLocks) -> None:
    """Expired and removed by the TTL monitor while its session still runs: nobody else has it."""
    assert await locks.acquire("dev-4", "slow", "gw", 30) is None
    await locks.collection.delete_one({"_id": "dev-4"})
    assert await locks.refresh("dev-4", "slow", 30, "gw")
    assert await locks.holders(["dev-4"]) == {"dev-4": "slow"}


async def test_mongodb_down_raises_instead_of_granting(settings: Settings) -> None:
    client: AsyncMongoClient = AsyncMongoClient("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300")
    store = SessionLocks(client["x"]["locks"])
    try:
        with pytest.raises(PyMongoError):
            await store.acquire("dev", "s", "gw", 30)
    finally:
        await store.close()
        await client.close()
