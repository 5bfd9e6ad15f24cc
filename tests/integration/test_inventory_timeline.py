"""The device timeline: device.events from the real broker stored once in the real MongoDB, and
paged newest first by GET /api/v1/devices/{id}/events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.bus.events import TOPIC_DEVICE_EVENTS, DeviceEvent, ValueChange, encode
from services.bus.kafka import ensure_topics, make_producer, topic_name
from services.common.settings import Settings
from services.inventory import timeline
from services.inventory.app import create_app

pytestmark = pytest.mark.integration
ADMIN = {"X-API-Key": "test-admin-key"}
DEVICE = "00259E-Box%20One-SN1"


@pytest.fixture
async def db(settings: Settings, mongodb_url: str) -> AsyncIterator[AsyncDatabase]:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    try:
        yield client[settings.mongodb_database]
    finally:
        await client.drop_database(settings.mongodb_database)
        await client.close()


def event(minute: int, kind: str = "value_changed", device: str = DEVICE) -> DeviceEvent:
    return DeviceEvent(event_id=f"e{minute:03d}-{device[-3:]}", kind=kind, device_id=device,  # type: ignore[arg-type]
                       time=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute),
                       changes=[ValueChange(name="Device.DeviceInfo.ProvisioningCode", old=str(minute),
                                            new=str(minute + 1))] if kind == "value_changed" else [])


async def test_events_from_the_bus_are_stored_once_and_paged_newest_first(
        settings: Settings, db: AsyncDatabase, kafka_bootstrap: str) -> None:
    await ensure_topics(settings, [TOPIC_DEVICE_EVENTS])
    producer = make_producer(settings)
    await producer.start()
    recorder = timeline.TimelineRecorder(settings, db)
    await recorder.start()
    try:
        sent = [event(m) for m in range(7)] + [event(3, "booted", "00259E-Box-Other")]
        topic = topic_name(settings, TOPIC_DEVICE_EVENTS)
        for e in [*sent, sent[2]]:  # one delivered twice
            await producer.send_and_wait(topic, encode(e), key=e.device_id.encode())
        async with asyncio.timeout(30):
            while True:
                if await db[timeline.COLLECTION].count_documents({}) >= len(sent):
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        assert await db[timeline.COLLECTION].count_documents({}) == len(sent)
        assert await recorder.healthy()
    finally:
        await recorder.stop()
        await producer.stop()

    app = create_app(settings, db.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://inventory",
                                 headers=ADMIN) as api:
        path = f"/api/v1/devices/{quote(DEVICE, safe='')}/events"
        first = (await api.get(path, params={"limit": 4})).json()
        assert [e["event_id"] for e in first["events"]] == ["e006-SN1", "e005-SN1", "e004-SN1", "e003-SN1"]
        assert first["events"][0]["changes"] == [{"name": "Device.DeviceInfo.ProvisioningCode", "old": "6",
                                                  "new": "7", "type": "xsd:string"}]
        rest = (await api.get(path, params={"limit": 4, "cursor": first["next_cursor"]})).json()
        assert [e["event_id"] for e in rest["events"]] == ["e002-SN1", "e001-SN1", "e000-SN1"]
        assert rest["next_cursor"] is None
        other = (await api.get("/api/v1/devices/00259E-Box-Other/events", params={"kind": "booted"})).json()
        assert [e["kind"] for e in other["events"]] == ["booted"]
        assert (await api.get(path, params={"cursor": "nonsense"})).status_code == 400
        assert (await api.get(path, headers={"X-API-Key": "wrong"})).status_code == 401
    indexes = await db[timeline.COLLECTION].index_information()
    assert any(index.get("expireAfterSeconds") == 0 for index in indexes.values())
