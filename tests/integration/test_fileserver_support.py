"""Shared fixtures and helpers for the fileserver integration tests (this module has no tests).

The fileserver runs for real: its two FastAPI apps under uvicorn, on loopback ports, in the test's
event loop, against the session's real MongoDB, S3 (SeaweedFS or MinIO) and Kafka. Clients talk
HTTP to it, so streaming, back-pressure and disconnects behave as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI

from cwmp.digest import DigestClient
from services.bus.kafka import ensure_topics
from services.common.settings import Settings
from services.fileserver.app import create_app
from services.fileserver.downloads import create_download_app
from services.fileserver.runtime import FileServerRuntime

ADMIN = {"Authorization": "Bearer test-admin-key"}
MIB = 1024 * 1024


@dataclass
class RunningFileServer:
    runtime: FileServerRuntime
    settings: Settings
    api_url: str
    downloads_url: str
    servers: list[uvicorn.Server]


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving(app: FastAPI, sock: socket.socket) -> AsyncIterator[uvicorn.Server]:
    # As serve() runs them: uvicorn's own proxy handling (which trusts 127.0.0.1) off.
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=2, proxy_headers=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def run_fileserver(settings: Settings, *, wait_for_bucket: bool = True, with_kafka: bool = True,
                         allow_basic: bool | None = None) -> AsyncIterator[RunningFileServer]:
    api_sock, dl_sock = _listening_socket(), _listening_socket()
    downloads_url = f"http://127.0.0.1:{dl_sock.getsockname()[1]}"
    settings = settings.model_copy(update={"files_public_url": downloads_url})
    if with_kafka:
        await ensure_topics(settings)  # as `acs topics` does: services create none
    runtime = FileServerRuntime(settings, with_kafka=with_kafka)
    await runtime.start()
    try:
        if wait_for_bucket:
            async with asyncio.timeout(15):
                await runtime.bucket_ready.wait()
        async with serving(create_app(runtime), api_sock) as api, \
                serving(create_download_app(runtime, allow_basic=allow_basic), dl_sock) as downloads:
            yield RunningFileServer(runtime, settings, f"http://127.0.0.1:{api_sock.getsockname()[1]}",
                                    downloads_url, [api, downloads])
    finally:
        await runtime.close()


def seeded_chunks(seed: int, size: int, chunk: int = MIB) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes, generated piecewise so no test holds a whole file."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def seeded_sha256(seed: int, size: int) -> str:
    digest = hashlib.sha256()
    for piece in seeded_chunks(seed, size):
        digest.update(piece)
    return digest.hexdigest()


def seeded_bytes(seed: int, size: int) -> bytes:
    return b"".join(seeded_chunks(seed, size))


async def upload(client: httpx.AsyncClient, server: RunningFileServer, name: str,
                 body: bytes | Iterator[bytes], *, file_type: str | None = "1 Firmware Upgrade Image",
                 headers: dict[str, str] | None = None, **params: str) -> httpx.Response:
    content: bytes | AsyncIterator[bytes]
    if isinstance(body, bytes):
        content = body
    else:
        async def stream() -> AsyncIterator[bytes]:
            for piece in body:
                yield piece
        content = stream()
    return await client.put(f"{server.api_url}/api/v1/files/{name}", content=content,
                            params={**({"file_type": file_type} if file_type is not None else {}), **params},
                            headers={**ADMIN, **(headers or {})})


class DigestAuth(httpx.Auth):
    """Digest through cwmp.digest's client, as a CPE does it: ask, get 401, answer the challenge.

    ``sent`` keeps every Authorization header, so a test can replay one verbatim.
    """

    def __init__(self, username: str, password: str) -> None:
        self.client = DigestClient(username, password)
        self.sent: list[str] = []

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        response = yield request
        if response.status_code != 401 or "www-authenticate" not in response.headers:
            return
        request.headers["Authorization"] = self.client.authorization(
            request.method, request.url.raw_path.decode(), response.headers.get_list("www-authenticate"))
        self.sent.append(request.headers["Authorization"])
        yield request
