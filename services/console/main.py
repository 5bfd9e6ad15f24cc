"""`acs console`: the operator console on ACS_CONSOLE_PORT (7563), served at / by the router."""

from __future__ import annotations

import logging

from services.bus.kafka import make_producer
from services.common.audit import kafka_publisher
from services.common.preflight import check_mongodb, check_port_free
from services.common.service import serve
from services.common.settings import Settings
from services.console.app import create_app

STARTUP_TIMEOUT = 60.0
log = logging.getLogger(__name__)


async def run(settings: Settings) -> None:
    check_port_free(settings.bind_host, settings.console_port, "ACS_CONSOLE_PORT")
    await check_mongodb(settings, STARTUP_TIMEOUT)
    # Sign-ins go to the audit topic too; without a broker they are still stored in MongoDB.
    producer = make_producer(settings)
    try:
        await producer.start()
    except Exception as exc:  # noqa: BLE001 - the console works without the topic
        log.warning("no Kafka for the audit topic; sign-ins are stored only", extra={"error": str(exc)})
        await producer.stop()
        producer = None
    try:
        await serve([(create_app(settings, publish=kafka_publisher(settings, producer) if producer else None),
                      settings.console_port)], settings)
    finally:
        if producer is not None:
            await producer.stop()
