"""`acs up` restarts a service that crashed or was stopped, with backoff, and says so; Ctrl-C still
stops everything (`acs up --external` on the test run's real servers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from acs.up import Restarts, restart_delay
from tests.conftest import S3Server
from tests.e2e.conftest import local_acs_env

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_the_restart_delay_doubles_with_quick_failures_and_starts_over_after_a_stable_run() -> None:
    assert [restart_delay(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 4, 8, 16, 30, 30]
    restarts = Restarts()
    restarts.started(100.0)
    assert restarts.exited(101.0) == 1  # quick failures: 1, 2, 4 s ...
    restarts.started(102.0)
    assert restarts.exited(103.0) == 2
    restarts.started(105.0)
    assert restarts.exited(106.0) == 4
    restarts.started(110.0)
    assert restarts.exited(110.0 + 61) == 1  # it ran more than a minute: from the start again


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class Output:
    """The lines `acs up` prints, read as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, within: float) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not printed within {within} s:\n{''.join(self.lines)}")


def service_pid(up: subprocess.Popen[str], name: str) -> int:
    for child in psutil.Process(up.pid).children():
        if child.cmdline()[-2:] == ["acs.cli", name]:
            return child.pid
    raise AssertionError(f"no {name} process")


def test_a_killed_or_stopped_service_is_restarted_and_ctrl_c_still_stops_everything(
        tmp_path: Path, kafka_bootstrap: str, mongodb_url: str, s3_server: S3Server) -> None:
    name = "sup" + uuid.uuid4().hex[:8]
    env, ports = local_acs_env(name, kafka_bootstrap, mongodb_url, s3_server, partitions=2)
    up = subprocess.Popen([sys.executable, "-m", "acs.cli", "up", "--external", "--data-dir", str(tmp_path / "acs")],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(up)
    descendants: list[psutil.Process] = []
    try:
        output.wait_for("Ctrl-C stops everything", 90)
        gateway = f"http://127.0.0.1:{ports['GATEWAY']}/readyz"
        orchestrator = f"http://127.0.0.1:{ports['ORCHESTRATOR']}/readyz"

        killed = service_pid(up, "gateway")
        os.kill(killed, signal.SIGKILL)  # a crash
        said = output.wait_for("gateway exited with code -9", 10)
        assert "restarting it in 1 s" in said
        output.wait_for("gateway restarted", 10)
        assert service_pid(up, "gateway") != killed
        deadline = time.monotonic() + 60
        while status(gateway) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status(gateway) == 200

        os.kill(service_pid(up, "orchestrator"), signal.SIGTERM)  # stopped by someone else than us
        output.wait_for("orchestrator exited with code 0", 30)
        output.wait_for("orchestrator restarted", 10)
        deadline = time.monotonic() + 60
        while status(orchestrator) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status(orchestrator) == 200
        assert up.poll() is None  # the rest of the stack stayed up throughout
        assert status(f"http://127.0.0.1:{ports['INVENTORY']}/readyz") == 200
        descendants = psutil.Process(up.pid).children(recursive=True)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
    assert up.returncode == 0, "".join(output.lines)
    time.sleep(0.2)
    assert "stopped" in "".join(output.lines)
    still_running = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert still_running == []
