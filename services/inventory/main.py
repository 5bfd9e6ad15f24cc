"""Entry point of the inventory service: checks, indexes, consumer, silence sweep, API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from pymongo import AsyncMongoClient

from services.bus.events import TOPIC_DEVICE_EVENTS, TOPIC_INBOUND
from services.bus.kafka import BusCheck, make_producer, wait_for_topics
from services.common.preflight import check_kafka, check_mongodb
from services.common.service import serve
from services.common.settings import Settings
from services.inventory import credentials, store
from services.inventory.app import create_app
from services.inventory.consumer import InventoryConsumer
from services.inventory.silence import SilenceSweeper
from services.inventory.timeline import TimelineRecorder

log = logging.getLogger(__name__)
STARTUP_TIMEOUT = 60.0


async def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT. Logging is configured by the caller (`acs inventory`)."""
    await check_mongodb(settings, STARTUP_TIMEOUT)
    await check_kafka(settings, STARTUP_TIMEOUT)
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    db = client[settings.mongodb_database]
    producer = make_producer(settings)
    consumer = InventoryConsumer(settings, db, producer)
    sweeper = SilenceSweeper(settings, db, producer)
    recorder = TimelineRecorder(settings, db)
    sweep_task: asyncio.Task[None] | None = None
    try:
        await store.ensure_indexes(db)
        await credentials.ensure_indexes(db)
        # Made by `acs topics` (or `acs up`) with their layout, never by a service.
        await wait_for_topics(settings, [TOPIC_INBOUND, TOPIC_DEVICE_EVENTS], STARTUP_TIMEOUT)
        await producer.start()
        await consumer.start()
        await recorder.start()
        sweep_task = asyncio.create_task(sweeper.run(), name="inventory-silence-sweep")
        assert consumer.task is not None
        consumer.task.add_done_callback(_stop_process_if_failed)
        bus = BusCheck(settings, [TOPIC_INBOUND, TOPIC_DEVICE_EVENTS])
        app = create_app(settings, client, checks={"consumer": consumer.healthy, "timeline": recorder.healthy,
                                                   "kafka": bus}, producer=producer)
        log.info("inventory listening on %s:%d", settings.bind_host, settings.inventory_port)
        await serve([(app, settings.inventory_port)], settings)
    finally:
        sweeper.stop()
        await recorder.stop()
        await consumer.stop()
        if sweep_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await sweep_task
        await producer.stop()
        await client.close()


def _stop_process_if_failed(task: asyncio.Task[None]) -> None:
    # A dead consumer means a stale inventory behind a healthy-looking API: stop the process (as
    # SIGTERM would, gracefully) so that the supervisor restarts it and the replay catches up.
    if not task.cancelled() and task.exception() is not None:
        log.error("the inbound consumer stopped; shutting the service down")
        signal.raise_signal(signal.SIGTERM)
