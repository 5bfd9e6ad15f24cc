"""Fault injection: a simulated fleet runs while MongoDB, the broker and each service are killed.

Starts `acs up` with its own local servers in a temporary folder, runs a fleet of simulated CPEs
(each informing every few seconds once bootstrapped) in this process, and, one target at a time,
kills a process of the stack with SIGKILL: mongod, the broker (Tansu), then every service. `acs up`
starts it again (that is what is measured too). For each phase it prints:

- sessions failed: sessions that began in the phase (from the kill to the next one) and failed;
- back after: seconds from the kill until `acs up` said the process runs again;
- recovery: seconds from then until the last failed session of the phase ended (0 when every
  session that ended after it was back succeeded);
- Informs lost: Informs acknowledged to a CPE (InformResponse) that never reached `cwmp.inbound`
  as seen by a consumer reading it throughout. With the in-memory broker of `acs up`, a broker
  kill loses what no consumer had read yet; the figure says how many of those were acknowledged.

At the end, every device's latest acknowledged Inform must be in the inventory (`last_inform`).

    python benchmarks/faults.py [--devices 50] [--interval 5] [--phase 30]

Not part of the test suite: it takes several minutes and most of a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psutil  # noqa: E402

from acs.infra import free_port  # noqa: E402
from services.bus.events import TOPIC_INBOUND, InformReceived, decode_inbound  # noqa: E402
from services.bus.kafka import make_consumer  # noqa: E402
from services.common.settings import Settings  # noqa: E402
from simulator.config import FleetSettings  # noqa: E402
from simulator.device import Device  # noqa: E402
from simulator.fleet import Fleet  # noqa: E402
from simulator.metrics import SessionRecord  # noqa: E402
from simulator.session import CpeSession  # noqa: E402

# What is killed, in order: (label, how to recognise its process, what `acs up` prints once it
# runs again).
TARGETS = [
    ("mongodb", lambda p: p.name() == "mongod", "mongodb server restarted"),
    ("kafka", lambda p: p.name() == "tansu", "kafka server restarted"),
    *[(name, (lambda n: lambda p: p.cmdline()[-2:] == ["acs.cli", n])(name), f"{name} restarted")
      for name in ("gateway", "orchestrator", "inventory", "fileserver", "router")],
]


@dataclass
class Session:
    device: str
    start: float
    end: float
    ok: bool
    acked: bool
    current_time: str


@dataclass
class Run:
    sessions: list[Session] = field(default_factory=list)
    on_bus: set[tuple[str, str]] = field(default_factory=set)

    def listener(self, device: Device, record: SessionRecord, session: CpeSession) -> None:
        inform = session.inform
        self.sessions.append(Session(device.id_string, record.start, record.end, record.ok,
                                     session.inform_acked, inform.current_time if inform else ""))


class Output:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append((time.time(), line))

    async def wait_for(self, text: str, within: float, after: float = 0.0) -> float:
        """Wall time of the first line containing ``text`` printed after ``after``."""
        async with asyncio.timeout(within):
            while True:
                for at, line in list(self.lines):
                    if at >= after and text in line:
                        return at
                await asyncio.sleep(0.1)


async def read_bus(settings: Settings, run: Run, stop: asyncio.Event) -> None:
    """Every Inform on cwmp.inbound, through broker restarts (a group consumer rejoins by itself)."""
    consumer = make_consumer(settings, TOPIC_INBOUND, group_id="faults-" + uuid.uuid4().hex[:6],
                             auto_offset_reset="earliest")
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    try:
                        event = decode_inbound(record.value)
                    except Exception:  # noqa: BLE001 - not ours to judge here
                        continue
                    if isinstance(event, InformReceived):
                        run.on_bus.add((event.device_id, event.current_time))
    finally:
        await consumer.stop()


async def inventory_has_latest(api_url: str, admin_key: str, run: Run) -> int:
    """How many devices' latest acknowledged Inform the inventory does not show."""
    latest: dict[str, float] = {}
    for s in run.sessions:
        if s.acked:
            latest[s.device] = max(latest.get(s.device, 0.0), s.start)
    behind = 0
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {admin_key}"},
                                 timeout=10) as api:
        for device, start in latest.items():
            answer = await api.get(f"/devices/{quote(device, safe='')}")
            value: Any = answer.json().get("last_inform") if answer.status_code == 200 else None
            if not value or datetime.fromisoformat(value).timestamp() < start - 1.0:
                behind += 1
    return behind


