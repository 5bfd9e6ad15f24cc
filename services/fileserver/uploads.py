"""CPE uploads: ``PUT /upload/{name}`` on ACS_DOWNLOADS_PORT, the target of TR-069 Upload RPCs.

For an Upload task the orchestrator names the file ``<device id>/<command key>``, sends the CPE
``{ACS_FILES_PUBLIC_URL}/upload/<name URL-encoded once>`` and credentials minted for that name and
device (credentials.py, the same kind as for downloads). The CPE PUTs the file there (TR-069
section 3.4.3), with Digest, or Basic when ACS_DOWNLOADS_ALLOW_BASIC allows it.

Every check that can refuse the request runs before the first body byte is read: a name not of
the upload form (404), missing or wrong credentials (401 with a challenge), credentials of a
device that does not own the name (403), a Content-Length over ACS_MAX_FILE_BYTES (413), S3 not
ready (503). A client that sent ``Expect: 100-continue`` (curl does for any sizeable body)
therefore sends nothing for a refused request: uvicorn answers ``100 Continue`` only when we
first read the body.

The body then streams into an S3 multipart upload as for operator uploads (storage.py: bounded
memory, SHA-256 and size computed on the way, size limit and idle timeout enforced while
streaming, chunked bodies included). Only a complete body reaches the catalog, in one document
write of kind ``upload``; a cut, oversize or stalled upload leaves nothing there, and its S3
multipart upload is aborted. A CPE repeating an upload to the same URL replaces the earlier
bytes, which go to the trash like any replaced file.

Each upload that got past authentication ends in one record in ``file_uploads`` and one event on
``file.events`` (recorder.py), completed or failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import Gauge
from pymongo.errors import PyMongoError
from starlette.requests import ClientDisconnect

from services.fileserver.catalog import (
    FileRecord,
    content_type_of,
    is_upload_name,
    new_object_key,
    upload_command_key,
)
from services.fileserver.cpe import CpeAuthenticator, DeviceBinding, unavailable
from services.fileserver.runtime import FileServerRuntime
from services.fileserver.storage import StorageUnavailable, UploadStalled, UploadTooLarge

log = logging.getLogger(__name__)

ACTIVE = Gauge("acs_file_uploads_active", "CPE uploads streaming now")
# After refusing a body in mid-stream, read and drop at most this much of the rest (or for this
# long) so that the client, still sending, reads our answer instead of a connection reset.
DRAIN_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 2.0


class _Counted:
    """Passes the request body through, counting it, so a failed upload says how far it got."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.received = 0

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> bytes:
        chunk = await anext(self._chunks)
        self.received += len(chunk)
        return chunk


def declared_length(header: str | None) -> int | None:
    """The Content-Length as a number, None when absent (chunked) or not a plain number.

    uvicorn already refused malformed framing; a value we cannot read only loses the early 413,
    the limit still holds while streaming.
    """
    if header is None or not header.strip().isdigit():
        return None
    return int(header)


def _answer(status: int, text: str, *, close: bool = False) -> Response:
    response = PlainTextResponse(text + "\n", status_code=status)
    if close:
        response.headers["connection"] = "close"
    return response


def _waiting_for_continue(request: Request) -> bool:
    """Whether the client holds its body back until we say ``100 Continue``.

    uvicorn sends that on our first read of the body. Refusing before it, we must close the
    connection (RFC 9110 section 10.1.1): the client will not send the body, and on a kept
    connection its next request would be read as that body.
    """
    return "100-continue" in request.headers.get("expect", "").lower()


async def drain(chunks: AsyncIterator[bytes], *, max_bytes: int = DRAIN_BYTES,
                seconds: float = DRAIN_SECONDS) -> bool:
    """Read and drop the rest of a refused body, within bounds; True if it ended.

    Closing a socket with unread data makes the kernel send a reset, which can destroy our
    answer before the client reads it; nginx's "lingering close" does the same reading.
    """
    dropped = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in chunks:
                dropped += len(chunk)
                if dropped > max_bytes:
                    return False
    except (TimeoutError, ClientDisconnect):
        return False
    return True


