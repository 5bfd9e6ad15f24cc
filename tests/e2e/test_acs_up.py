"""`acs up` (what `make run` runs) brings up every process and Ctrl-C stops all of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from acs.infra import free_port

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e



def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_acs_up_starts_everything_ready_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("GATEWAY", "GATEWAY_ADMIN", "API", "ORCHESTRATOR", "INVENTORY",
                                           "FILESERVER", "DOWNLOADS", "CONSOLE")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACS_")}
    env.update({f"ACS_{name}_PORT": str(port) for name, port in ports.items()})
    env.update({
        "ACS_ORCHESTRATOR_URL": f"http://127.0.0.1:{ports['ORCHESTRATOR']}",
        "ACS_INVENTORY_URL": f"http://127.0.0.1:{ports['INVENTORY']}",
        "ACS_FILESERVER_URL": f"http://127.0.0.1:{ports['FILESERVER']}",
        "ACS_FILES_PUBLIC_URL": f"http://127.0.0.1:{ports['DOWNLOADS']}",
        "ACS_CONSOLE_URL": f"http://127.0.0.1:{ports['CONSOLE']}",
    })
    up = subprocess.Popen([sys.executable, "-m", "acs.cli", "up", "--data-dir", str(tmp_path / "acs")],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert up.stdout is not None
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        text = "".join(output)
        assert "ACS is up" in text, text
        took = float(text.split("ready in ", 1)[1].split(" s", 1)[0])
        assert took < 60, text
        assert "XMPP (connection requests)    127.0.0.1:" in text, text  # a local prosody (acs/xmppserver.py)
        assert "XMPP accounts for TR-181 CPEs 127.0.0.1:" in text, text  # ... which bootstrap gives CPEs
        assert "STUN (UDP conn. requests)     127.0.0.1:" in text, text  # a local coturn (acs/stunserver.py)
        for name in ("GATEWAY", "API", "ORCHESTRATOR", "INVENTORY", "FILESERVER", "CONSOLE"):
            assert status(f"http://127.0.0.1:{ports[name]}/readyz") == 200, name
        # The console's page at the entry point.
        assert status(f"http://127.0.0.1:{ports['API']}/") == 200
        key = (tmp_path / "acs" / "admin-api-key").read_text().strip()
        request = urllib.request.Request(f"http://127.0.0.1:{ports['API']}/api/v1/devices",
                                         headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        descendants = psutil.Process(up.pid).children(recursive=True)
        assert len(descendants) >= 9  # three servers, six service processes
        assert "turnserver" in {p.name() for p in descendants}  # ... and coturn, stopped with the rest below
    finally:
        up.send_signal(signal.SIGINT)
        remaining, _ = up.communicate(timeout=60)
    assert up.returncode == 0, remaining
    assert "stopped" in remaining
    still_running = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert still_running == []
