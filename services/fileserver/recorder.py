"""Every finished download or CPE upload, completed or failed, recorded in MongoDB and published on Kafka.

Campaigns follow progress from ``file.events``; operators look at ``file_downloads`` and
``file_uploads``. The record
is written first (``published: false``) and marked once Kafka acknowledged the event, so a Kafka
outage loses nothing: the maintenance loop republishes what is still unmarked (an outbox). An
event can therefore arrive twice; ``event_id`` (also the record's ``_id``) lets consumers drop
the duplicate.

Recording never delays or breaks a transfer: ``record`` only schedules the work, and failures
there are logged, not raised.

Downloads are published as :class:`FileDownloadEvent`, uploads as :class:`FileUploadEvent`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from services.bus.events import TOPIC_FILE_EVENTS, FileDownloadEvent, FileUploadEvent, encode, new_id
from services.bus.kafka import topic_name
from services.common.settings import Settings

log = logging.getLogger(__name__)

FileEvent = FileDownloadEvent | FileUploadEvent

DOWNLOADS = "file_downloads"
UPLOADS = "file_uploads"
# Unpublished records younger than this are probably being published right now.
OUTBOX_GRACE = timedelta(seconds=10)

DOWNLOADS_TOTAL = Counter("acs_file_downloads_total", "Downloads finished, by outcome", ["outcome"])
DOWNLOAD_BYTES = Counter("acs_file_download_bytes_total", "Bytes sent to CPEs")
UPLOADS_TOTAL = Counter("acs_file_uploads_total", "CPE uploads finished, by outcome", ["outcome"])
UPLOAD_BYTES = Counter("acs_file_upload_bytes_total", "Bytes received from CPE uploads")


class _Outbox:
    """One collection of transfer records, each published once Kafka acknowledges it."""

    def __init__(self, settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer | None,
                 collection: str) -> None:
        self.settings = settings
        self.collection = db[collection]
        self.producer = producer
        self.topic = topic_name(settings, TOPIC_FILE_EVENTS)
        self._tasks: set[asyncio.Task[None]] = set()

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("file_name", ASCENDING), ("finished_at", DESCENDING)])
        await self.collection.create_index([("device_id", ASCENDING), ("finished_at", DESCENDING)])
        await self.collection.create_index([("finished_at", ASCENDING)],
                                           partialFilterExpression={"published": False})

    def _event_from(self, document: dict[str, Any]) -> FileEvent:
        raise NotImplementedError

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        # Keep a reference: the event loop holds tasks weakly, and close() waits for them.
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _store_and_publish(self, document: dict[str, Any], event: FileEvent) -> None:
        try:
            await self.collection.insert_one(document)
        except PyMongoError:
            log.exception("could not record a file transfer", extra={"file_name": event.file_name})
        await self._publish(event)

    async def _publish(self, event: FileEvent) -> bool:
        if self.producer is None:
            return False
        try:
            await self.producer.send_and_wait(self.topic, encode(event), key=event.file_name.encode())
        except Exception:  # any Kafka failure: the outbox retries later
            log.warning("could not publish a file event; will retry", exc_info=True,
                        extra={"file_name": event.file_name})
            return False
        try:
            await self.collection.update_one({"_id": event.event_id}, {"$set": {"published": True}})
        except PyMongoError:
            log.warning("could not mark a file event published", exc_info=True)
        return True

    async def republish(self, limit: int = 500) -> int:
        """Publish records that were stored but never acknowledged by Kafka; returns how many."""
        if self.producer is None:
            return 0
        cutoff = datetime.now(UTC) - OUTBOX_GRACE
        cursor = self.collection.find({"published": False, "finished_at": {"$lt": cutoff}}).limit(limit)
        sent = 0
        async for document in cursor:
            if not await self._publish(self._event_from(document)):
                break
            sent += 1
        return sent

    async def recent(self, file_name: str, limit: int = 100,
                     device_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """The latest records of ``file_name``; ``device_ids``: of these devices only (a scope's)."""
        query: dict[str, Any] = {"file_name": file_name}
        if device_ids is not None:
            query["device_id"] = {"$in": device_ids}
        cursor = self.collection.find(query, {"published": 0}) \
            .sort("finished_at", DESCENDING).limit(limit)
        return [document async for document in cursor]

    async def drain(self, within: float = 10.0) -> None:
        """Wait for records still being written (shutdown, tests)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)


class DownloadRecorder(_Outbox):
    def __init__(self, settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer | None) -> None:
        super().__init__(settings, db, producer, DOWNLOADS)

    def record(self, *, outcome: str, file_name: str, device_id: str | None, bytes_sent: int,
               expected_bytes: int, duration: float, range_request: bool, reason: str = "",
               remote_address: str = "", status: int = 200) -> FileDownloadEvent:
        """Schedule the record and the event; returns the event (tests and logs use it)."""
        event = FileDownloadEvent(outcome=outcome, file_name=file_name, device_id=device_id,  # type: ignore[arg-type]
                                  bytes_sent=bytes_sent, duration_seconds=round(duration, 3),
                                  range_request=range_request, reason=reason)
        DOWNLOADS_TOTAL.labels(outcome).inc()
        DOWNLOAD_BYTES.inc(bytes_sent)
        log.info("download %s", outcome, extra={
            "device_id": device_id, "file_name": file_name, "bytes_sent": bytes_sent,
            "expected_bytes": expected_bytes, "duration_seconds": event.duration_seconds,
            "reason": reason})
        document = {
            "_id": event.event_id, "file_name": file_name, "device_id": device_id, "outcome": outcome,
            "bytes_sent": bytes_sent, "expected_bytes": expected_bytes, "status": status,
            "range_request": range_request, "duration_seconds": event.duration_seconds,
            "reason": reason, "remote_address": remote_address, "finished_at": event.time,
            "published": False,
        }
        self._spawn(self._store_and_publish(document, event))
        return event

    def _event_from(self, document: dict[str, Any]) -> FileDownloadEvent:
        return FileDownloadEvent(
            event_id=document["_id"], time=document["finished_at"], outcome=document["outcome"],
            file_name=document["file_name"], device_id=document.get("device_id"),
            bytes_sent=document["bytes_sent"], duration_seconds=document["duration_seconds"],
            range_request=document.get("range_request", False), reason=document.get("reason", ""))


def upload_event(document: dict[str, Any]) -> FileUploadEvent:
    """The ``file.events`` message for an upload record."""
    return FileUploadEvent(
        event_id=document["_id"], time=document["finished_at"], outcome=document["outcome"],
        file_name=document["file_name"], device_id=document.get("device_id"),
        command_key=document.get("command_key"), bytes_received=document["bytes_received"],
        sha256=document.get("sha256"), duration_seconds=document["duration_seconds"],
        reason=document.get("reason", ""))


class UploadRecorder(_Outbox):
    """Records each CPE upload that got past authentication, in ``file_uploads``."""

    def __init__(self, settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer | None) -> None:
        super().__init__(settings, db, producer, UPLOADS)

    def record(self, *, outcome: str, file_name: str, device_id: str | None, command_key: str | None,
               bytes_received: int, expected_bytes: int | None, duration: float, sha256: str | None = None,
               reason: str = "", remote_address: str = "", status: int = 201) -> FileUploadEvent:
        """Schedule the record and the event; returns the event (tests and logs use it)."""
        document: dict[str, Any] = {
            "_id": new_id(), "file_name": file_name, "device_id": device_id, "command_key": command_key,
            "outcome": outcome, "bytes_received": bytes_received, "expected_bytes": expected_bytes,
            "sha256": sha256, "status": status, "duration_seconds": round(duration, 3), "reason": reason,
            "remote_address": remote_address, "finished_at": datetime.now(UTC), "published": False,
        }
        event = upload_event(document)
        UPLOADS_TOTAL.labels(outcome).inc()
        UPLOAD_BYTES.inc(bytes_received)
        log.info("upload %s", outcome, extra={
            "device_id": device_id, "file_name": file_name, "bytes_received": bytes_received,
            "expected_bytes": expected_bytes, "duration_seconds": event.duration_seconds,
            "reason": reason})
        self._spawn(self._store_and_publish(document, event))
        return event

    def _event_from(self, document: dict[str, Any]) -> FileUploadEvent:
        return upload_event(document)
