"""CPE downloads: ``GET|HEAD /download/{name}`` on ACS_DOWNLOADS_PORT (uploads: uploads.py).

The URL and the credentials come from a Download RPC (credentials.py mints them). A request
without valid credentials for this very file gets 401 with a Digest challenge (and a Basic one
when ACS_DOWNLOADS_ALLOW_BASIC is on: Basic shows the password to anyone on the path, so it is off
unless the operator says the transport is protected). Then the file streams from S3 with Range,
If-Range, If-None-Match and a SHA-256 ETag (ranges.py decides what to send).

Each GET that starts streaming, or that fails after the CPE authenticated, ends in exactly one
record (recorder.py) with the bytes actually handed to the network: a CPE closing the connection
half way is a failed download with the byte count it got, never an exception in our logs.
HEAD, 304 and 416 send no file bytes and are not recorded.

Paths are used as received: put no proxy that rewrites them in front of this port, or the Digest
``uri`` check fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import Gauge
from pymongo.errors import PyMongoError
from starlette.types import Receive, Scope, Send

from services.common.service import add_health_routes, mongo_check
from services.fileserver.catalog import FileRecord
from services.fileserver.cpe import CpeAuthenticator, DeviceBinding, unavailable
from services.fileserver.ranges import ResponsePlan, make_etag, plan_response
from services.fileserver.routing import NAME
from services.fileserver.runtime import FileServerRuntime
from services.fileserver.storage import ObjectMissing, ObjectReader, StorageUnavailable
from services.fileserver.uploads import UploadHandler

log = logging.getLogger(__name__)

ACTIVE = Gauge("acs_file_downloads_active", "Downloads streaming now")

# (outcome, bytes sent, reason) -> None
FinishCallback = Callable[[str, int, str], None]


class ObjectStreamResponse(Response):
    """Streams a byte range of an S3 object and reports how the transfer ended.

    Starlette's StreamingResponse does not tell the code around it whether the client got
    everything or went away, and keeps reading the source after a disconnect with some servers.
    Here a watcher task listens for ``http.disconnect`` while the pump sends; whichever ends
    first decides the outcome, and the other is cancelled, so a vanished CPE stops our S3 reads
    at once.
    """

    def __init__(self, plan: ResponsePlan, reader: ObjectReader, on_finish: FinishCallback) -> None:
        self.status_code = plan.status
        self.background = None
        self.raw_headers = _raw_headers(plan)
        self.reader = reader
        self.on_finish = on_finish
        self.bytes_sent = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome, reason = "failed", "server shutting down"
        ACTIVE.inc()
        pump = asyncio.create_task(self._pump(send))
        watcher = asyncio.create_task(self._wait_for_disconnect(receive))
        try:
            await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                error = pump.exception()
                if error is None:
                    outcome, reason = "completed", ""
                elif isinstance(error, StorageUnavailable):
                    # Status and length are sent already: returning without finishing the body
                    # makes the server close the connection, which the CPE sees as a short read.
                    reason = f"storage failed mid-stream: {error}"
                    log.warning("S3 failed while streaming: %s", error)
                else:
                    reason = f"stream failed: {type(error).__name__}"
                    log.error("download stream failed", exc_info=error)
            else:
                reason = "client disconnected"
        finally:
            for task in (pump, watcher):
                task.cancel()
            for task in (pump, watcher):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.reader.aclose()
            ACTIVE.dec()
            self.on_finish(outcome, self.bytes_sent, reason)

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        while chunk := await self.reader.read():
            # send() returns once the bytes are in the transport (uvicorn waits while the socket
            # is backed up), so this count is what left for the CPE, and memory stays bounded.
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            self.bytes_sent += len(chunk)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _wait_for_disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


class DownloadHandler:
    def __init__(self, runtime: FileServerRuntime, auth: CpeAuthenticator, binding: DeviceBinding) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.auth = auth
        self.binding = binding

    async def handle(self, request: Request) -> Response:
        started = time.monotonic()
        name = request.path_params["name"]
        grant = self.auth.authenticate(request, name)
        if isinstance(grant, Response):
            return grant
        try:
            if (refusal := await self.binding.refusal(request, grant, name, "download")) is not None:
                return refusal
        except PyMongoError as exc:
            log.warning("MongoDB unavailable: %s", type(exc).__name__)
            return unavailable()
        head = request.method == "HEAD"

        def finish(outcome: str, sent: int, reason: str, *, status: int, expected: int = 0,
                   range_request: bool = False) -> None:
            self.runtime.recorder.record(
                outcome=outcome, file_name=name, device_id=grant.device_id, bytes_sent=sent,
                expected_bytes=expected, duration=time.monotonic() - started, range_request=range_request,
                reason=reason, remote_address=request.client.host if request.client else "", status=status)

        try:
            record = await self.runtime.catalog.get(name)
        except PyMongoError as exc:
            log.warning("MongoDB unavailable: %s", type(exc).__name__)
            if not head:
                finish("failed", 0, "database unavailable", status=503)
            return unavailable()
        if record is None:
            if not head:
                finish("failed", 0, "no such file", status=404)
            return PlainTextResponse("no such file\n", status_code=404)

        plan = plan_for(request, record)
        if head or plan.byte_range is None:
            # HEAD, 304, 416, or an empty file: headers are the whole answer.
            if plan.status in (200, 206) and not head:
                finish("completed", 0, "", status=plan.status, range_request=plan.status == 206)
            response = Response(status_code=plan.status)
            response.raw_headers = _raw_headers(plan)
            return response

        byte_range = plan.byte_range
        try:
            reader = await self.runtime.store.open(record.object_key, byte_range.start, byte_range.length)
        except (StorageUnavailable, ObjectMissing) as exc:
            if isinstance(exc, ObjectMissing):
                # The catalog names an object S3 does not have: an operator must look at this.
                log.error("object %s of file %s is missing from the bucket", record.object_key, name)
            else:
                log.warning("S3 unavailable: %s", exc)
            finish("failed", 0, "storage unavailable", status=503, expected=byte_range.length,
                   range_request=plan.status == 206)
            return unavailable()

        def on_finish(outcome: str, sent: int, reason: str) -> None:
            finish(outcome, sent, reason, status=plan.status, expected=byte_range.length,
                   range_request=plan.status == 206)

        return ObjectStreamResponse(plan, reader, on_finish)


def plan_for(request: Request, record: FileRecord) -> ResponsePlan:
    """What to answer a GET or HEAD of ``record`` (conditional and range headers applied)."""
    headers = {name: request.headers[name] for name in ("range", "if-range", "if-none-match",
                                                          "if-modified-since") if name in request.headers}
    return plan_response(headers, size=record.size, etag=make_etag(record.sha256),
                         last_modified=record.uploaded_at, content_type=record.content_type)


def _raw_headers(plan: ResponsePlan) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in plan.headers.items()]


def create_download_app(runtime: FileServerRuntime, *, allow_basic: bool | None = None) -> FastAPI:
    """The CPE-facing app: downloads, and the uploads CPEs make for Upload RPCs (uploads.py)."""
    app = FastAPI(title="ACS file transfers", docs_url=None, redoc_url=None, openapi_url=None)
    auth = CpeAuthenticator(runtime.settings, allow_basic=allow_basic)
    binding = DeviceBinding(runtime.settings, runtime.mongo[runtime.settings.mongodb_database])
    handler = DownloadHandler(runtime, auth, binding)
    uploads = UploadHandler(runtime, auth, binding)

    # NAME matches "/" too (routing.py): uploads are named <device id>/<command key>. They can be
    # downloaded like any file, with credentials minted for their name (e.g. to restore a config).
    @app.api_route(f"/download/{NAME}", methods=["GET", "HEAD"])
    async def download(request: Request) -> Response:
        return await handler.handle(request)

    @app.put(f"/upload/{NAME}")
    async def upload(request: Request) -> Response:
        return await uploads.handle(request)

    # CPE-facing: downloads, uploads and the probes only. /metrics is on the API port
    # (ACS_FILESERVER_PORT), the same process's registry.
    add_health_routes(app, {"mongodb": mongo_check(runtime.mongo), "s3": runtime.s3_ready}, metrics=False)
    return app
