"""CPE uploads (TR-069 Upload RPC) against the real fileserver, S3, MongoDB and Kafka.

The URL and the credentials are made exactly as the orchestrator makes them for an Upload task
(engine.upload_url, mint_download_credentials on ``<device id>/<command key>``), so these tests
break if the two sides drift apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from cwmp.digest import DigestClient, basic_authorization
from cwmp.httputil import make_device_id
from services.bus.events import TOPIC_FILE_EVENTS, FileUploadEvent
from services.bus.kafka import make_consumer
from services.common.settings import Settings
from services.fileserver import storage
from services.fileserver.catalog import TRASH
from services.fileserver.credentials import download_url, mint_download_credentials
from services.fileserver.recorder import UPLOADS
from services.orchestrator.engine import upload_url
from tests.integration.test_fileserver_support import (
    ADMIN,
    MIB,
    DigestAuth,
    RunningFileServer,
    run_fileserver,
    seeded_bytes,
    seeded_chunks,
    seeded_sha256,
)

pytestmark = pytest.mark.integration

# As cwmp.httputil builds it from an Inform: "%" escapes must survive the single URL-encoding.
DEVICE = make_device_id("00D09E", "Box X", "SN/1")
OTHER_DEVICE = make_device_id("00D09E", "Box X", "SN2")
# As steps.command_key makes it: <24 characters of the task id>.<attempt>
COMMAND_KEY = "6650a1b2c3d4e5f6a7b8c9d0.1"


@pytest.fixture
async def fileserver(settings: Settings, mongodb_url: str, s3_server: object,
                     kafka_bootstrap: str) -> AsyncIterator[RunningFileServer]:
    async with run_fileserver(settings) as running:
        yield running


@pytest.fixture
async def quiet_fileserver(settings: Settings, mongodb_url: str,
                           s3_server: object) -> AsyncIterator[RunningFileServer]:
    """Without Kafka, for the tests that do not look at events."""
    async with run_fileserver(settings, with_kafka=False) as running:
        yield running


def upload_target(server: RunningFileServer, device: str = DEVICE, command_key: str = COMMAND_KEY,
                  **mint: Any) -> tuple[str, str, tuple[str, str]]:
    """(name, URL, credentials) for one Upload RPC, as the orchestrator makes them."""
    name = f"{device}/{command_key}"
    return name, upload_url(server.settings, name), mint_download_credentials(server.settings, name, device, **mint)


def stream(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for piece in chunks:
            yield piece
    return gen()


async def digest_header(client: httpx.AsyncClient, url: str, credentials: tuple[str, str]) -> str:
    """An Authorization header for one PUT to ``url``, from a bodyless first leg.

    What a CPE with a streamed body does: httpx cannot send a generator twice, so the test asks
    for the challenge first, as curl does with ``Expect: 100-continue``.
    """
    challenge = await client.put(url, content=b"")
    assert challenge.status_code == 401
    return DigestClient(*credentials).authorization(
        "PUT", urlsplit(url).path, challenge.headers.get_list("www-authenticate"))


async def upload_records(server: RunningFileServer, name: str, count: int) -> list[dict[str, Any]]:
    collection = server.runtime.mongo[server.settings.mongodb_database][UPLOADS]
    async with asyncio.timeout(10):
        while True:
            await server.runtime.upload_recorder.drain()
            records = await collection.find({"file_name": name}).sort("finished_at", 1).to_list()
            if len(records) >= count:
                return records
            await asyncio.sleep(0.05)


async def listed_uploads(client: httpx.AsyncClient, server: RunningFileServer, **params: str) -> list[dict[str, Any]]:
    response = await client.get(f"{server.api_url}/api/v1/files", headers=ADMIN,
                                params={"kind": "upload", **params})
    assert response.status_code == 200, response.text
    files: list[dict[str, Any]] = response.json()["files"]
    return files


async def bucket_keys(server: RunningFileServer) -> list[str]:
    store = server.runtime.store

    def keys() -> list[str]:
        return [o.object_name for o in store.client.list_objects(store.bucket, recursive=True)]
    return await asyncio.to_thread(keys)


async def raw_exchange(server: RunningFileServer, head: str, body: bytes = b"") -> tuple[str, dict[str, str], bytes]:
    """One ``Expect: 100-continue`` request on a raw socket: the final status line, headers, body.

    The body is sent only after the server said ``100 Continue``; if the server answers finally
    instead, the body is never sent, as a conforming client does.
    """
    parts = urlsplit(server.downloads_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head.encode("latin-1"))
        await writer.drain()
        status, headers = await _read_head(reader)
        if status.split()[1] == "100":
            writer.write(body)
            await writer.drain()
            status, headers = await _read_head(reader)
        content = await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, content
    finally:
        writer.close()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    lines = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return lines[0], headers


async def test_fileserver_cpe_upload_digest_round_trip_is_byte_identical(fileserver: RunningFileServer) -> None:
    size, seed = 17 * MIB + 4321, 5  # three multipart parts, the last one short
    expected_sha = seeded_sha256(seed, size)
    name, url, credentials = upload_target(fileserver)
    assert "%252F1%2F6650" in url  # the device's own %2F escaped once more, the separator once
    reader_key = await fileserver.runtime.auth.create("noc", "read-only")
    as_reader = {"Authorization": f"Bearer {reader_key}"}

    async with httpx.AsyncClient(timeout=60) as client:
        put = await client.put(url, content=seeded_bytes(seed, size), auth=DigestAuth(*credentials),
                               headers={"Content-Type": "text/xml"})
        assert put.status_code == 201, put.text

        [info] = await listed_uploads(client, fileserver, device_id=DEVICE)
        assert {k: info[k] for k in ("name", "kind", "device_id", "command_key", "size", "sha256",
                                     "file_type", "content_type", "uploaded_by")} == {
            "name": name, "kind": "upload", "device_id": DEVICE, "command_key": COMMAND_KEY, "size": size,
            "sha256": expected_sha, "file_type": None, "content_type": "text/xml", "uploaded_by": f"cpe:{DEVICE}"}
        assert await listed_uploads(client, fileserver, device_id=OTHER_DEVICE) == []
        assert [f["name"] for f in await listed_uploads(client, fileserver, command_key=COMMAND_KEY)] == [name]
        operator_files = await client.get(f"{fileserver.api_url}/api/v1/files", headers=ADMIN,
                                          params={"kind": "file"})
        assert operator_files.json()["files"] == []

        # Operators fetch it by name, URL-encoded once, with a read-only key.
        file_url = f"{fileserver.api_url}/api/v1/files/{quote(name, safe='')}"
        assert (await client.get(file_url, headers=as_reader)).json()["sha256"] == expected_sha
        assert (await client.get(file_url + "/content")).status_code == 401
        digest, received = hashlib.sha256(), 0
        async with client.stream("GET", file_url + "/content", headers=as_reader) as content:
            assert content.status_code == 200
            assert content.headers["content-type"] == "text/xml"
            assert content.headers["content-disposition"].startswith(
                f'attachment; filename="{DEVICE}_{COMMAND_KEY}"')
            async for piece in content.aiter_raw():
                digest.update(piece)
                received += len(piece)
        assert (received, digest.hexdigest()) == (size, expected_sha)
        tail = await client.get(file_url + "/content", headers={**as_reader, "Range": "bytes=-10"})
        assert (tail.status_code, tail.content) == (206, seeded_bytes(seed, size)[-10:])

    [record] = await upload_records(fileserver, name, 1)
    assert {k: record[k] for k in ("outcome", "device_id", "command_key", "bytes_received", "expected_bytes",
                                   "sha256", "status")} == {
        "outcome": "completed", "device_id": DEVICE, "command_key": COMMAND_KEY, "bytes_received": size,
        "expected_bytes": size, "sha256": expected_sha, "status": 201}
    consumer = make_consumer(fileserver.settings, TOPIC_FILE_EVENTS, group_id=None)
    await consumer.start()
    try:
        async with asyncio.timeout(15):
            while not (batches := await consumer.getmany(timeout_ms=200)):
                pass
    finally:
        await consumer.stop()
    [event] = [FileUploadEvent.model_validate_json(r.value) for rs in batches.values() for r in rs]
    assert (event.event_id, event.outcome, event.file_name, event.device_id, event.bytes_received) == (
        record["_id"], "completed", name, DEVICE, size)
    assert (event.command_key, event.sha256) == (COMMAND_KEY, expected_sha)


async def test_fileserver_cpe_upload_again_replaces_and_can_be_downloaded_back(
        quiet_fileserver: RunningFileServer) -> None:
    server = quiet_fileserver
    name, url, credentials = upload_target(server)
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.put(url, content=b"first", auth=DigestAuth(*credentials))).status_code == 201
        first_key = (await server.runtime.catalog.get(name)).object_key  # type: ignore[union-attr]
        # The CPE retries the same Upload (it did not see our answer): the new bytes win.
        again = await client.put(url, content=b"second", auth=DigestAuth(*credentials))
        assert again.status_code == 204
        # Restoring a configuration: a Download of the upload, with credentials minted for it.
        back = await client.get(download_url(server.settings, name),
                                auth=DigestAuth(*mint_download_credentials(server.settings, name, DEVICE)))
        assert (back.status_code, back.content) == (200, b"second")
    trash = server.runtime.mongo[server.settings.mongodb_database][TRASH]
    assert [d["_id"] for d in await trash.find().to_list()] == [first_key]


async def test_fileserver_cpe_upload_refuses_wrong_foreign_and_expired_credentials(
        quiet_fileserver: RunningFileServer) -> None:
    server = quiet_fileserver
    name, url, (user, password) = upload_target(server)
    _, _, other_credentials = upload_target(server, command_key="6650a1b2c3d4e5f6a7b8c9d0.2")
    _, _, expired = upload_target(server, ttl=60, now=time.time() - 120)
    async with httpx.AsyncClient(timeout=30) as client:
        anonymous = await client.put(url, content=b"cfg")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Digest ")

        wrong_password = password[:-1] + ("A" if password[-1] != "A" else "B")
        assert (await client.put(url, content=b"cfg", auth=DigestAuth(user, wrong_password))).status_code == 401
        # Credentials of the same device for another Upload: not a key to this one.
        assert (await client.put(url, content=b"cfg", auth=DigestAuth(*other_credentials))).status_code == 401
        assert (await client.put(url, content=b"cfg", auth=DigestAuth(*expired))).status_code == 401
        basic = await client.put(url, content=b"cfg", headers={"Authorization": basic_authorization(user, password)})
        assert basic.status_code == 401
        assert "Basic" not in basic.headers["www-authenticate"]

        # Minted for this very name but for another device: the name is not that device's to write.
        foreign = mint_download_credentials(server.settings, name, OTHER_DEVICE)
        assert (await client.put(url, content=b"cfg", auth=DigestAuth(*foreign))).status_code == 403
        # Download credentials for an operator file cannot write it: its name is no upload name.
        fw_credentials = mint_download_credentials(server.settings, "fw.bin", DEVICE)
        fw_put = await client.put(f"{server.downloads_url}/upload/fw.bin", content=b"evil",
                                  auth=DigestAuth(*fw_credentials))
        assert fw_put.status_code == 404
        assert (await client.put(f"{server.downloads_url}/upload/%2F", content=b"x")).status_code == 404
        assert (await client.get(url)).status_code == 405

        assert await listed_uploads(client, server) == []
        # Nothing above left a trace; the right credentials still work.
        assert (await client.put(url, content=b"cfg", auth=DigestAuth(user, password))).status_code == 201


async def test_fileserver_cpe_upload_basic_when_allowed(settings: Settings, mongodb_url: str,
                                                        s3_server: object) -> None:
    async with run_fileserver(settings, with_kafka=False, allow_basic=True) as server, \
            httpx.AsyncClient(timeout=30) as client:
        name, url, (user, password) = upload_target(server)
        ok = await client.put(url, content=b"log line\n",
                              headers={"Authorization": basic_authorization(user, password)})
        assert ok.status_code == 201
        assert (await server.runtime.catalog.get(name)).size == len(b"log line\n")  # type: ignore[union-attr]


async def test_fileserver_cpe_upload_oversize_is_413_declared_or_streamed(
        quiet_fileserver: RunningFileServer) -> None:
    server = quiet_fileserver
    server.runtime.max_file_bytes = 2 * MIB
    name, url, credentials = upload_target(server)
    async with httpx.AsyncClient(timeout=30) as client:
        declared = await client.put(url, content=b"x" * (2 * MIB + 1), auth=DigestAuth(*credentials))
        assert declared.status_code == 413
        # Chunked: no length to check first, so the limit stops the stream.
        streamed = await client.put(url, content=stream(seeded_chunks(2, 3 * MIB, chunk=256 * 1024)),
                                    headers={"Authorization": await digest_header(client, url, credentials)})
        assert streamed.status_code == 413
        # A client waiting for 100 Continue is refused before it sends anything.
        status, headers, _ = await raw_exchange(server, (
            f"PUT {urlsplit(url).path} HTTP/1.1\r\nHost: acs\r\nContent-Length: {4 * MIB}\r\n"
            f"Authorization: {await digest_header(client, url, credentials)}\r\n"
            "Expect: 100-continue\r\n\r\n"), b"never sent")
        assert status.startswith("HTTP/1.1 413")
        assert headers["connection"] == "close"
        assert await listed_uploads(client, server) == []
    records = await upload_records(server, name, 3)
    assert [(r["outcome"], r["status"], r["expected_bytes"]) for r in records] == [
        ("failed", 413, 2 * MIB + 1), ("failed", 413, None), ("failed", 413, 4 * MIB)]
    assert records[0]["bytes_received"] == 0  # refused on Content-Length, before reading
    assert await bucket_keys(server) == []


async def test_fileserver_cpe_upload_chunked_with_expect_100_continue(quiet_fileserver: RunningFileServer) -> None:
    server = quiet_fileserver
    size, seed = 9 * MIB + 1, 8
    name, url, credentials = upload_target(server)
    path = urlsplit(url).path
    async with httpx.AsyncClient(timeout=30) as client:
        # A refused client is answered without "100 Continue", so it never sends its body.
        status, headers, _ = await raw_exchange(server, (
            f"PUT {path} HTTP/1.1\r\nHost: acs\r\nContent-Length: {size}\r\nExpect: 100-continue\r\n\r\n"))
        assert status.startswith("HTTP/1.1 401")
        assert headers["www-authenticate"].startswith("Digest ")
        assert headers["connection"] == "close"  # it will not send that body on this connection

        # Accepted: 100 Continue, then a chunked body, then 201.
        authorization = await digest_header(client, url, credentials)
        data = seeded_bytes(seed, size)
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + MIB]), data[i:i + MIB])
                           for i in range(0, size, MIB)) + b"0\r\n\r\n"
        status, _, _ = await raw_exchange(server, (
            f"PUT {path} HTTP/1.1\r\nHost: acs\r\nAuthorization: {authorization}\r\n"
            "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"), chunked)
        assert status.startswith("HTTP/1.1 201")
        [info] = await listed_uploads(client, server)
        assert (info["name"], info["size"], info["sha256"]) == (name, size, seeded_sha256(seed, size))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_fileserver_cpe_upload_with_curl_digest_from_stdin(quiet_fileserver: RunningFileServer) -> None:
    """The way a curl-based CPE agent uploads a log: Digest, body from a pipe (chunked, Expect)."""
    server = quiet_fileserver
    data = seeded_bytes(21, 3 * MIB + 17)
    name, url, (user, password) = upload_target(server, command_key="6650a1b2c3d4e5f6a7b8c9d0.3")
    process = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--show-error", "--digest", "--user", f"{user}:{password}", "--upload-file", "-",
        "--output", "/dev/null", "--write-out", "%{http_code}", "--verbose", url,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(data), 30)
    assert out == b"201", err.decode(errors="replace")
    trace = err.decode(errors="replace")
    assert "Transfer-Encoding: chunked" in trace and "Expect: 100-continue" in trace
    record = await server.runtime.catalog.get(name)
    assert record is not None
    assert record.sha256 == hashlib.sha256(data).hexdigest()


async def test_fileserver_cpe_upload_cut_leaves_nothing_and_is_recorded(quiet_fileserver: RunningFileServer) -> None:
    server = quiet_fileserver
    name, url, credentials = upload_target(server)
    async with httpx.AsyncClient(timeout=30) as client:
        authorization = await digest_header(client, url, credentials)
    parts = urlsplit(server.downloads_url)
    _, writer = await asyncio.open_connection(parts.hostname, parts.port)
    # Past the first 8 MiB part, so S3 holds a multipart upload in progress when the CPE goes.
    writer.write((f"PUT {urlsplit(url).path} HTTP/1.1\r\nHost: acs\r\nAuthorization: {authorization}\r\n"
                  f"Content-Length: {12 * MIB}\r\n\r\n").encode() + seeded_bytes(4, 9 * MIB))
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()

    [record] = await upload_records(server, name, 1)
    assert (record["outcome"], record["reason"]) == ("failed", "client disconnected")
    assert 0 < record["bytes_received"] <= 9 * MIB
    assert await server.runtime.catalog.get(name) is None
    async with httpx.AsyncClient(timeout=30) as client:
        assert await listed_uploads(client, server) == []
    assert await bucket_keys(server) == []


async def test_fileserver_cpe_upload_stalled_client_gets_408(quiet_fileserver: RunningFileServer,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    server = quiet_fileserver
    monkeypatch.setattr(storage, "UPLOAD_IDLE_TIMEOUT", 0.5)
    name, url, credentials = upload_target(server)
    async with httpx.AsyncClient(timeout=30) as client:
        authorization = await digest_header(client, url, credentials)
    status, headers, _ = await raw_exchange(server, (
        f"PUT {urlsplit(url).path} HTTP/1.1\r\nHost: acs\r\nAuthorization: {authorization}\r\n"
        "Content-Length: 100\r\nExpect: 100-continue\r\n\r\n"), b"only ten b")
    assert status.startswith("HTTP/1.1 408")
    assert headers["connection"] == "close"
    [record] = await upload_records(server, name, 1)
    assert (record["outcome"], record["status"], record["bytes_received"]) == ("failed", 408, 10)
    assert await server.runtime.catalog.get(name) is None
