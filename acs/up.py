"""`acs up`: the whole ACS on one machine, for trials and development.

Starts real Kafka-protocol, MongoDB and S3 servers (acs.infra), creates the topics, then runs
each service as its own process (exactly as in a deployment: `acs gateway`, ...), waits until
every /readyz answers 200, prints where everything listens, and on Ctrl-C or SIGTERM stops the
services first and the servers last, so that no process is left behind.

Once up, it supervises: a service or server that exits (a crash, a kill, a SIGTERM not from us)
is started again after a backoff that doubles with each quick failure (1 s up to 30 s, as
Kubernetes does), and the output says so. The local broker keeps its log in memory (Tansu's S3
engine, tried on the SeaweedFS that runs here, lost records across a restart; see docs), so a
broker that starts again has lost every message it held: `acs up` restores the topics with
their layout and says loudly that the history is gone.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from acs.infra import InfraError, LocalServer, LocalStack
from acs.stunserver import StunServer
from acs.stunserver import start_for_local_acs as start_stun_for_local_acs
from acs.xmppserver import XmppServer, start_for_local_acs
from services.common.preflight import ConfigError, check_port_free
from services.common.settings import Settings

READY_TIMEOUT = 60.0
RESTART_BACKOFF_INITIAL = 1.0
RESTART_BACKOFF_MAX = 30.0
# A process that ran at least this long before it exited starts again after the initial delay.
STABLE_AFTER_SECONDS = 60.0


def restart_delay(quick_failures: int) -> float:
    """Seconds before starting again a process that failed ``quick_failures`` times in a row."""
    return min(RESTART_BACKOFF_MAX, RESTART_BACKOFF_INITIAL * 2 ** max(0, quick_failures - 1))


@dataclass
class Restarts:
    """When a supervised process started, how often it failed quickly, when it starts again."""

    started_at: float = 0.0
    quick_failures: int = 0
    due_at: float | None = None

    def exited(self, now: float) -> float:
        """Record an exit at ``now``; the delay before the next start."""
        self.quick_failures = 1 if now - self.started_at >= STABLE_AFTER_SECONDS else self.quick_failures + 1
        delay = restart_delay(self.quick_failures)
        self.due_at = now + delay
        return delay

    def started(self, now: float) -> None:
        self.started_at, self.due_at = now, None


def _admin_key(data_dir: Path) -> str:
    """The bootstrap admin API key: from the environment, else generated once and kept."""
    if key := os.environ.get("ACS_ADMIN_API_KEY"):
        return key
    path = data_dir / "admin-api-key"
    if path.exists():
        return path.read_text().strip()
    key = "acs_" + secrets.token_urlsafe(32)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _secret_key(data_dir: Path) -> str:
    """ACS_SECRET_KEY (signs download credentials, Digest nonces, session cookies): from the
    environment, else generated once and kept in the data folder, as the admin key is, so that
    credentials minted before a restart still work after it."""
    if key := os.environ.get("ACS_SECRET_KEY"):
        return key
    path = data_dir / "secret-key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(32)
    # Created 0600 from the start: the key is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key


def _service_ports(settings: Settings) -> dict[str, tuple[int, str]]:
    """Port each service answers /readyz on, and the setting that moves it."""
    return {
        "inventory": (settings.inventory_port, "ACS_INVENTORY_PORT"),
        "orchestrator": (settings.orchestrator_port, "ACS_ORCHESTRATOR_PORT"),
        "fileserver": (settings.fileserver_port, "ACS_FILESERVER_PORT"),
        "gateway": (settings.gateway_port, "ACS_GATEWAY_PORT"),
        "console": (settings.console_port, "ACS_CONSOLE_PORT"),
        "router": (settings.api_port, "ACS_API_PORT"),
    }


def _ready(port: int, host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class LocalAcs:
    """The ACS on this machine: the three servers (unless external), the topics, the services."""

    def __init__(self, root: Path, external: bool = False) -> None:
        self.root = root
        self.external = external
        self.stack: LocalStack | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, Restarts] = {}
        self.began = time.monotonic()
        self.settings = Settings()
        self.xmpp: XmppServer | None = None
        self.stun: StunServer | None = None
        self.say: Callable[[str], None] = lambda line: print(line, flush=True)

    def start(self, should_stop: Callable[[], bool] = lambda: False) -> Settings:
        """Start everything and wait until every /readyz answers 200; the services' settings."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        ports = _service_ports(self.settings)
        for port, setting in ports.values():
            check_port_free(self.settings.bind_host, port, setting)
        check_port_free(self.settings.bind_host, self.settings.downloads_port, "ACS_DOWNLOADS_PORT")
        if not self.external:
            self.stack = LocalStack(self.root / "servers")
            print("starting Kafka (Tansu), MongoDB and S3 (SeaweedFS) on 127.0.0.1 ...", flush=True)
            self.stack.start()
            os.environ.update(self.stack.environment())
            # XMPP connection requests (Annex K): a local prosody when installed (acs/xmppserver.py).
            self.xmpp = start_for_local_acs(self.root / "servers" / "prosody", os.environ)  # type: ignore[arg-type]
            # UDP connection requests (Annex G): a local coturn, STUN only, when installed (acs/stunserver.py).
            self.stun = start_stun_for_local_acs(self.root / "servers" / "coturn", os.environ)  # type: ignore[arg-type]
        # The children inherit this environment, so every process reads the same settings.
        os.environ["ACS_ADMIN_API_KEY"] = _admin_key(self.root)
        os.environ["ACS_SECRET_KEY"] = _secret_key(self.root)
        # Simulated CPEs of a local trial answer connection requests on this machine: loopback
        # is allowed here explicitly (a deployment refuses it by default).
        os.environ.setdefault("ACS_CONNECTION_REQUEST_ALLOWED_NETWORKS", LOCAL_CONNECTION_REQUEST_NETWORKS)
        self.settings = Settings()
        from services.bus.kafka import ensure_topics

        asyncio.run(ensure_topics(self.settings))
        for name in ports:
            self._spawn(name)
        deadline = time.monotonic() + READY_TIMEOUT
        pending = dict(ports)
        while pending and not should_stop():
            for name in list(pending):
                if self.children[name].poll() is not None:
                    raise ConfigError(f"{name} exited with code {self.children[name].returncode}: "
                                      f"{_last_line(self.root / 'logs' / f'{name}.log')}")
                if _ready(pending[name][0], self.settings.bind_host):
                    del pending[name]
            if time.monotonic() > deadline:
                raise ConfigError(f"not ready after {READY_TIMEOUT:.0f} s: {', '.join(pending)}; "
                                  f"see {self.root / 'logs'}")
            time.sleep(0.2)
        return self.settings

    def _spawn(self, name: str) -> None:
        with (self.root / "logs" / f"{name}.log").open("ab") as log:
            self.children[name] = subprocess.Popen(
                [sys.executable, "-m", "acs.cli", name], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        self.restarts.setdefault(name, Restarts()).started(time.monotonic())

    def supervise(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """One round: start again, after their backoff, the processes that exited."""
        now = time.monotonic()
        for name, child in list(self.children.items()):
            restarts = self.restarts[name]
            if child.poll() is None:
                continue
            if restarts.due_at is None:
                delay = restarts.exited(now)
                self.say(f"{name} exited with code {child.returncode} "
                         f"({_last_line(self.root / 'logs' / f'{name}.log')[:200]}); "
                         f"restarting it in {delay:.0f} s (attempt {restarts.quick_failures})")
            elif now >= restarts.due_at and not should_stop():
                self._spawn(name)
                self.say(f"{name} restarted (pid {self.children[name].pid})")
        if self.stack is not None:
            for server in self.stack.servers:
                self._supervise_server(server, now, should_stop)

    def _supervise_server(self, server: LocalServer, now: float, should_stop: Callable[[], bool]) -> None:
        process = server.process
        if process is None or process.poll() is None:
            return
        restarts = self.restarts.setdefault(f"server:{server.name}", Restarts(started_at=self.began))
        if restarts.due_at is None:
            delay = restarts.exited(now)
            self.say(f"{server.name} server exited with code {process.returncode} ({server.last_log_line()}); "
                     f"restarting it in {delay:.0f} s (attempt {restarts.quick_failures})")
            return
        if now < restarts.due_at or should_stop():
            return
        try:
            server.start()
        except InfraError as exc:
            delay = restarts.exited(time.monotonic())
            self.say(f"{server.name} server did not start again ({exc}); retrying in {delay:.0f} s")
            return
        restarts.started(time.monotonic())
        self.say(f"{server.name} server restarted on {server.address}")
        if self.stack is not None and server is self.stack.kafka:
            self._restore_topics()

    def _restore_topics(self) -> None:
        from services.bus.kafka import ensure_topics

        try:
            created = asyncio.run(ensure_topics(self.settings))
        except Exception as exc:  # noqa: BLE001 - said, and the services' /readyz stays 503
            self.say(f"!!! could not restore the Kafka topics ({exc!r}); run `acs topics`")
            return
        banner = "!" * 78
        self.say("\n".join([
            banner,
            "!!! Kafka (Tansu) started again WITHOUT ITS HISTORY: it keeps its log in memory, so",
            "!!! every message it held (unconsumed Informs, plans, device and file events) and",
            "!!! every consumer group offset is lost.",
            f"!!! Topics restored with their layout ({self.settings.kafka_partitions} partitions): "
            + (", ".join(created) if created else "none were missing"),
            banner]))

    def pids(self) -> dict[str, int]:
        """Every process of the ACS, servers included, by name."""
        found = {name: child.pid for name, child in self.children.items()}
        if self.stack is not None:
            found.update({server.name: server.process.pid for server in self.stack.servers if server.process})
        return found

    def stop(self) -> None:
        for restarts in self.restarts.values():
            restarts.due_at = None
        _stop_children(self.children)
        if self.xmpp is not None:
            self.xmpp.stop()
        if self.stun is not None:
            self.stun.stop()
        if self.stack is not None:
            self.stack.stop()


def run_up(data_dir: str = ".acs", external: bool = False) -> int:
    began = time.monotonic()
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    acs = LocalAcs(Path(data_dir).resolve(), external)
    try:
        settings = acs.start(should_stop=lambda: stopping)
        if not stopping:
            _print_summary(settings, acs.stack, acs.root, time.monotonic() - began)
        while not stopping:
            acs.supervise(should_stop=lambda: stopping)
            time.sleep(0.5)
        print("stopping ...", flush=True)
        return 0
    finally:
        acs.stop()
        if stopping:
            print("stopped", flush=True)


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    # The gateway first: CPE sessions end before the services they feed.
    for name in ("gateway", "router", "console", "orchestrator", "inventory", "fileserver"):
        child = children.get(name)
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 25
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1][:400] if lines else "(no output)"


def _print_summary(settings: Settings, stack: LocalStack | None, root: Path, took: float) -> None:
    host = settings.bind_host
    lines = [
        f"ACS is up (ready in {took:.1f} s):",
        f"  CWMP for CPEs (gateway)       http://{host}:{settings.gateway_port}/",
        f"  operator console              http://{host}:{settings.api_port}/",
        f"  gateway metrics               http://{host}:{settings.gateway_admin_port}/metrics",
        f"  northbound API (router)       http://{host}:{settings.api_port}/api/v1/",
        f"  API docs (all services)       http://{host}:{settings.api_port}/api/v1/docs",
        f"  CPE file downloads            {settings.files_public_url}/download/",
        f"  orchestrator                  http://{host}:{settings.orchestrator_port}/docs",
        f"  inventory                     http://{host}:{settings.inventory_port}/docs",
        f"  fileserver API                http://{host}:{settings.fileserver_port}/docs",
    ]
    if stack is not None:
        lines += [
            f"  Kafka (Tansu)                 {stack.kafka.bootstrap}",
            f"  MongoDB                       {stack.mongo.url}",
            f"  S3 (SeaweedFS)                http://{stack.s3.endpoint}",
        ]
    if settings.xmpp_server:
        lines.append(f"  XMPP (connection requests)    {settings.xmpp_server} as {settings.xmpp_jid}")
        if settings.xmpp_cpe_server:
            lines.append(f"  XMPP accounts for TR-181 CPEs {settings.xmpp_cpe_server} (set at bootstrap)")
    if settings.stun_server:
        lines.append(f"  STUN (UDP conn. requests)     {settings.stun_server}:{settings.stun_port}")
    lines += [
        f"  CPE credentials               {_cpe_credentials(settings)}",
        f"  connection requests to        {settings.connection_request_allowed_networks}"
        + (f" (not {settings.connection_request_refused_networks})"
           if settings.connection_request_refused_networks else ""),
        f"  simulated CPEs                {simulator_command(settings)}",
        f"  admin API key                 in {root / 'admin-api-key'}",
        f"  logs                          {root / 'logs'}",
        "Ctrl-C stops everything.",
    ]
    # Printed to the operator's own terminal only (never through logging): the shared
    # first-contact pair of a local trial stack, which a CPE or the simulator needs to connect.
    print("\n".join(lines), flush=True)


# Any address, loopback included (simulated CPEs on this machine); link-local and others stay refused.
LOCAL_CONNECTION_REQUEST_NETWORKS = "0.0.0.0/0,::/0,127.0.0.0/8,::1/128"


def _cpe_credentials(settings: Settings) -> str:
    if settings.cpe_auth == "none":
        return "none (ACS_CPE_AUTH=none)"
    if settings.cpe_credentials == "per-device":
        return f"{settings.cpe_auth}, per device (imported through the inventory API)"
    if settings.cpe_credentials == "provisioned":
        return (f"{settings.cpe_auth}, first contact: username {settings.cpe_username}, password "
                f"{settings.cpe_password}; each device gets its own at bootstrap")
    return f"{settings.cpe_auth}, shared: username {settings.cpe_username}, password {settings.cpe_password}"


def simulator_command(settings: Settings, devices: int = 10) -> str:
    """The `acs sim` command line that works against this stack as it runs."""
    # `acs` when it is on the PATH, else the one installed beside this Python (.venv/bin/acs).
    acs = "acs" if shutil.which("acs") else _shown(Path(sys.executable).with_name("acs"))
    host = "127.0.0.1" if settings.bind_host in {"0.0.0.0", "::", ""} else settings.bind_host
    words = ["--acs-url", f"http://{host}:{settings.gateway_port}/", "--devices", str(devices)]
    if settings.cpe_auth == "none":
        words += ["--auth", "none"]
    elif settings.cpe_credentials in ("shared", "provisioned"):
        # Provisioned: the first-contact pair; the simulator then uses what the bootstrap sets.
        words += ["--username", settings.cpe_username, "--password", settings.cpe_password]
    else:
        return " ".join([acs, "sim", *map(shlex.quote, words), "--username '{device_id}' --password ..."])
    return " ".join([acs, "sim", *map(shlex.quote, words)])


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
