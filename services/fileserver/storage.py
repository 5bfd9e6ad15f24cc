"""File bytes in S3 (MinIO in production), streamed both ways with bounded memory.

The ``minio`` SDK is synchronous, so every call runs in a thread pool of our own: uploads hold a
thread for their whole duration, and sharing asyncio's default executor with them could starve
the per-chunk download reads. Memory per transfer is bounded by construction:

- upload: minio's ``put_object`` with unknown length pulls ``part_size`` bytes at a time from a
  file-like adapter over the request body and sends each as one S3 multipart part (one part in
  flight, ``num_parallel_uploads=1``), so an upload holds about two parts whatever the file size;
- download: one ranged GET per request, read ``chunk_size`` bytes at a time in the pool; the
  caller awaits the socket send before asking for the next chunk, so a slow CPE slows our reads
  instead of filling memory.

Every way S3 can fail us (refused connection, timeout, wrong key, 5xx) surfaces as
:class:`StorageUnavailable`, which the HTTP layers turn into 503; nothing else escapes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from urllib3.util import Retry, Timeout

from services.common.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

MIB = 1024 * 1024
# S3 parts must be >= 5 MiB; 8 MiB keeps an upload near 2 x 8 MiB of memory and still allows
# 10,000 x 8 MiB = 80 GiB objects, far above any firmware image.
DEFAULT_PART_SIZE = 8 * MIB
# Big enough that the thread hop per chunk costs nothing measurable, small enough that
# thousands of parallel downloads stay within a few hundred MiB.
DEFAULT_CHUNK_SIZE = 256 * 1024
# Connections kept open to S3: one per download in flight; more are opened (and closed after
# use) beyond this, so it is a reuse limit, not a concurrency limit.
DEFAULT_POOL_SIZE = 128
DEFAULT_WORKERS = 64
# A client that stops sending its upload for this long is gone; release the thread it holds.
UPLOAD_IDLE_TIMEOUT = 60.0

# S3 answers these when our key is wrong: a configuration error, not an outage.
CREDENTIAL_ERRORS = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"})


class StorageUnavailable(Exception):
    """S3 cannot serve the request now (down, slow, refusing our credentials).

    ``code`` is the S3 error code when S3 answered (e.g. ``SignatureDoesNotMatch``), else None.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def credentials_refused(self) -> bool:
        return self.code in CREDENTIAL_ERRORS


class ObjectMissing(Exception):
    """The object is not in the bucket although the catalog names it."""


class UploadTooLarge(Exception):
    """The request body went past the size limit."""


