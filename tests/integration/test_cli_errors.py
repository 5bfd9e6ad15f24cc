"""A bad configuration ends a service with one clear line on stderr, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_acs(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ACS_")}
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "acs.cli", *args], env=clean, cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_unreachable_mongodb() -> None:
    result = run_acs("gateway", env={"ACS_MONGODB_URL": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200",
                                     "ACS_STARTUP_WAIT": "1", "ACS_GATEWAY_PORT": "0"})
    line = one_line_error(result)
    assert "MongoDB" in line and "ACS_MONGODB_URL" in line


def test_port_in_use() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_acs("gateway", env={"ACS_GATEWAY_PORT": str(port)})
    line = one_line_error(result)
    assert f"127.0.0.1:{port}" in line and "ACS_GATEWAY_PORT" in line


def test_invalid_setting() -> None:
    line = one_line_error(run_acs("gateway", env={"ACS_CPE_AUTH": "kerberos"}))
    assert "ACS_CPE_AUTH" in line


@pytest.mark.integration
def test_wrong_s3_key(s3_server: object, mongodb_url: str, kafka_bootstrap: str) -> None:
    from tests.conftest import S3Server

    assert isinstance(s3_server, S3Server)
    result = run_acs("fileserver", env={
        "ACS_S3_ENDPOINT": s3_server.endpoint, "ACS_S3_ACCESS_KEY": s3_server.access_key,
        "ACS_S3_SECRET_KEY": "not-the-secret", "ACS_MONGODB_URL": mongodb_url,
        "ACS_KAFKA_BOOTSTRAP": kafka_bootstrap, "ACS_STARTUP_WAIT": "2",
        "ACS_FILESERVER_PORT": "0", "ACS_DOWNLOADS_PORT": "0"})
    line = one_line_error(result)
    assert "S3" in line and "ACS_S3_SECRET_KEY" in line
