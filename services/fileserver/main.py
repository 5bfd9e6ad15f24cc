"""Entry point of the fileserver: ``acs fileserver``.

One process serves two ports: the operator API (ACS_FILESERVER_PORT, behind the northbound
router) and CPE downloads (ACS_DOWNLOADS_PORT, the URL put in Download RPCs), sharing one
runtime. MongoDB and Kafka must answer at start (preflight). S3 need not: the service starts
unready and creates the bucket once S3 answers, so a MinIO restart does not take it down.
"""

from __future__ import annotations

import asyncio
import logging

from services.bus.events import TOPIC_FILE_EVENTS
from services.bus.kafka import ensure_topics
from services.common.preflight import ConfigError, check_kafka, check_mongodb, check_port_free, check_s3
from services.common.service import serve
from services.common.settings import Settings
from services.fileserver.app import create_app
from services.fileserver.downloads import create_download_app
from services.fileserver.runtime import FileServerRuntime

log = logging.getLogger(__name__)

PREFLIGHT_TIMEOUT = 30.0
S3_PREFLIGHT_TIMEOUT = 5.0


async def run(settings: Settings) -> None:
    check_port_free(settings.bind_host, settings.fileserver_port, "ACS_FILESERVER_PORT")
    check_port_free(settings.bind_host, settings.downloads_port, "ACS_DOWNLOADS_PORT")
    await asyncio.gather(check_mongodb(settings, PREFLIGHT_TIMEOUT), check_kafka(settings, PREFLIGHT_TIMEOUT))
    try:
        await check_s3(settings, S3_PREFLIGHT_TIMEOUT)
    except ConfigError as exc:
        # Worth one clear line now, but not fatal: /readyz stays false until S3 answers.
        log.warning("%s; starting anyway, downloads answer 503 until S3 is usable", exc)

    # Normally created by `acs topics` or `acs up`; cheap to make sure, and events need it.
    await ensure_topics(settings, [TOPIC_FILE_EVENTS])
    runtime = FileServerRuntime(settings)
    await runtime.start()
    try:
        await serve([(create_app(runtime), settings.fileserver_port),
                     (create_download_app(runtime), settings.downloads_port)], settings)
    finally:
        await runtime.close()
