"""CPE downloads against the real fileserver, S3, MongoDB and Kafka: bytes, ranges, auth, cuts."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from cwmp.digest import basic_authorization
from cwmp.httputil import make_device_id
from services.bus.events import TOPIC_FILE_EVENTS, FileDownloadEvent
from services.bus.kafka import ensure_topics, make_consumer, make_producer
from services.common.settings import Settings
from services.fileserver.credentials import download_url, mint_download_credentials
from services.fileserver.downloads import ACTIVE
from services.fileserver.recorder import DOWNLOADS
from tests.integration.test_fileserver_support import (
    MIB,
    DigestAuth,
    RunningFileServer,
    run_fileserver,
    seeded_bytes,
    seeded_chunks,
    seeded_sha256,
    upload,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def fileserver(settings: Settings, mongodb_url: str, s3_server: object,
                     kafka_bootstrap: str) -> AsyncIterator[RunningFileServer]:
    async with run_fileserver(settings) as running:
        yield running


def credentials(server: RunningFileServer, name: str, device: str = "00D09E-Box-1",
                **kwargs: Any) -> tuple[str, str]:
    return mint_download_credentials(server.settings, name, device, **kwargs)


async def download_records(server: RunningFileServer, name: str, count: int) -> list[dict[str, Any]]:
    """The download records of ``name`` once ``count`` of them exist (they are written async)."""
    collection = server.runtime.mongo[server.settings.mongodb_database][DOWNLOADS]
    async with asyncio.timeout(10):
        while True:
            await server.runtime.recorder.drain()
            records = await collection.find({"file_name": name}).sort("finished_at", 1).to_list()
            if len(records) >= count:
                return records
            await asyncio.sleep(0.05)


async def file_events(settings: Settings, count: int) -> list[FileDownloadEvent]:
    consumer = make_consumer(settings, TOPIC_FILE_EVENTS, group_id=None)
    await consumer.start()
    events: list[FileDownloadEvent] = []
    try:
        async with asyncio.timeout(15):
            while len(events) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    events += [FileDownloadEvent.model_validate_json(r.value) for r in records]
    finally:
        await consumer.stop()
    return events


async def test_fileserver_50mb_upload_then_download_is_byte_identical(fileserver: RunningFileServer) -> None:
    size, seed, name = 50 * MIB + 12345, 7, "fw 1.2.3+build.bin"  # odd size, a name needing escapes
    expected_sha = seeded_sha256(seed, size)
    async with httpx.AsyncClient(timeout=60) as client:
        response = await upload(client, fileserver, "fw%201.2.3%2Bbuild.bin", seeded_chunks(seed, size),
                                oui="00d09e", product_class="Box", version="1.2.3")
        assert response.status_code == 201, response.text
        info = response.json()
        assert (info["name"], info["size"], info["sha256"]) == (name, size, expected_sha)
        assert (info["oui"], info["product_class"], info["version"]) == ("00D09E", "Box", "1.2.3")
        assert info["download_url"] == download_url(fileserver.settings, name)
        assert info["download_url"].endswith("/download/fw%201.2.3%2Bbuild.bin")

        auth = DigestAuth(*credentials(fileserver, name))
        digest = hashlib.sha256()
        received = 0
        async with client.stream("GET", info["download_url"], auth=auth) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-length"] == str(size)
            assert stream.headers["etag"] == f'"{expected_sha}"'
            assert stream.headers["accept-ranges"] == "bytes"
            assert stream.headers["last-modified"].endswith(" GMT")
            async for piece in stream.aiter_raw():
                digest.update(piece)
                received += len(piece)
    assert (received, digest.hexdigest()) == (size, expected_sha)

    [record] = await download_records(fileserver, name, 1)
    assert (record["outcome"], record["bytes_sent"]) == ("completed", size)
    assert record["device_id"] == "00D09E-Box-1"
    [event] = await file_events(fileserver.settings, 1)
    assert (event.outcome, event.file_name, event.bytes_sent, event.device_id) == \
        ("completed", name, size, "00D09E-Box-1")
    assert event.event_id == record["_id"]


async def test_fileserver_range_and_conditional_requests(fileserver: RunningFileServer) -> None:
    size, seed = 3 * MIB + 7, 11
    data = seeded_bytes(seed, size)
    async with httpx.AsyncClient(timeout=30) as client:
        info = (await upload(client, fileserver, "ranges.bin", data)).json()
        url, etag = info["download_url"], f'"{info["sha256"]}"'
        auth = DigestAuth(*credentials(fileserver, "ranges.bin"))

        async def get(headers: dict[str, str], method: str = "GET") -> httpx.Response:
            return await client.request(method, url, headers=headers, auth=auth)

        middle = await get({"Range": "bytes=1000-1999999"})
        assert middle.status_code == 206
        assert middle.headers["content-range"] == f"bytes 1000-1999999/{size}"
        assert middle.content == data[1000:2000000]

        tail = await get({"Range": "bytes=-100"})
        assert (tail.status_code, tail.content) == (206, data[-100:])
        resume = await get({"Range": f"bytes={size - 10}-", "If-Range": etag})
        assert (resume.status_code, resume.content) == (206, data[-10:])

        unsatisfiable = await get({"Range": f"bytes={size}-"})
        assert unsatisfiable.status_code == 416
        assert unsatisfiable.headers["content-range"] == f"bytes */{size}"

        # The CPE holds another version: it must get the whole new file, not a spliced range.
        stale = await get({"Range": "bytes=0-9", "If-Range": '"0000"'})
        assert (stale.status_code, len(stale.content)) == (200, size)
        assert (await get({"If-None-Match": etag})).status_code == 304

        head = await get({}, method="HEAD")
        assert head.status_code == 200
        assert (head.headers["content-length"], head.headers["etag"], head.content) == (str(size), etag, b"")

    records = await download_records(fileserver, "ranges.bin", 4)
    assert [(r["outcome"], r["bytes_sent"], r["range_request"]) for r in records] == [
        ("completed", 1999000, True), ("completed", 100, True), ("completed", 10, True),
        ("completed", size, False)]


async def test_fileserver_digest_right_wrong_expired_replayed_and_other_file(
        fileserver: RunningFileServer) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        await upload(client, fileserver, "a.cfg", b"config A", file_type="3 Vendor Configuration File")
        await upload(client, fileserver, "b.cfg", b"config B", file_type="3 Vendor Configuration File")
        url = download_url(fileserver.settings, "a.cfg")

        anonymous = await client.get(url)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Digest ")
        assert 'qop="auth"' in anonymous.headers["www-authenticate"]

        user, password = credentials(fileserver, "a.cfg")
        right = DigestAuth(user, password)
        ok = await client.get(url, auth=right)
        assert (ok.status_code, ok.content) == (200, b"config A")

        # Replaying the exact header (same nonce, same nc) is refused; the next nc is accepted.
        replay = await client.get(url, headers={"Authorization": right.sent[-1]})
        assert replay.status_code == 401
        fresh = right.client.authorization("GET", "/download/a.cfg")
        assert (await client.get(url, headers={"Authorization": fresh})).status_code == 200

        wrong_password = password[:-1] + ("A" if password[-1] != "A" else "B")
        wrong = await client.get(url, auth=DigestAuth(user, wrong_password))
        assert wrong.status_code == 401
        expired_user, expired_password = credentials(fileserver, "a.cfg", ttl=60, now=time.time() - 120)
        assert (await client.get(url, auth=DigestAuth(expired_user, expired_password))).status_code == 401
        # Valid credentials, but minted for b.cfg: not a key to a.cfg.
        assert (await client.get(url, auth=DigestAuth(*credentials(fileserver, "b.cfg")))).status_code == 401
        # Basic is refused by default, even with the right password.
        basic = await client.get(url, headers={"Authorization": basic_authorization(user, password)})
        assert basic.status_code == 401
        assert "Basic" not in basic.headers["www-authenticate"]

    # Only the two authenticated GETs are downloads; refusals are not.
    records = await download_records(fileserver, "a.cfg", 2)
    assert [(r["outcome"], r["bytes_sent"]) for r in records] == [("completed", 8), ("completed", 8)]


async def test_fileserver_basic_when_allowed(settings: Settings, mongodb_url: str, s3_server: object) -> None:
    async with run_fileserver(settings, with_kafka=False, allow_basic=True) as server, \
            httpx.AsyncClient(timeout=30) as client:
        await upload(client, server, "fw.bin", b"image")
        user, password = credentials(server, "fw.bin")
        url = download_url(server.settings, "fw.bin")
        challenge = await client.get(url)
        assert challenge.headers.get_list("www-authenticate")[1].startswith("Basic ")
        ok = await client.get(url, headers={"Authorization": basic_authorization(user, password)})
        assert (ok.status_code, ok.content) == (200, b"image")
        bad = await client.get(url, headers={"Authorization": basic_authorization(user, password + "x")})
        assert bad.status_code == 401


async def test_fileserver_credentials_survive_being_put_into_the_url_as_wget_and_curl_do(
        settings: Settings, mongodb_url: str, s3_server: object) -> None:
    """A ProductClass with a space: agents paste Username/Password into http://user:pass@host/...
    and the tool percent-decodes them. Minted credentials must come out of that unchanged."""
    device = make_device_id("00D09E", "easy cwmp", "SN 1")
    assert device == "00D09E-easy%20cwmp-SN%201"
    async with run_fileserver(settings, with_kafka=False, allow_basic=True) as server, \
            httpx.AsyncClient(timeout=30) as client:
        await upload(client, server, "fw.bin", b"image")
        user, password = credentials(server, "fw.bin", device=device)
        unreserved = re.compile(r"[A-Za-z0-9._~-]+")
        assert unreserved.fullmatch(user) and unreserved.fullmatch(password)
        pasted = download_url(server.settings, "fw.bin").replace("http://", f"http://{user}:{password}@", 1)
        parts = urlsplit(pasted)
        # What curl and wget read back out of the URL.
        assert (unquote(parts.username or ""), unquote(parts.password or "")) == (user, password)
        # curl --digest / wget: Digest with the decoded pair.
        digest = await client.get(pasted.replace(f"{user}:{password}@", ""),
                                  auth=DigestAuth(unquote(parts.username or ""), unquote(parts.password or "")))
        assert (digest.status_code, digest.content) == (200, b"image")
        # curl's default: Basic from the userinfo (httpx decodes it the same way).
        basic = await client.get(pasted)
        assert (basic.status_code, basic.content) == (200, b"image")
        records = await download_records(server, "fw.bin", 2)
    assert {r["device_id"] for r in records} == {device}


async def test_fileserver_download_cut_mid_stream_is_recorded_and_harmless(
        fileserver: RunningFileServer, caplog: pytest.LogCaptureFixture) -> None:
    size = 24 * MIB
    async with httpx.AsyncClient(timeout=30) as client:
        info = (await upload(client, fileserver, "cut.bin", seeded_chunks(3, size))).json()
        active_before = ACTIVE._value.get()
        caplog.set_level(logging.WARNING)

        # A CPE that reads a third of the image, then drops the connection.
        auth = DigestAuth(*credentials(fileserver, "cut.bin", device="00D09E-Box-cut"))
        async with client.stream("GET", info["download_url"], auth=auth) as stream:
            got = 0
            async for piece in stream.aiter_raw():
                got += len(piece)
                if got >= size // 3:
                    break
        [failed] = await download_records(fileserver, "cut.bin", 1)
        assert failed["outcome"] == "failed"
        assert failed["reason"] == "client disconnected"
        assert got <= failed["bytes_sent"] < size
        assert failed["device_id"] == "00D09E-Box-cut"
        assert ACTIVE._value.get() == active_before

        # Later downloads work, in full.
        again = await client.get(info["download_url"], auth=DigestAuth(*credentials(fileserver, "cut.bin")))
        assert again.status_code == 200
        assert hashlib.sha256(again.content).hexdigest() == info["sha256"]

    records = await download_records(fileserver, "cut.bin", 2)
    assert [r["outcome"] for r in records] == ["failed", "completed"]
    events = await file_events(fileserver.settings, 2)
    assert sorted((e.outcome, e.reason) for e in events) == [
        ("completed", ""), ("failed", "client disconnected")]
    # The cut is an ordinary event: nothing logged it as an error, no traceback anywhere.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_fileserver_unknown_file_with_valid_credentials_is_404_and_recorded(
        fileserver: RunningFileServer) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        url = download_url(fileserver.settings, "gone.bin")
        response = await client.get(url, auth=DigestAuth(*credentials(fileserver, "gone.bin")))
    assert response.status_code == 404
    [record] = await download_records(fileserver, "gone.bin", 1)
    assert (record["outcome"], record["reason"]) == ("failed", "no such file")


async def test_fileserver_events_kafka_missed_are_republished(
        settings: Settings, mongodb_url: str, s3_server: object, kafka_bootstrap: str) -> None:
    """The outbox: a download recorded while Kafka was unusable is published by maintenance later."""
    async with run_fileserver(settings, with_kafka=False) as server, httpx.AsyncClient(timeout=30) as client:
        await upload(client, server, "late.bin", b"bytes")
        got = await client.get(download_url(server.settings, "late.bin"),
                               auth=DigestAuth(*credentials(server, "late.bin")))
        assert got.status_code == 200
        [record] = await download_records(server, "late.bin", 1)
        assert record["published"] is False

        collection = server.runtime.mongo[server.settings.mongodb_database][DOWNLOADS]
        # Old enough that the outbox knows nobody is publishing it right now.
        backdated = datetime.now(UTC) - timedelta(minutes=1)
        await collection.update_one({"_id": record["_id"]}, {"$set": {"finished_at": backdated}})
        await ensure_topics(server.settings)  # Kafka is usable again
        producer = make_producer(server.settings)
        await producer.start()
        try:
            server.runtime.recorder.producer = producer
            await server.runtime.run_maintenance()
        finally:
            server.runtime.recorder.producer = None
            await producer.stop()
        [event] = await file_events(server.settings, 1)
        assert (event.event_id, event.outcome, event.bytes_sent) == (record["_id"], "completed", 5)
        assert (await collection.find_one({"_id": record["_id"]}))["published"] is True