def launch(env: dict[str, str], data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "acs.cli", "up", "--data-dir", str(data_dir)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def main_async(args: argparse.Namespace) -> int:
    ports = {p: free_port() for p in ("GATEWAY", "API", "ORCHESTRATOR", "INVENTORY", "FILESERVER", "DOWNLOADS")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACS_")}
    env.update({f"ACS_{p}_PORT": str(port) for p, port in ports.items()})
    env.update({
        "ACS_ORCHESTRATOR_URL": f"http://127.0.0.1:{ports['ORCHESTRATOR']}",
        "ACS_INVENTORY_URL": f"http://127.0.0.1:{ports['INVENTORY']}",
        "ACS_FILESERVER_URL": f"http://127.0.0.1:{ports['FILESERVER']}",
        "ACS_FILES_PUBLIC_URL": f"http://127.0.0.1:{ports['DOWNLOADS']}",
        "ACS_PERIODIC_INFORM_INTERVAL": str(args.interval),
        "ACS_LOG_LEVEL": "WARNING",
    })
    data = Path(tempfile.mkdtemp(prefix="acs-faults-"))
    up = launch(env, data / "acs")
    output = Output(up)
    run = Run()
    stop_bus = asyncio.Event()
    try:
        await output.wait_for("Ctrl-C stops everything", 180)
        bootstrap = next(line.split()[-1] for _, line in output.lines if line.strip().startswith("Kafka (Tansu)"))
        settings = Settings(kafka_bootstrap=bootstrap)
        bus = asyncio.create_task(read_bus(settings, run, stop_bus))
        fleet = Fleet(FleetSettings(acs_url=f"http://127.0.0.1:{ports['GATEWAY']}/", devices=args.devices,
                                    serial_prefix="FI", acs_username="testcpe", acs_password="testcpe",
                                    periodic_interval=args.interval, ramp=5.0, retry_min_wait=1, seed=11))
        fleet.session_listeners.append(run.listener)
        await fleet.start()
        print(f"fleet of {args.devices} devices informing every {args.interval} s; warming up ...", flush=True)
        await asyncio.sleep(args.phase)
        phases: list[tuple[str, float, float]] = []  # label, killed at, back at
        for label, matches, back_text in TARGETS:
            victim = next(p for p in psutil.Process(up.pid).children(recursive=True) if matches(p))
            killed_at = time.time()
            victim.kill()
            back_at = await output.wait_for(back_text, 120, after=killed_at)
            phases.append((label, killed_at, back_at))
            print(f"killed {label} (pid {victim.pid}); back after {back_at - killed_at:.1f} s", flush=True)
            await asyncio.sleep(max(0.0, args.phase - (time.time() - killed_at)))
        await fleet.stop()
        await asyncio.sleep(5)  # the last Informs reach the bus consumer and the inventory
        stop_bus.set()
        await bus
        behind = await inventory_has_latest(f"http://127.0.0.1:{ports['API']}/api/v1",
                                            (data / "acs" / "admin-api-key").read_text().strip(), run)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(90)
        except subprocess.TimeoutExpired:
            up.kill()

    ends = [killed for _, killed, _ in phases[1:]] + [time.time() + 1e6]
    print()
    print("| phase | sessions | failed | back after | recovery | Informs acked | lost |")
    print("|---|---|---|---|---|---|---|")
    total_lost = 0
    worst_recovery = 0.0
    for (label, killed_at, back_at), until in zip(phases, ends, strict=True):
        mine = [s for s in run.sessions if killed_at <= s.start < until]
        failed = [s for s in mine if not s.ok]
        last_failure = max((s.end for s in failed), default=back_at)
        recovery = max(0.0, last_failure - back_at)
        acked = [s for s in mine if s.acked]
        lost = sum(1 for s in acked if (s.device, s.current_time) not in run.on_bus)
        total_lost += lost
        worst_recovery = max(worst_recovery, recovery)
        print(f"| {label} | {len(mine)} | {len(failed)} | {back_at - killed_at:.1f} s | {recovery:.1f} s "
              f"| {len(acked)} | {lost} |")
    print()
    print(f"acknowledged Informs lost: {total_lost}; worst recovery after the server was back: "
          f"{worst_recovery:.1f} s; devices whose latest acknowledged Inform the inventory lacks: {behind}")
    return 0 if total_lost == 0 and worst_recovery < 10 and behind == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--interval", type=int, default=5, help="periodic Inform interval set at bootstrap")
    parser.add_argument("--phase", type=float, default=30.0, help="seconds from one kill to the next")
    # The bus clients log every failed reconnection while a server is down: that is the point.
    logging.basicConfig(level=logging.CRITICAL)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
