"""The inventory process as deployed: `run` wires preflight, indexes, consumer and API together."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime

import httpx
import pytest
from pymongo import AsyncMongoClient

from services.bus.events import (
    TOPIC_DEVICE_EVENTS,
    TOPIC_INBOUND,
    DeviceIdentity,
    InformEventCode,
    InformReceived,
    encode,
)
from services.bus.kafka import ensure_topics, make_producer, topic_name
from services.common.settings import Settings
from services.inventory.main import run

pytestmark = pytest.mark.integration


async def test_run_serves_the_api_consumes_informs_and_stops_on_sigterm(
        settings: Settings, kafka_bootstrap: str, mongodb_url: str, unused_tcp_port: int) -> None:
    settings = settings.model_copy(update={"inventory_port": unused_tcp_port})
    base = f"http://127.0.0.1:{unused_tcp_port}"
    loop = asyncio.get_running_loop()
    await ensure_topics(settings, [TOPIC_INBOUND, TOPIC_DEVICE_EVENTS])  # as `acs topics` does
    service = asyncio.create_task(run(settings))
    try:
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": "test-admin-key"}) as api:
            async with asyncio.timeout(30):
                while True:
                    try:
                        if (await api.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert not service.done(), service
                    await asyncio.sleep(0.2)
            producer = make_producer(settings)
            await producer.start()
            try:
                await producer.send_and_wait(topic_name(settings, TOPIC_INBOUND), encode(InformReceived(
                    device_id="00259E-Box-M1", session_id="s", reply_to="r:0", gateway_id="g",
                    device=DeviceIdentity(oui="00259E", product_class="Box", serial_number="M1"),
                    events=[InformEventCode(code="0 BOOTSTRAP")], parameters=[], time=datetime.now(UTC))),
                    key=b"00259E-Box-M1")
            finally:
                await producer.stop()
            async with asyncio.timeout(30):
                while (await api.get("/api/v1/devices/00259E-Box-M1")).status_code != 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            assert (await api.get("/api/v1/devices/count")).json() == {"count": 1}
        os.kill(os.getpid(), signal.SIGTERM)  # serve() turns it into a graceful shutdown
        async with asyncio.timeout(30):
            await service
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)  # leave the test loop as we found it
        if not service.done():
            service.cancel()
        client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
        indexes = await client[settings.mongodb_database]["devices"].index_information()
        await client.drop_database(settings.mongodb_database)
        await client.close()
    assert {"serial_number", "oui_product_class", "software_version", "last_inform", "tags_id",
            "silent_deadline"} <= set(indexes)