class UploadHandler:
    def __init__(self, runtime: FileServerRuntime, auth: CpeAuthenticator, binding: DeviceBinding) -> None:
        self.runtime = runtime
        self.auth = auth
        self.binding = binding

    async def handle(self, request: Request) -> Response:
        started = time.monotonic()
        name: str = request.path_params["name"]
        if not is_upload_name(name):
            # Download file names never have this form, so download credentials cannot write here.
            return _answer(404, "not an upload URL")
        waiting = _waiting_for_continue(request)
        grant = self.auth.authenticate(request, name, "upload")
        if isinstance(grant, Response):
            # Without Expect the body is on its way: the connection stays, uvicorn drops the body,
            # and the CPE sends its Digest answer on the same connection.
            if waiting:
                grant.headers["connection"] = "close"
            return grant
        try:
            refusal = await self.binding.refusal(request, grant, name, "upload")
        except PyMongoError as exc:
            log.warning("MongoDB unavailable: %s", type(exc).__name__)
            return _answer(503, "database unavailable, retry later", close=waiting)
        if refusal is not None:
            if waiting:
                refusal.headers["connection"] = "close"
            return refusal
        command_key = upload_command_key(name, grant.device_id)
        if command_key is None:
            # The credentials are for this very name, so someone minted them for another device
            # than the one the name belongs to: refuse rather than store under a foreign device.
            log.info("upload refused: credentials of device %r for %r", grant.device_id, name,
                     extra={"file_name": name})
            return _answer(403, "these credentials do not allow uploads for this device", close=waiting)

        runtime = self.runtime
        expected = declared_length(request.headers.get("content-length"))
        body = _Counted(request.stream())

        def finish(outcome: str, status: int, reason: str = "", sha256: str | None = None) -> None:
            runtime.upload_recorder.record(
                outcome=outcome, file_name=name, device_id=grant.device_id, command_key=command_key,
                bytes_received=body.received, expected_bytes=expected, duration=time.monotonic() - started,
                sha256=sha256, reason=reason, remote_address=request.client.host if request.client else "",
                status=status)

        if expected is not None and expected > runtime.max_file_bytes:
            finish("failed", 413, "larger than the size limit")
            return _answer(413, f"files are limited to {runtime.max_file_bytes} bytes", close=waiting)
        if not runtime.bucket_ready.is_set():
            finish("failed", 503, "storage unavailable")
            response = unavailable()
            if waiting:
                response.headers["connection"] = "close"
            return response

        key = new_object_key()
        content_type = content_type_of(request.headers.get("content-type"))
        ACTIVE.inc()
        try:
            stored = await runtime.store.put_stream(
                key, body, content_type=content_type, max_bytes=runtime.max_file_bytes,
                # Lets someone looking at the bucket alone tell what an object is.
                metadata={"acs-file-name": quote(name, safe=""), "acs-file-kind": "upload",
                          "acs-device-id": quote(grant.device_id or "", safe=""),
                          "acs-command-key": quote(command_key, safe="")})
        except UploadTooLarge:
            finish("failed", 413, "larger than the size limit")
            # Only a chunked body gets here (uvicorn holds others to their Content-Length).
            ended = await drain(body)
            return _answer(413, f"files are limited to {runtime.max_file_bytes} bytes", close=not ended)
        except UploadStalled as exc:
            finish("failed", 408, str(exc))
            return _answer(408, f"upload stalled: {exc}", close=True)
        except ClientDisconnect:
            finish("failed", 400, "client disconnected")
            return _answer(400, "upload incomplete", close=True)  # nobody is listening any more
        except StorageUnavailable as exc:
            log.warning("S3 unavailable during an upload: %s", exc)
            finish("failed", 503, "storage unavailable")
            response = unavailable()
            response.headers["connection"] = "close"  # the body may still be arriving
            return response
        except asyncio.CancelledError:
            finish("failed", 503, "server shutting down")
            raise
        finally:
            ACTIVE.dec()

        record = FileRecord(
            name=name, file_type=None, size=stored.size, sha256=stored.sha256, content_type=content_type,
            uploaded_at=datetime.now(UTC).replace(microsecond=0), uploaded_by=f"cpe:{grant.device_id}",
            object_key=key, kind="upload", device_id=grant.device_id, command_key=command_key)
        try:
            previous = await runtime.catalog.put(record)
        except PyMongoError as exc:
            log.warning("MongoDB unavailable, upload of %s discarded: %s", name, type(exc).__name__)
            await runtime.discard_now(key)
            finish("failed", 503, "database unavailable")
            return unavailable()
        if previous is not None:
            try:
                await runtime.catalog.discard_object(previous.object_key, runtime.trash_delay)
            except PyMongoError:
                log.warning("orphan object %s left in the bucket", previous.object_key)
        # 201 Created or 204 No Content (replaced), as RFC 9110 section 9.3.4 says for PUT.
        if previous is None:
            finish("completed", 201, sha256=stored.sha256)
            return Response(status_code=201, headers={"Location": f"/upload/{quote(name, safe='')}"})
        finish("completed", 204, sha256=stored.sha256)
        return Response(status_code=204)
