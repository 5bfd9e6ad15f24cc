"""The CPE-facing edges of the fileserver (issue 15): hostile Range numbers, on downloads and
on the operator API's file content. Real fileserver, S3, MongoDB and Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.common.settings import Settings
from services.fileserver.credentials import mint_download_credentials
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
