"""`acs bench`: the whole ACS under a simulated fleet, against a trivial responder as the ceiling.

Two runs in one command, with the same simulated fleet (N devices, Inform every I seconds):
1. the reference: a trivial responder (Inform -> InformResponse, empty POST -> 204; no auth, no
   bus, no database), the most any CWMP server can do on this machine with this load generator;
2. the ACS: Kafka, MongoDB, S3 and the four services, CPEs authenticating with Digest, every
   Inform published with acks=all and stored by inventory, plans from the orchestrator.

Each run waits until every device has finished its first session (bootstrap), then measures a
window: completed and failed sessions per second, p50/p99 session latency, and the CPU time and
peak memory of every process. The simulator runs in this process; its CPU is reported too, so a
saturated load generator is visible. CPU is also given per completed session, per process and in
sum for the ACS and its servers (``ACS CPU per session``, the simulator left out).

After the window, the ACS run checks that no Inform was lost: every Inform the simulator got an
InformResponse for during the window must be on ``cwmp.inbound`` (found by its session id, which
the session cookie carries) and applied by the inventory (its event id in the device's record).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from acs.infra import free_port


@dataclass
class ProcessUsage:
    cpu_seconds: float = 0.0
    peak_rss: int = 0
    _start_cpu: float | None = None


@dataclass
class RunResult:
    label: str
    sessions_per_second: float
    failed: int
    p50_ms: float | None
    p99_ms: float | None
    warmup_seconds: float
    usage: dict[str, ProcessUsage] = field(default_factory=dict)
    settled: bool = True  # False: the warm-up limit ran out before provisioning was over
    completed: int = 0  # sessions completed in the window
    rejected: int = 0  # refused with 503 + Retry-After (admission control), not counted as failed
    lost: InformCheck | None = None  # the ACS run only


@dataclass
class InformCheck:
    """Informs acknowledged to the simulator in the window, and those missing downstream."""

    acknowledged: int = 0
    unidentified: int = 0  # acknowledged without a session cookie to find them by
    missing_on_bus: list[str] = field(default_factory=list)  # session ids
    missing_in_inventory: list[str] = field(default_factory=list)  # session ids

    @property
    def ok(self) -> bool:
        return not (self.unidentified or self.missing_on_bus or self.missing_in_inventory)


def cpu_ms_per_session(usage: ProcessUsage, completed: int) -> float:
    return 1000.0 * usage.cpu_seconds / completed if completed else float("nan")


def acs_cpu_ms_per_session(result: RunResult) -> float:
    """The ACS and its servers, the simulator (this process) left out."""
    total = sum(u.cpu_seconds for name, u in result.usage.items() if not name.startswith("simulator"))
    return 1000.0 * total / result.completed if result.completed else float("nan")


class UsageSampler:
    """CPU time and peak RSS of named processes over a window, sampled every half second."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.usage = {name: ProcessUsage() for name in pids}

    def _cpu(self, process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        for name, process in self.processes.items():
            self.usage[name]._start_cpu = self._cpu(process)

    def sample(self) -> None:
        for name, process in self.processes.items():
            try:
                self.usage[name].peak_rss = max(self.usage[name].peak_rss, process.memory_info().rss)
            except psutil.Error:
                continue

    def finish(self) -> dict[str, ProcessUsage]:
        for name, process in self.processes.items():
            usage = self.usage[name]
            try:
                usage.cpu_seconds = self._cpu(process) - (usage._start_cpu or 0.0)
            except psutil.Error:
                usage.cpu_seconds = float("nan")
        return self.usage


Checker = Callable[[list[tuple[str, str]]], Awaitable[InformCheck]]


async def measure(label: str, acs_url: str, pids: dict[str, int], args: argparse.Namespace,
                  auth: str, username: str, password: str, *, check: Checker | None = None,
                  before_window: Callable[[], Awaitable[None]] | None = None) -> RunResult:
    from simulator.config import FleetSettings
    from simulator.fleet import Fleet

    fleet = Fleet(FleetSettings(acs_url=acs_url, devices=args.devices, model="mixed", auth=auth,  # type: ignore[arg-type]
                                acs_username=username, acs_password=password, periodic_interval=args.interval,
                                digest_keep_nonce=getattr(args, "keep_nonce", False),
                                ramp=args.ramp, max_sessions=args.max_sessions, seed=7,
                                serial_prefix=f"B{label[:3].upper()}", keep_records=args.devices * 4))
    started = time.monotonic()
    await fleet.start()
    try:
        # Warm-up: every device has finished a session, and for the last 10 s no session carried an
        # RPC (the bootstraps' provisioning and discovery are over; what is left is steady state).
        deadline = started + args.warmup_limit
        while not (steady := settled(fleet.metrics.records, args.devices)) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(2.0)
        warmup = time.monotonic() - started
        if before_window is not None:
            await before_window()
        sampler = UsageSampler({**pids, "simulator (this process)": os.getpid()})
        acked: list[tuple[str, str]] = []  # (device index, ACS session cookie) of each Inform taken

        opened = time.time()

        def on_session(_device: Any, record: Any, _session: Any) -> None:
            # Sessions begun in the window: their Informs come after the offsets marked.
            if record.inform_acked and record.start >= opened:
                acked.append((str(record.device), dict(record.cookies).get("acs_session", "")))

        fleet.session_listeners.append(on_session)
        fleet.metrics.interval()  # opens the measured window
        sampler.start()
        window_end = time.monotonic() + args.window
        while time.monotonic() < window_end:
            sampler.sample()
            await asyncio.sleep(0.5)
        window = fleet.metrics.interval(fleet.in_flight)
        usage = sampler.finish()
        fleet.session_listeners.remove(on_session)
    finally:
        await fleet.stop()
    lost = await check(acked) if check is not None else None
    rejected = int(window.get("rejected", 0))
    return RunResult(label, window["ok_per_s"], int(window["failed"]) - rejected, window.get("p50_ms"),
                     window.get("p99_ms"), warmup, usage, steady, int(window["ok"]), rejected, lost)


ROUTINE_EVENTS = ("2 PERIODIC",)


def settled(records: Iterable[Any], devices: int, quiet_seconds: float = 10.0) -> bool:
    """Every device has completed a routine session (only ``2 PERIODIC``, no RPC: its bootstrap
    and provisioning are over), and none of the last ``quiet_seconds`` had RPCs.

    "Every device finished some session" was not enough: sessions that waited out the plan timeout
    behind a bootstrap backlog also carry no RPC, and a window measured then is bootstrap traffic."""
    now = time.time()
    routine: set[int] = set()
    for record in records:
        if record.end > now - quiet_seconds and record.rpcs:
            return False
        if record.ok and not record.rpcs and tuple(record.events) == ROUTINE_EVENTS:
            routine.add(record.device)
    return len(routine) >= devices


def run_reference(args: argparse.Namespace) -> RunResult:
    port = free_port()
    responder = subprocess.Popen([sys.executable, "-m", "uvicorn", "acs.trivial:app", "--port", str(port),
                                  "--log-level", "warning", "--no-access-log"], stdin=subprocess.DEVNULL)
    try:
        _wait_http(port)
        return _run_async(measure("trivial", f"http://127.0.0.1:{port}/", {"trivial responder": responder.pid},
                                  args, "none", "", ""))
    finally:
        responder.terminate()
        responder.wait(10)


def run_acs(args: argparse.Namespace) -> RunResult:
    from acs.up import LocalAcs

    root = Path(args.data_dir or tempfile.mkdtemp(prefix="acs-bench-"))
    os.environ.setdefault("ACS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("ACS_CPE_PASSWORD", "bench-cpe-password")
    os.environ["ACS_PERIODIC_INFORM_INTERVAL"] = str(args.interval)
    os.environ.setdefault("ACS_MAX_SESSIONS", str(max(2000, args.max_sessions * 2)))
    os.environ["ACS_CPE_AUTH"] = args.auth
    for setting in ("INVENTORY", "ORCHESTRATOR", "FILESERVER", "GATEWAY", "GATEWAY_ADMIN", "CONSOLE", "API",
                    "DOWNLOADS"):
        # Free ports, so that a bench runs beside a local ACS (or another bench) on the machine.
        os.environ.setdefault(f"ACS_{setting}_PORT", str(free_port()))
    acs = LocalAcs(root)
    try:
        settings = acs.start()
        inbound = InboundWatch(settings)
        return _run_async(measure("acs", f"http://127.0.0.1:{settings.gateway_port}/", acs.pids(), args,
                                  args.auth, settings.cpe_username, settings.cpe_password,
                                  check=inbound.check, before_window=inbound.mark))
    finally:
        acs.stop()
        if not args.data_dir:  # ours: up to a GiB of MongoDB and S3 data per run
            shutil.rmtree(root, ignore_errors=True)


class InboundWatch:
    """Finds the Informs of the window on ``cwmp.inbound`` and in the inventory (see the docstring)."""

    def __init__(self, settings: Any, settle_seconds: float = 60.0) -> None:
        self.settings = settings
        self.settle_seconds = settle_seconds
        self.start_offsets: dict[Any, int] = {}

    def _consumer(self) -> Any:
        from services.bus.events import TOPIC_INBOUND
        from services.bus.kafka import make_consumer, topic_name

        return make_consumer(self.settings, group_id=None, fetch_max_wait_ms=200), \
            topic_name(self.settings, TOPIC_INBOUND)

    async def mark(self) -> None:
        """The end offsets of ``cwmp.inbound`` as the window opens."""
        from aiokafka import TopicPartition

        consumer, topic = self._consumer()
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            self.start_offsets = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()

    async def check(self, acked: list[tuple[str, str]]) -> InformCheck:
        result = InformCheck(acknowledged=len(acked))
        wanted = set()
        for _device, cookie in acked:
            if cookie:
                wanted.add(cookie.split(".", 1)[0])
            else:
                result.unidentified += 1
        found = await self._informs_on_bus(wanted)  # session id -> (device id, event id)
        result.missing_on_bus = sorted(wanted - found.keys())
        result.missing_in_inventory = await self._missing_in_inventory(found)
        return result

    async def _informs_on_bus(self, wanted: set[str]) -> dict[str, tuple[str, str]]:
        import json

        consumer, _topic = self._consumer()
        await consumer.start()
        found: dict[str, tuple[str, str]] = {}
        try:
            consumer.assign(list(self.start_offsets))
            for partition, offset in self.start_offsets.items():
                consumer.seek(partition, offset)
            ends = await consumer.end_offsets(list(self.start_offsets))
            positions = dict(self.start_offsets)
            deadline = time.monotonic() + self.settle_seconds
            while any(positions[p] < ends[p] for p in positions) and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for partition, records in batch.items():
                    for record in records:
                        positions[partition] = record.offset + 1
                        if b'"inform"' not in record.value:
                            continue
                        message = json.loads(record.value)
                        if message.get("type") == "inform" and message.get("session_id") in wanted:
                            found[message["session_id"]] = (message["device_id"], message["event_id"])
        finally:
            await consumer.stop()
        return found

    async def _missing_in_inventory(self, found: dict[str, tuple[str, str]]) -> list[str]:
        """Sessions whose Inform the inventory has not applied, once it had time to catch up."""
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.settings.mongodb_url)
        pending = dict(found)
        try:
            devices = client[self.settings.mongodb_database]["devices"]
            deadline = time.monotonic() + self.settle_seconds
            while pending and time.monotonic() < deadline:
                ids = sorted({device_id for device_id, _event in pending.values()})
                applied: set[str] = set()
                for start in range(0, len(ids), 1000):
                    async for document in devices.find({"_id": {"$in": ids[start:start + 1000]}}, {"applied": 1}):
                        applied.update(document.get("applied") or [])
                pending = {s: (d, e) for s, (d, e) in pending.items() if e not in applied}
                if pending:
                    await asyncio.sleep(2.0)
        finally:
            await client.close()
        return sorted(pending)


def _run_async(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _wait_http(port: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def report(args: argparse.Namespace, results: list[RunResult]) -> str:
    lines = [f"acs bench: {args.devices} devices, Inform every {args.interval} s "
             f"(offered {args.devices / args.interval:.0f} sessions/s), window {args.window:.0f} s"]
    for result in results:
        p50 = f"{result.p50_ms:.1f}" if result.p50_ms is not None else "-"
        p99 = f"{result.p99_ms:.1f}" if result.p99_ms is not None else "-"
        lines.append(f"  {result.label:8s} {result.sessions_per_second:8.1f} sessions/s  p50 {p50} ms  "
                     f"p99 {p99} ms  failed {result.failed}  refused (503) {result.rejected}  "
                     f"(warm-up {result.warmup_seconds:.0f} s)")
        if not result.settled:
            lines.append("      NOT STEADY: the warm-up limit ran out while devices were still being provisioned;"
                         " raise --warmup-limit")
        for name, usage in sorted(result.usage.items()):
            lines.append(f"      {name:26s} CPU {100 * usage.cpu_seconds / args.window:6.1f} %   "
                         f"{cpu_ms_per_session(usage, result.completed):7.3f} ms/session   "
                         f"peak RSS {usage.peak_rss / 2**20:7.1f} MiB")
        if result.label == "acs":
            lines.append(f"  ACS CPU per session: {acs_cpu_ms_per_session(result):.2f} ms "
                         f"({result.completed} sessions completed in the window"
                         f", auth {getattr(args, 'auth', 'digest')})")
        if result.lost is not None:
            lost = result.lost
            verdict = "none lost" if lost.ok else "LOST"
            lines.append(f"  Informs acknowledged in the window: {lost.acknowledged}, {verdict} "
                         f"(missing on the bus {len(lost.missing_on_bus)}, not in the inventory "
                         f"{len(lost.missing_in_inventory)}, without a session cookie {lost.unidentified})")
            for session_id in (lost.missing_on_bus + lost.missing_in_inventory)[:5]:
                lines.append(f"      e.g. session {session_id}")
    if len(results) == 2 and results[0].sessions_per_second:
        ratio = results[1].sessions_per_second / results[0].sessions_per_second
        lines.append(f"  ACS / trivial responder: {ratio:.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="acs bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=60, help="periodic Inform interval, seconds")
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds after the warm-up")
    parser.add_argument("--ramp", type=float, default=None,
                        help="seconds over which the devices boot (default: devices / 10, at least 30: "
                             "bootstraps at 10 per second, which this machine serves, instead of a flood)")
    parser.add_argument("--max-sessions", type=int, default=500, help="concurrent sessions of the simulator")
    parser.add_argument("--warmup-limit", type=float, default=1200.0, help="give up waiting for bootstraps")
    parser.add_argument("--data-dir", default=None, help="where the local servers keep data (temporary)")
    parser.add_argument("--skip-reference", action="store_true", help="measure the ACS only")
    parser.add_argument("--auth", choices=["digest", "none"], default="digest", help="CPE authentication")
    parser.add_argument("--keep-nonce", action="store_true",
                        help="the simulated CPEs keep their Digest nonce across sessions (no 401 leg)")
    args = parser.parse_args(argv)
    if args.ramp is None:
        args.ramp = max(30.0, args.devices / 10)
    results = [] if args.skip_reference else [run_reference(args)]
    results.append(run_acs(args))
    print(report(args, results), flush=True)
    return 0 if all(r.failed == 0 and r.settled and (r.lost is None or r.lost.ok) for r in results) else 1
