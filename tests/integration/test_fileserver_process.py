"""`acs fileserver` as deployed: its own process, preflight, both ports, clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from acs.infra import free_port
from services.bus.kafka import ensure_topics
from services.common.settings import Settings
from services.fileserver.credentials import download_url, mint_download_credentials
from tests.integration.test_fileserver_support import ADMIN, DigestAuth

pytestmark = pytest.mark.integration


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACS_")}
    env.update({f"ACS_{name.upper()}": str(getattr(settings, name)) for name in (
        "kafka_bootstrap", "kafka_topic_prefix", "mongodb_url", "mongodb_database", "s3_endpoint",
        "s3_access_key", "s3_secret_key", "s3_bucket", "secret_key", "admin_api_key", "files_public_url")})
    env.update(extra)
    return env


def read_log(path: Path) -> str:
    """The child's log, for assertion messages (small, and read only when looked at)."""
    return path.read_text(errors="replace")


async def start(env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("wb") as log:
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "acs.cli", "fileserver", env=env,
                                                    stdout=log, stderr=subprocess.STDOUT)


async def wait_listening(client: httpx.AsyncClient, url: str, process: asyncio.subprocess.Process,
                         log_path: Path) -> httpx.Response:
    for _ in range(150):
        assert process.returncode is None, read_log(log_path)
        try:
            return await client.get(url)
        except httpx.TransportError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing answered on {url}")


async def stop(process: asyncio.subprocess.Process, log_path: Path) -> None:
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        code = await process.wait()
    assert code == 0, read_log(log_path)
    assert '"level": "error"' not in read_log(log_path)


async def test_fileserver_process_serves_both_ports_and_stops_on_sigterm(
        settings: Settings, mongodb_url: str, s3_server: object, kafka_bootstrap: str,
        tmp_path: Path) -> None:
    api_port, downloads_port = free_port(), free_port()
    settings = settings.model_copy(update={"files_public_url": f"http://127.0.0.1:{downloads_port}"})
    log_path = tmp_path / "fileserver.log"
    await ensure_topics(settings)  # as `acs topics` does: services create none
    process = await start(process_env(settings, ACS_FILESERVER_PORT=str(api_port),
                                      ACS_DOWNLOADS_PORT=str(downloads_port)), log_path)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            ready = await wait_listening(client, f"{settings.files_public_url}/readyz", process, log_path)
            assert ready.status_code == 200, ready.text
            uploaded = await client.put(f"http://127.0.0.1:{api_port}/api/v1/files/fw.bin", content=b"image",
                                        params={"file_type": "1 Firmware Upgrade Image"}, headers=ADMIN)
            assert uploaded.status_code == 201, uploaded.text
            auth = DigestAuth(*mint_download_credentials(settings, "fw.bin", "00D09E-Box-1"))
            got = await client.get(download_url(settings, "fw.bin"), auth=auth)
            assert (got.status_code, got.content) == (200, b"image")
    finally:
        await stop(process, log_path)


async def test_fileserver_process_starts_unready_while_s3_is_unreachable(
        settings: Settings, mongodb_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    api_port, downloads_port = free_port(), free_port()
    settings = settings.model_copy(update={"s3_endpoint": "127.0.0.1:1"})
    log_path = tmp_path / "fileserver.log"
    await ensure_topics(settings)  # as `acs topics` does: services create none
    process = await start(process_env(settings, ACS_FILESERVER_PORT=str(api_port), ACS_STARTUP_WAIT="1",
                                      ACS_DOWNLOADS_PORT=str(downloads_port)), log_path)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            ready = await wait_listening(client, f"http://127.0.0.1:{api_port}/readyz", process, log_path)
            assert (ready.status_code, ready.json()) == (503, {"ready": False, "failing": ["s3"]})
            assert (await client.get(f"http://127.0.0.1:{downloads_port}/healthz")).status_code == 200
    finally:
        await stop(process, log_path)
    assert "starting anyway" in read_log(log_path)