class UploadStalled(Exception):
    """The client sent nothing for UPLOAD_IDLE_TIMEOUT seconds."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    sha256: str


def _describe(exc: BaseException) -> str:
    if isinstance(exc, S3Error):
        return f"S3 error {exc.code}"
    return f"cannot reach S3 ({type(exc).__name__})"


class ObjectStore:
    """The bucket of one deployment, with async methods over the synchronous SDK."""

    def __init__(self, settings: Settings, *, part_size: int = DEFAULT_PART_SIZE,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, workers: int = DEFAULT_WORKERS,
                 pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.bucket = settings.s3_bucket
        self.part_size = part_size
        self.chunk_size = chunk_size
        self.endpoint = settings.s3_endpoint
        # minio's default client retries five times with backoff: with S3 down a request would
        # hang for seconds before we could answer 503. Fail fast and let the CPE retry instead.
        http = urllib3.PoolManager(
            timeout=Timeout(connect=3.0, read=60.0),
            maxsize=pool_size,
            retries=Retry(total=2, connect=2, read=0, backoff_factor=0.1,
                          status_forcelist=[502, 503, 504]),
        )
        self.client = Minio(settings.s3_endpoint, access_key=settings.s3_access_key,
                            secret_key=settings.s3_secret_key, secure=settings.s3_secure,
                            region=settings.s3_region, http_client=http)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="s3")

    async def _run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: func(*args, **kwargs))
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "NoSuchObject"}:
                raise ObjectMissing(exc.code) from exc
            raise StorageUnavailable(_describe(exc), exc.code) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            # ValueError: minio raises it for some malformed server answers.
            raise StorageUnavailable(_describe(exc)) from exc

    # --- bucket ---------------------------------------------------------------------------------

    async def ensure_bucket(self) -> bool:
        """Create the bucket if missing; True when it now exists. Raises StorageUnavailable."""
        if await self._run(self.client.bucket_exists, self.bucket):
            return False
        try:
            await self._run(self.client.make_bucket, self.bucket)
        except StorageUnavailable as exc:
            # Another instance may have created it between our two calls.
            if exc.code in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                return False
            raise
        return True

    async def ready(self) -> bool:
        """The bucket answers with our credentials (the readiness check)."""
        try:
            return await self._run(self.client.bucket_exists, self.bucket)
        except StorageUnavailable:
            return False

    # --- upload ---------------------------------------------------------------------------------

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], *, content_type: str,
                         metadata: dict[str, str], max_bytes: int) -> StoredObject:
        """Store the bytes of ``chunks`` under ``key``, hashing them on the way.

        On any failure the multipart upload is aborted by the SDK and nothing is left under
        ``key``; the exception says why (UploadTooLarge, UploadStalled, StorageUnavailable, or
        whatever reading ``chunks`` raised, e.g. the client going away).
        """
        body = _BodyReader(asyncio.get_running_loop(), chunks, max_bytes)
        try:
            await self._run(self.client.put_object, self.bucket, key, body, -1,
                            content_type=content_type, metadata=metadata,
                            part_size=self.part_size, num_parallel_uploads=1)
        except StorageUnavailable:
            if body.error is not None:
                raise body.error from None
            raise
        except BaseException:
            # Cancelled (shutdown, client gone): wake the worker thread so the SDK aborts the
            # multipart upload instead of waiting forever for the next part.
            body.abort()
            raise
        if body.error is not None:
            raise body.error
        return StoredObject(key, body.size, body.hash.hexdigest())

    # --- download -------------------------------------------------------------------------------

    async def open(self, key: str, offset: int, length: int) -> ObjectReader:
        """Start a ranged GET of ``length`` bytes from ``offset`` (length must be > 0)."""
        if length <= 0:
            raise ValueError("length must be positive")
        response = await self._run(self.client.get_object, self.bucket, key, offset=offset, length=length)
        return ObjectReader(self, response, length)

    async def exists(self, key: str) -> bool:
        try:
            await self._run(self.client.stat_object, self.bucket, key)
        except ObjectMissing:
            return False
        return True

    async def delete(self, key: str) -> None:
        await self._run(self.client.remove_object, self.bucket, key)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client._http.clear()  # the SDK has no close(); drop pooled sockets


class ObjectReader:
    """The body of one ranged GET, read chunk by chunk in the store's thread pool."""

    def __init__(self, store: ObjectStore, response: Any, length: int) -> None:
        self._store = store
        self._response = response
        self.remaining = length
        self._inflight: asyncio.Future[bytes] | None = None
        self._closed = False

    async def read(self) -> bytes:
        """The next chunk; b"" at the end. Raises StorageUnavailable if S3 fails mid-body."""
        if self.remaining <= 0 or self._closed:
            return b""
        amount = min(self._store.chunk_size, self.remaining)
        loop = asyncio.get_running_loop()
        self._inflight = loop.run_in_executor(self._store._pool, self._response.read, amount)
        try:
            # Shielded: if our caller is cancelled (the CPE went away) the read still finishes in
            # its thread, and aclose() waits for it before closing the socket under its feet.
            chunk = await asyncio.shield(self._inflight)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(_describe(exc)) from exc
        if not chunk:
            raise StorageUnavailable(f"S3 ended the object {self.remaining} bytes early")
        self.remaining -= len(chunk)
        return chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._inflight is not None and not self._inflight.done():
            try:
                await self._inflight
            except Exception:  # the read's failure was reported by read() already
                log.debug("in-flight S3 read failed during close", exc_info=True)
        complete = self.remaining <= 0

        def release() -> None:
            if not complete:
                # Unread bytes are still on the socket: it cannot go back to the pool.
                self._response.close()
            self._response.release_conn()

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._store._pool, release)
        except RuntimeError:
            release()  # the pool is shut down (process exit): do it here, it does not block long


class _BodyReader:
    """A blocking file-like over an async byte stream, for the SDK running in a worker thread.

    ``read(n)`` hands the event loop a coroutine that gathers ``n`` bytes from the stream and
    blocks the worker thread until it is done. It returns exactly ``n`` bytes until the end, so
    the SDK gets a whole part in one call (it concatenates short reads quadratically). Hashing
    happens here, in the worker thread, to keep the event loop free.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, chunks: AsyncIterator[bytes], max_bytes: int) -> None:
        self._loop = loop
        self._chunks = chunks
        self._max_bytes = max_bytes
        self._buffer = bytearray()
        self._eof = False
        self._aborted = False
        self._pending: concurrent.futures.Future[bytes] | None = None
        self.size = 0
        self.hash = hashlib.sha256()
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        if self._aborted:
            raise OSError("upload aborted")
        self._pending = asyncio.run_coroutine_threadsafe(self._gather(size), self._loop)
        try:
            data = self._pending.result()
        except BaseException as exc:
            # Keep the real reason: the SDK wraps it in nothing, but our caller wants it intact.
            self.error = exc
            raise OSError(f"upload body failed: {type(exc).__name__}") from exc
        self.hash.update(data)
        return data

    async def _gather(self, size: int) -> bytes:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            try:
                chunk = await asyncio.wait_for(anext(self._chunks, None), UPLOAD_IDLE_TIMEOUT)
            except TimeoutError:
                raise UploadStalled(f"no data for {UPLOAD_IDLE_TIMEOUT:.0f} s") from None
            if chunk is None:
                self._eof = True
                break
            self.size += len(chunk)
            if self.size > self._max_bytes:
                raise UploadTooLarge(f"the file is larger than {self._max_bytes} bytes")
            self._buffer += chunk
        take = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        with memoryview(self._buffer) as view:
            data = bytes(view[:take])
        del self._buffer[:take]
        return data

    def abort(self) -> None:
        self._aborted = True
        if self._pending is not None:
            self._pending.cancel()
