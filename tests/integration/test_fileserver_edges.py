"""The CPE-facing edges of the fileserver (issue 15): hostile Range numbers (downloads and the
operator API's file content), what the downloads port exposes, and minted credentials bound to
their device. Real fileserver, S3, MongoDB and Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from services.common.settings import Settings
from services.fileserver.credentials import download_url, mint_download_credentials
from tests.integration.test_fileserver_support import ADMIN, DigestAuth, RunningFileServer, run_fileserver, upload

pytestmark = pytest.mark.integration

HUGE = "9" * 5000


@pytest.fixture
async def fileserver(settings: Settings, mongodb_url: str, s3_server: object,
                     kafka_bootstrap: str) -> AsyncIterator[RunningFileServer]:
    async with run_fileserver(settings) as running:
        yield running


async def test_range_numbers_of_5000_digits_answer_416_or_the_clamped_range_never_500(
        fileserver: RunningFileServer) -> None:
    data = bytes(range(256)) * 40
    size = len(data)
    async with httpx.AsyncClient(timeout=30) as client:
        info = (await upload(client, fileserver, "huge-range.bin", data)).json()
        auth = DigestAuth(*mint_download_credentials(fileserver.settings, "huge-range.bin", "00D09E-Box-1"))
        content_url = f"{fileserver.api_url}/api/v1/files/huge-range.bin/content"
        cpe = {"auth": auth}
        operator = {"headers": ADMIN}
        for url, credentials in ((info["download_url"], cpe), (content_url, operator)):

            async def get(range_header: str, url: str = url,
                          credentials: dict[str, Any] = credentials) -> httpx.Response:
                headers = {**credentials.get("headers", {}), "Range": range_header}
                return await client.get(url, headers=headers, auth=credentials.get("auth"))

            beyond = await get(f"bytes={HUGE}-")
            assert beyond.status_code == 416, (url, beyond.text)
            assert beyond.headers["content-range"] == f"bytes */{size}"
            clamped = await get(f"bytes=10-{HUGE}")
            assert (clamped.status_code, clamped.content) == (206, data[10:])
            suffix = await get(f"bytes=-{HUGE}")
            assert (suffix.status_code, suffix.content) == (206, data)
            backwards = await get(f"bytes={HUGE}-3")
            assert (backwards.status_code, backwards.content) == (200, data)  # invalid: ignored


async def test_the_downloads_port_exposes_transfers_only_and_metrics_stay_on_the_api_port(
        fileserver: RunningFileServer) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json", "/api/v1/files"):
            assert (await client.get(fileserver.downloads_url + path)).status_code == 404, path
        assert (await client.get(fileserver.downloads_url + "/healthz")).status_code == 200
        metrics = await client.get(fileserver.api_url + "/metrics")
        assert metrics.status_code == 200 and "acs_file_downloads_active" in metrics.text


# --- download credentials are bound to their device (issue 15 item 10) -----------------------


def from_address(address: str) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (any 127.0.0.0/8 address is this host)."""
    return httpx.AsyncClient(timeout=30, transport=httpx.AsyncHTTPTransport(local_address=address))


async def test_device_b_cannot_use_the_credentials_minted_for_device_a(fileserver: RunningFileServer) -> None:
    settings = fileserver.settings
    devices = fileserver.runtime.mongo[settings.mongodb_database]["devices"]
    # Where the inventory last saw each device inform from.
    await devices.insert_many([{"_id": "00D09E-Box-A", "remote_address": "127.0.0.1"},
                               {"_id": "00D09E-Box-B", "remote_address": "127.0.0.2"}])
    async with httpx.AsyncClient(timeout=30) as client:
        await upload(client, fileserver, "bound.bin", b"firmware for A and B")
    url = download_url(settings, "bound.bin")
    for_a = DigestAuth(*mint_download_credentials(settings, "bound.bin", "00D09E-Box-A"))
    for_b = DigestAuth(*mint_download_credentials(settings, "bound.bin", "00D09E-Box-B"))
    async with from_address("127.0.0.1") as device_a, from_address("127.0.0.2") as device_b:
        assert (await device_a.get(url, auth=for_a)).status_code == 200
        assert (await device_b.get(url, auth=for_b)).status_code == 200
        stolen = await device_b.get(url, auth=for_a)
        assert stolen.status_code == 403 and "another device" in stolen.text
        # Claiming A's address in a header changes nothing: no trusted proxy is configured.
        spoofed = await device_b.get(url, auth=DigestAuth(*mint_download_credentials(
            settings, "bound.bin", "00D09E-Box-A")), headers={"X-Forwarded-For": "127.0.0.1"})
        assert spoofed.status_code == 403
        # A device whose first Inform the inventory has not stored yet is not refused.
        fresh = DigestAuth(*mint_download_credentials(settings, "bound.bin", "00D09E-Box-NEW"))
        assert (await device_b.get(url, auth=fresh)).status_code == 200
        # Uploads too: B cannot put a file under A's name with A's upload credentials.
        name = "00D09E-Box-A/ck-1"
        upload_auth = DigestAuth(*mint_download_credentials(settings, name, "00D09E-Box-A"))
        put_url = f"{fileserver.downloads_url}/upload/{quote(name, safe='')}"
        assert (await device_b.put(put_url, content=b"config", auth=upload_auth)).status_code == 403
        assert (await device_a.put(put_url, content=b"config", auth=upload_auth)).status_code == 201
