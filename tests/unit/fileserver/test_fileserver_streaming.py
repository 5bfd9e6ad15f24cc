"""The streaming pieces without servers: the download body pump and the upload body adapter."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.fileserver.downloads import ObjectStreamResponse
from services.fileserver.ranges import ByteRange, ResponsePlan
from services.fileserver.storage import StorageUnavailable, UploadTooLarge, _BodyReader


class FakeReader:
    """Stands in for ObjectReader: ``chunks`` pieces, then optionally an S3 failure."""

    def __init__(self, chunks: int, fail_after: int | None = None) -> None:
        self.left = chunks
        self.served = 0
        self.fail_after = fail_after
        self.closed = False

    async def read(self) -> bytes:
        if self.fail_after is not None and self.served == self.fail_after:
            raise StorageUnavailable("connection reset")
        if self.left == 0:
            return b""
        self.left -= 1
        self.served += 1
        await asyncio.sleep(0)
        return b"x" * 10

    async def aclose(self) -> None:
        self.closed = True


class Client:
    """An ASGI peer that accepts ``accept`` body messages, then hangs up (or never, if None)."""

    def __init__(self, accept: int | None) -> None:
        self.accept = accept
        self.messages: list[dict[str, Any]] = []
        self.gone = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if self.gone.is_set():
            return  # what uvicorn does after a disconnect
        self.messages.append(message)
        bodies = sum(1 for m in self.messages if m["type"] == "http.response.body")
        if self.accept is not None and bodies >= self.accept:
            self.gone.set()
            await asyncio.sleep(3600)  # a full socket buffer: send() blocks until the disconnect

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def stream(reader: FakeReader, client: Client) -> list[tuple[str, int, str]]:
    outcomes: list[tuple[str, int, str]] = []
    plan = ResponsePlan(200, {"content-length": "100"}, ByteRange(0, 99))
    response = ObjectStreamResponse(plan, reader, lambda *args: outcomes.append(args))  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        await response({"type": "http"}, client.receive, client.send)  # type: ignore[arg-type]
    return outcomes


async def test_fileserver_complete_stream_reports_every_byte() -> None:
    reader, client = FakeReader(10), Client(None)
    assert await stream(reader, client) == [("completed", 100, "")]
    assert client.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert reader.closed


async def test_fileserver_client_gone_stops_reading_and_reports_partial() -> None:
    reader, client = FakeReader(10), Client(accept=3)
    # Two bodies went out; the third send blocked when the client went away.
    assert await stream(reader, client) == [("failed", 20, "client disconnected")]
    assert reader.served == 3  # no S3 reads after the disconnect
    assert reader.closed


async def test_fileserver_storage_failure_mid_stream_leaves_the_response_unfinished() -> None:
    reader, client = FakeReader(10, fail_after=4), Client(None)
    [(outcome, sent, reason)] = await stream(reader, client)
    assert (outcome, sent) == ("failed", 40)
    assert "connection reset" in reason
    # No final empty body: the server closes the connection and the CPE sees a short read.
    assert all(m.get("more_body", True) for m in client.messages if m["type"] == "http.response.body")
    assert reader.closed


async def chunks_of(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        await asyncio.sleep(0)
        yield piece


async def test_fileserver_upload_adapter_returns_exact_parts_and_hashes() -> None:
    pieces = [bytes([i]) * 1000 for i in range(25)]
    body = _BodyReader(asyncio.get_running_loop(), chunks_of(pieces), max_bytes=10**6)

    def read_parts() -> list[bytes]:
        # What minio does in its worker thread: ask for part-sized reads until a short one.
        parts = []
        while part := body.read(4096):
            parts.append(part)
        return parts

    parts = await asyncio.to_thread(read_parts)
    assert [len(p) for p in parts] == [4096] * 6 + [25000 - 6 * 4096]
    assert b"".join(parts) == b"".join(pieces)
    assert (body.size, body.hash.hexdigest()) == (25000, hashlib.sha256(b"".join(pieces)).hexdigest())


async def test_fileserver_upload_adapter_stops_at_the_size_limit() -> None:
    body = _BodyReader(asyncio.get_running_loop(), chunks_of([b"x" * 600] * 5), max_bytes=2000)
    with pytest.raises(OSError):
        await asyncio.to_thread(body.read, 10_000)
    assert isinstance(body.error, UploadTooLarge)
