"""Entry point of the fileserver: ``acs fileserver``.

One process serves two ports: the operator API (ACS_FILESERVER_PORT, behind the northbound
router) and CPE downloads (ACS_DOWNLOADS_PORT, the URL put in Download RPCs), sharing one
runtime. MongoDB and Kafka must answer at start (preflight), and S3 must not refuse our key
(that is a configuration error, ended with one line like the others). S3 need not be reachable:
the service starts unready and creates the bucket once S3 answers, so a MinIO restart does not
take it down.
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.bus.events import TOPIC_FILE_EVENTS
from services.bus.kafka import wait_for_topics
from services.common.preflight import ConfigError, check_kafka, check_mongodb, check_port_free
from services.common.service import serve
from services.common.settings import Settings
from services.fileserver.app import create_app
from services.fileserver.downloads import create_download_app
from services.fileserver.runtime import FileServerRuntime
from services.fileserver.storage import ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)

# Long enough for a MinIO that is starting next to us; beyond that we start unready.
S3_PREFLIGHT_SECONDS = 5.0


async def check_s3_key(settings: Settings) -> None:
    """Exit with one line if S3 refuses our credentials; only warn if it does not answer yet."""
    store = ObjectStore(settings, workers=1)
    deadline = time.monotonic() + min(S3_PREFLIGHT_SECONDS, settings.startup_wait)
    try:
        while True:
            try:
                await store.ensure_bucket()
                return
            except StorageUnavailable as exc:
                if exc.credentials_refused:
                    raise ConfigError(f"S3 at {settings.s3_endpoint} rejected the credentials ({exc.code}); "
                                      "check ACS_S3_ACCESS_KEY and ACS_S3_SECRET_KEY") from None
                problem = str(exc)
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)
        log.warning("%s at %s; starting anyway, /readyz is false and downloads answer 503 until it "
                    "answers (check ACS_S3_ENDPOINT)", problem, settings.s3_endpoint)
    finally:
        store.close()


async def run(settings: Settings) -> None:
    check_port_free(settings.bind_host, settings.fileserver_port, "ACS_FILESERVER_PORT")
    check_port_free(settings.bind_host, settings.downloads_port, "ACS_DOWNLOADS_PORT")
    await asyncio.gather(check_mongodb(settings, settings.startup_wait),
                         check_kafka(settings, settings.startup_wait))
    await check_s3_key(settings)
    # Made by `acs topics` (or `acs up`) with its layout, never by a service.
    await wait_for_topics(settings, [TOPIC_FILE_EVENTS], settings.startup_wait)
    runtime = FileServerRuntime(settings)
    await runtime.start()
    try:
        await serve([(create_app(runtime), settings.fileserver_port),
                     (create_download_app(runtime), settings.downloads_port)], settings)
    finally:
        await runtime.close()
