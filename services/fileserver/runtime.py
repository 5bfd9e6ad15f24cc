"""What the operator API and the download server share in one fileserver process.

Both apps run in one process (services.common.service.serve) and use one MongoDB client, one S3
client with its thread pool, one Kafka producer and one maintenance loop. The runtime starts them
once, before the servers, and closes them after; the apps' own lifespans stay empty.

S3 is allowed to be missing: the bucket is created when S3 first answers, and until then
``/readyz`` says so and requests that need S3 get 503. MongoDB and Kafka were checked by the
preflight in main.py; a later MongoDB outage also turns into 503 per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from services.bus.events import TOPIC_FILE_EVENTS
from services.bus.kafka import BusCheck, make_producer
from services.common.apikeys import ApiKeyAuth
from services.common.audit import AuditTrail
from services.common.settings import Settings
from services.fileserver.catalog import Catalog
from services.fileserver.recorder import DownloadRecorder, UploadRecorder
from services.fileserver.storage import ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL = 15.0
BUCKET_RETRY_INTERVAL = 5.0
# Used while ACS_MAX_FILE_BYTES is not a setting yet: above any firmware image we know of.


class FileServerRuntime:
    def __init__(self, settings: Settings, *, with_kafka: bool = True) -> None:
        self.settings = settings
        self.mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True,
                                                        serverSelectionTimeoutMS=5000)
        db = self.mongo[settings.mongodb_database]
        self.catalog = Catalog(db)
        self.auth = ApiKeyAuth(db, settings.admin_api_key)
        self.store = ObjectStore(settings)
        self.producer: AIOKafkaProducer | None = make_producer(settings) if with_kafka else None
        self._bus = BusCheck(settings, [TOPIC_FILE_EVENTS]) if with_kafka else None
        self.recorder = DownloadRecorder(settings, db, None)
        self.upload_recorder = UploadRecorder(settings, db, None)
        self.bucket_ready = asyncio.Event()
        self.max_file_bytes = settings.max_file_bytes
        # A replaced or deleted file's bytes stay this long for downloads already streaming them;
        # the orchestrator gives up on a download after download_timeout anyway.
        self.trash_delay = timedelta(seconds=settings.download_timeout)
        self._background: list[asyncio.Task[None]] = []
        self.audit_trail: AuditTrail | None = None  # set by create_app; drained before the producer stops

    async def start(self) -> None:
        try:
            await self.catalog.ensure_indexes()
            await self.recorder.ensure_indexes()
            await self.upload_recorder.ensure_indexes()
        except PyMongoError:
            # Indexes speed things up; their absence breaks nothing. Retried at next start.
            log.warning("could not create MongoDB indexes", exc_info=True)
        if self.producer is not None:
            await self.producer.start()
            self.recorder.producer = self.producer
            self.upload_recorder.producer = self.producer
        self._background = [asyncio.create_task(self._ensure_bucket(), name="fileserver-bucket"),
                            asyncio.create_task(self._maintenance(), name="fileserver-maintenance")]

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.recorder.drain()
        await self.upload_recorder.drain()
        if self.audit_trail is not None:
            await self.audit_trail.drain()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.stop()
        self.store.close()
        await self.mongo.close()

    async def _ensure_bucket(self) -> None:
        warned = False
        while True:
            try:
                if await self.store.ensure_bucket():
                    log.info("created bucket %s", self.store.bucket)
                self.bucket_ready.set()
                return
            except StorageUnavailable as exc:
                if not warned:
                    # Once, not every few seconds: the readiness probe reports the ongoing state.
                    log.warning("S3 at %s is not usable yet (%s); check ACS_S3_ENDPOINT, ACS_S3_ACCESS_KEY "
                                "and ACS_S3_SECRET_KEY. Retrying.", self.store.endpoint, exc)
                    warned = True
            await asyncio.sleep(BUCKET_RETRY_INTERVAL)

    async def _maintenance(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                await self.run_maintenance()
            except Exception:  # keep the loop alive whatever one round hits
                log.warning("fileserver maintenance round failed", exc_info=True)

    async def run_maintenance(self) -> None:
        """One round: delete objects whose grace period ended, republish unsent file events."""
        for key in await self.catalog.due_objects():
            try:
                await self.store.delete(key)
            except StorageUnavailable:
                return  # S3 is away: try again next round
            await self.catalog.forget_object(key)
        await self.recorder.republish()
        await self.upload_recorder.republish()

    async def s3_ready(self) -> bool:
        return await self.store.ready()

    async def kafka_ready(self) -> bool:
        """The broker answers and ``file.events`` exists (events wait in MongoDB meanwhile)."""
        return self._bus is None or await self._bus()

    async def discard_now(self, key: str) -> None:
        """Delete an object nobody references yet; if S3 refuses, leave it to the trash sweep."""
        try:
            await self.store.delete(key)
        except StorageUnavailable:
            try:
                await self.catalog.discard_object(key, self.trash_delay)
            except PyMongoError:
                log.warning("orphan object %s left in the bucket", key)
