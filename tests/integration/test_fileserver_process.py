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
from services.common.settings import Settings
from services.fileserver.credentials import download_url, mint_download_credentials
from tests.integration.test_fileserver_support import ADMIN, DigestAuth

pytestmark = pytest.mark.integration


async def test_fileserver_process_serves_both_ports_and_stops_on_sigterm(
        settings: Settings, mongodb_url: str, s3_server: object, kafka_bootstrap: str,
        tmp_path: Path) -> None:
    api_port, downloads_port = free_port(), free_port()
    settings = settings.model_copy(update={"files_public_url": f"http://127.0.0.1:{downloads_port}"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACS_")}
    env.update({f"ACS_{name.upper()}": str(getattr(settings, name)) for name in (
        "kafka_bootstrap", "kafka_topic_prefix", "mongodb_url", "mongodb_database", "s3_endpoint",
        "s3_access_key", "s3_secret_key", "s3_bucket", "secret_key", "admin_api_key", "files_public_url")})
    env.update(ACS_FILESERVER_PORT=str(api_port), ACS_DOWNLOADS_PORT=str(downloads_port))
    log_path = tmp_path / "fileserver.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "acs.cli", "fileserver", env=env,
                                                       stdout=log, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(150):
                assert process.returncode is None, log_path.read_text()
                try:
                    if (await client.get(f"http://127.0.0.1:{downloads_port}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            uploaded = await client.put(f"http://127.0.0.1:{api_port}/api/v1/files/fw.bin", content=b"image",
                                        params={"file_type": "1 Firmware Upgrade Image"}, headers=ADMIN)
            assert uploaded.status_code == 201, uploaded.text
            auth = DigestAuth(*mint_download_credentials(settings, "fw.bin", "00D09E-Box-1"))
            got = await client.get(download_url(settings, "fw.bin"), auth=auth)
            assert (got.status_code, got.content) == (200, b"image")
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await process.wait()
    assert code == 0, log_path.read_text()
    assert '"level": "error"' not in log_path.read_text()
