"""S3 unreachable, refusing our key, or vanishing while we run: 503 and /readyz false, no crash."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from acs.infra import LocalS3
from services.common.settings import Settings
from services.fileserver.catalog import FileRecord, new_object_key
from services.fileserver.credentials import download_url, mint_download_credentials
from services.fileserver.recorder import DOWNLOADS
from tests.integration.test_fileserver_support import (
    ADMIN,
    DigestAuth,
    RunningFileServer,
    run_fileserver,
    upload,
)

pytestmark = pytest.mark.integration


async def assert_unavailable_but_alive(server: RunningFileServer, file_name: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        for base in (server.api_url, server.downloads_url):
            assert (await client.get(f"{base}/healthz")).status_code == 200
            ready = await client.get(f"{base}/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"ready": False, "failing": ["s3"]}
        auth = DigestAuth(*mint_download_credentials(server.settings, file_name, "00D09E-Box-9"))
        download = await client.get(download_url(server.settings, file_name), auth=auth)
        assert download.status_code == 503
        assert "retry-after" in download.headers
        refused = await upload(client, server, "new.bin", b"data")
        assert refused.status_code == 503
        # Listing needs only MongoDB, so operators still see their catalog.
        assert (await client.get(f"{server.api_url}/api/v1/files", headers=ADMIN)).status_code == 200

    records = server.runtime.mongo[server.settings.mongodb_database][DOWNLOADS]
    await server.runtime.recorder.drain()
    record = await records.find_one({"file_name": file_name})
    assert record is not None
    assert (record["outcome"], record["reason"], record["status"]) == ("failed", "storage unavailable", 503)


async def add_catalog_entry(server: RunningFileServer, name: str) -> None:
    """A file the catalog knows, as if uploaded before S3 went away."""
    await server.runtime.catalog.put(FileRecord(
        name=name, file_type="1 Firmware Upgrade Image", size=10, sha256="ab" * 32,
        content_type="application/octet-stream", uploaded_at=datetime.now(UTC), uploaded_by="test",
        object_key=new_object_key()))


async def test_fileserver_s3_unreachable(settings: Settings, mongodb_url: str) -> None:
    unreachable = settings.model_copy(update={"s3_endpoint": "127.0.0.1:1"})
    async with run_fileserver(unreachable, wait_for_bucket=False, with_kafka=False) as server:
        await add_catalog_entry(server, "fw.bin")
        await assert_unavailable_but_alive(server, "fw.bin")


async def test_fileserver_s3_refuses_our_key(settings: Settings, mongodb_url: str, s3_server: object) -> None:
    wrong_key = settings.model_copy(update={"s3_secret_key": "not-the-secret"})
    async with run_fileserver(wrong_key, wait_for_bucket=False, with_kafka=False) as server:
        await add_catalog_entry(server, "fw.bin")
        await assert_unavailable_but_alive(server, "fw.bin")


async def test_fileserver_s3_going_away_then_returning(settings: Settings, mongodb_url: str,
                                                       tmp_path: Path) -> None:
    s3 = LocalS3(tmp_path / "s3")
    await asyncio.to_thread(s3.start)
    try:
        own = settings.model_copy(update={"s3_endpoint": s3.endpoint, "s3_access_key": s3.access_key,
                                          "s3_secret_key": s3.secret_key})
        async with run_fileserver(own, with_kafka=False) as server, httpx.AsyncClient(timeout=30) as client:
            assert (await upload(client, server, "fw.bin", b"firmware")).status_code == 201
            await asyncio.to_thread(s3.stop)
            await assert_unavailable_but_alive(server, "fw.bin")

            # Same port again, same data folder: the service recovers without a restart.
            await asyncio.to_thread(s3.start)
            for _ in range(75):
                if (await client.get(f"{server.downloads_url}/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            auth = DigestAuth(*mint_download_credentials(server.settings, "fw.bin", "00D09E-Box-9"))
            again = await client.get(download_url(server.settings, "fw.bin"), auth=auth)
            assert (again.status_code, again.content) == (200, b"firmware")
    finally:
        await asyncio.to_thread(s3.stop)
