"""A local STUN server for UDP connection requests (TR-069 Annex G): Debian's coturn.

``acs up`` (without ``--external``) and the tests start one with :func:`start_coturn`: STUN only
(``--stun-only``: no TURN relay), no authentication, no TLS/DTLS, no TCP listener, no CLI, UDP on a
free port of 127.0.0.1, its log and pid files under a directory of its own. A production STUN
server is an external dependency (docs/deploy.md) that the CPEs reach from behind their NAT.

Readiness is a real Binding request answered with the mapped address (cwmp/stun.py), not just a
bound port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cwmp import stun

TURNSERVER = "turnserver"


class StunServerError(RuntimeError):
    """coturn is missing or did not start."""


@dataclass
class StunServer:
    host: str
    port: int
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
    return shutil.which(TURNSERVER) is not None


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def binding(host: str, port: int, timeout: float = 0.5) -> tuple[str, int] | None:
    """One Binding request from a fresh socket: the mapped address, or None without an answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        tid = stun.new_transaction_id()
        try:
            sock.sendto(stun.build_binding_request(tid), (host, port))
            data, _ = sock.recvfrom(2048)
            return stun.mapped_address(stun.parse_message(data), tid)
        except (OSError, stun.StunError):
            return None


def command(directory: Path, host: str, port: int) -> list[str]:
    return [TURNSERVER, "-n", "--stun-only", "--no-auth", "--listening-ip", host, "--listening-port", str(port),
            "--no-tls", "--no-dtls", "--no-tcp", "--no-cli", "--no-rfc5780", "--no-software-attribute",
            "--userdb", str(directory / "turndb"), "--log-file", str(directory / "turnserver.log"),
            "--simple-log", "--no-stdout-log", "--pidfile", str(directory / "turnserver.pid")]


def start_coturn(directory: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 wait: float = 20.0) -> StunServer:
    """Start coturn in the foreground (a child process) and wait until it answers a Binding request."""
    if not available():
        raise StunServerError("coturn is not installed (Debian: apt-get install coturn)")
    directory.mkdir(parents=True, exist_ok=True)
    port = port or _free_udp_port(host)
    output = (directory / "turnserver.out").open("ab")
    process = subprocess.Popen(command(directory, host, port), stdout=output, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    server = StunServer(host, port, process, directory)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StunServerError(f"coturn exited with {process.returncode}: "
                                  f"{(directory / 'turnserver.out').read_text(errors='replace')[-2000:]}")
        if binding(host, port, timeout=0.2) is not None:
            return server
    server.stop()
    raise StunServerError(f"coturn did not answer a Binding request on {host}:{port} within {wait:.0f} s")


def start_for_local_acs(root: Path, environ: dict[str, str]) -> StunServer | None:
    """``acs up``: start coturn under ``root`` and point the orchestrator at it (``environ``), unless
    ACS_STUN_SERVER names another server already or coturn is not installed (None: STUN off)."""
    if environ.get("ACS_STUN_SERVER") or not available():
        return None
    server = start_coturn(root)
    environ.update({"ACS_STUN_SERVER": server.host, "ACS_STUN_PORT": str(server.port)})
    return server
