"""`acs up` keeps its ACS_SECRET_KEY in the data folder, as it keeps the admin key: download
credentials minted before a restart are still good after it (issue 15 item 5)."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from services.common.settings import Settings
from services.fileserver.credentials import download_url, mint_download_credentials
from tests.conftest import S3Server
from tests.e2e.conftest import local_acs_env
from tests.integration.test_fileserver_support import DigestAuth

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@contextmanager
def acs_up(env: dict[str, str], data_dir: Path) -> Iterator[None]:
    up = subprocess.Popen([sys.executable, "-m", "acs.cli", "up", "--external", "--data-dir", str(data_dir)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert up.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = up.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ctrl-C stops everything"):
            break
    try:
        assert any(line.startswith("ACS is up") for line in lines), "".join(lines)
        yield
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()


def test_download_credentials_minted_before_a_restart_work_after_it(
        tmp_path: Path, kafka_bootstrap: str, mongodb_url: str, s3_server: S3Server) -> None:
    name = "sk" + uuid.uuid4().hex[:8]
    env, ports = local_acs_env(name, kafka_bootstrap, mongodb_url, s3_server, partitions=2)  # no ACS_SECRET_KEY
    data_dir = tmp_path / "acs"
    api = f"http://127.0.0.1:{ports['API']}/api/v1"
    with acs_up(env, data_dir):
        key_file = data_dir / "secret-key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        secret = key_file.read_text().strip()
        admin = {"Authorization": f"Bearer {(data_dir / 'admin-api-key').read_text().strip()}"}
        uploaded = httpx.put(f"{api}/files/fw.bin", content=b"firmware" * 100, headers=admin,
                             params={"file_type": "1 Firmware Upgrade Image"}, timeout=30)
        assert uploaded.status_code == 201, uploaded.text
        # What the orchestrator mints for a Download, with the key this run uses.
        settings = Settings(secret_key=secret, files_public_url=env["ACS_FILES_PUBLIC_URL"])
        username, password = mint_download_credentials(settings, "fw.bin", "00D09E-Box-SK1")
        url = download_url(settings, "fw.bin")
        before = httpx.get(url, auth=DigestAuth(username, password), timeout=30)
        assert (before.status_code, before.content) == (200, b"firmware" * 100)
        wrong = mint_download_credentials(Settings(secret_key="another-secret-key-0123"), "fw.bin", "00D09E-Box-SK1")
        assert httpx.get(url, auth=DigestAuth(*wrong), timeout=30).status_code == 401
    with acs_up(env, data_dir):
        assert (data_dir / "secret-key").read_text().strip() == secret
        after = httpx.get(url, auth=DigestAuth(username, password), timeout=30)
        assert (after.status_code, after.content) == (200, b"firmware" * 100)
