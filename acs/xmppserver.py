"""A local XMPP server for XMPP connection requests (TR-069 Annex K): Debian's prosody.

``acs up`` (without ``--external``) and the tests start one with :func:`start_prosody`: its own
config, data and log files under a directory of their own, c2s on a free port of 127.0.0.1, one
virtual host. In-band registration is on so that the ACS and simulated CPEs can make their own
accounts on this local, loopback-only server; a production XMPP server is an external dependency
(docs/deploy.md) whose accounts the operator creates. Streams here are not encrypted (loopback
only): the local server allows SASL PLAIN without TLS.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PROSODY = "prosody"


class XmppServerError(RuntimeError):
    """prosody is missing or did not start."""


@dataclass
class XmppServer:
    host: str
    port: int
    domain: str
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def available() -> bool:
    return shutil.which(PROSODY) is not None


def _config(directory: Path, port: int, domain: str) -> str:
    return f"""-- Written by acs/xmppserver.py for the local ACS stack: loopback only, not for production.
run_as_root = true
daemonize = false
pidfile = "{directory}/prosody.pid"
data_path = "{directory}/data"
log = {{ info = "{directory}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", "disco", "ping", "register", "posix" }}
modules_disabled = {{ "s2s", "offline", "c2s_limits" }}
allow_registration = true
min_seconds_between_registrations = 0
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"
VirtualHost "{domain}"
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_prosody(directory: Path, *, port: int | None = None, domain: str = "acs.local",
                  wait: float = 20.0) -> XmppServer:
    """Start prosody in the foreground (a child process) and wait until it accepts connections."""
    if not available():
        raise XmppServerError("prosody is not installed (Debian: apt-get install prosody)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    port = port or _free_port()
    config = directory / "prosody.cfg.lua"
    config.write_text(_config(directory, port, domain))
    output = (directory / "prosody.out").open("ab")
    process = subprocess.Popen([PROSODY, "--config", str(config), "-F"], stdout=output, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    server = XmppServer("127.0.0.1", port, domain, process, directory)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise XmppServerError(f"prosody exited with {process.returncode}: "
                                  f"{(directory / 'prosody.out').read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise XmppServerError(f"prosody did not listen on 127.0.0.1:{port} within {wait:.0f} s")


def start_for_local_acs(root: Path, environ: dict[str, str]) -> XmppServer | None:
    """``acs up``: start prosody under ``root`` and point the orchestrator and bootstrap at it (``environ``), unless
    ACS_XMPP_SERVER names another server already or prosody is not installed (None: XMPP off)."""
    if environ.get("ACS_XMPP_SERVER") or not available():
        return None
    server = start_prosody(root)
    environ.update({"ACS_XMPP_SERVER": server.address, "ACS_XMPP_JID": f"acs@{server.domain}",
                    "ACS_XMPP_PASSWORD": environ.get("ACS_XMPP_PASSWORD") or secrets.token_urlsafe(18),
                    "ACS_XMPP_REGISTER": "true",
                    # Simulated CPEs run on this machine: bootstrap gives TR-181 ones an account here.
                    "ACS_XMPP_CPE_SERVER": environ.get("ACS_XMPP_CPE_SERVER") or server.address})
    return server
