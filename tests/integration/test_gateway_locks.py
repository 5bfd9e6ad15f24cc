"""The per-device session lock on real MongoDB, with its group commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from services.common.settings import Settings
from services.gateway.locks import SessionLocks

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


async def test_one_winner_among_concurrent_sessions_of_a_device(locks: SessionLocks) -> None:
    results = await asyncio.gather(*(locks.acquire("dev-1", f"s{i}", "gw", 30) for i in range(20)),
                                   *(locks.acquire(f"other-{i}", f"o{i}", "gw", 30) for i in range(50)))
    assert sum(results[:20]) == 1  # exactly one session of dev-1
    assert all(results[20:])  # other devices, batched together, all succeed


async def test_release_frees_the_device_for_the_next_session(locks: SessionLocks) -> None:
    assert await locks.acquire("dev-2", "a", "gw", 30)
    assert not await locks.acquire("dev-2", "b", "gw", 30)
    await locks.release("dev-2", "b")  # not the holder: nothing happens
    assert not await locks.acquire("dev-2", "b", "gw", 30)
    await locks.release("dev-2", "a")
    assert await locks.acquire("dev-2", "b", "gw", 30)


async def test_an_expired_lock_is_taken_over(locks: SessionLocks) -> None:
    assert await locks.acquire("dev-3", "dead-gateway-session", "gw-dead", 0.2)
    assert not await locks.acquire("dev-3", "new", "gw", 30)
    await asyncio.sleep(0.3)
    assert await locks.acquire("dev-3", "new", "gw", 30)
    assert await locks.refresh("dev-3", "new", 30)
    assert not await locks.refresh("dev-3", "dead-gateway-session", 30)


async def test_mongodb_down_raises_instead_of_granting(settings: Settings) -> None:
    client: AsyncMongoClient = AsyncMongoClient("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300")
    store = SessionLocks(client["x"]["locks"])
    try:
        with pytest.raises(PyMongoError):
            await store.acquire("dev", "s", "gw", 30)
    finally:
        await store.close()
        await client.close()
