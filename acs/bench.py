"""`acs bench`: the whole ACS under a simulated fleet, against a trivial responder as the ceiling.

Two runs in one command, with the same simulated fleet (N devices, Inform every I seconds):
1. the reference: a trivial responder (Inform -> InformResponse, empty POST -> 204; no auth, no
   bus, no database), the most any CWMP server can do on this machine with this load generator;
2. the ACS: Kafka, MongoDB, S3 and the four services, CPEs authenticating with Digest, every
   Inform published with acks=all and stored by inventory, plans from the orchestrator.

Each run waits until every device has finished its first session (bootstrap), then measures a
window: completed and failed sessions per second, p50/p99 session latency, and the CPU time and
peak memory of every process. The simulator runs in this process; its CPU is reported too, so a
saturated load generator is visible.
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
from collections.abc import Iterable, Sequence
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


async def measure(label: str, acs_url: str, pids: dict[str, int], args: argparse.Namespace,
                  auth: str, username: str, password: str) -> RunResult:
    from simulator.config import FleetSettings
    from simulator.fleet import Fleet

    fleet = Fleet(FleetSettings(acs_url=acs_url, devices=args.devices, model="mixed", auth=auth,  # type: ignore[arg-type]
                                acs_username=username, acs_password=password, periodic_interval=args.interval,
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
        sampler = UsageSampler({**pids, "simulator (this process)": os.getpid()})
        fleet.metrics.interval()  # opens the measured window
        sampler.start()
        window_end = time.monotonic() + args.window
        while time.monotonic() < window_end:
            sampler.sample()
            await asyncio.sleep(0.5)
        window = fleet.metrics.interval(fleet.in_flight)
        usage = sampler.finish()
    finally:
        await fleet.stop()
    return RunResult(label, window["ok_per_s"], int(window["failed"]), window.get("p50_ms"), window.get("p99_ms"),
                     warmup, usage, steady)


def settled(records: Iterable[Any], devices: int, quiet_seconds: float = 10.0) -> bool:
    """Every device completed a session, and none of the last ``quiet_seconds`` had RPCs."""
    now = time.time()
    done: set[int] = set()
    for record in records:
        if record.ok:
            done.add(record.device)
        if record.end > now - quiet_seconds and record.rpcs:
            return False
    return len(done) >= devices


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
    acs = LocalAcs(root)
    try:
        settings = acs.start()
        return _run_async(measure("acs", f"http://127.0.0.1:{settings.gateway_port}/", acs.pids(), args,
                                  "digest", settings.cpe_username, settings.cpe_password))
    finally:
        acs.stop()
        if not args.data_dir:  # ours: up to a GiB of MongoDB and S3 data per run
            shutil.rmtree(root, ignore_errors=True)


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
                     f"p99 {p99} ms  failed {result.failed}  (warm-up {result.warmup_seconds:.0f} s)")
        if not result.settled:
            lines.append("      NOT STEADY: the warm-up limit ran out while devices were still being provisioned;"
                         " raise --warmup-limit")
        for name, usage in sorted(result.usage.items()):
            lines.append(f"      {name:26s} CPU {100 * usage.cpu_seconds / args.window:6.1f} %   "
                         f"peak RSS {usage.peak_rss / 2**20:7.1f} MiB")
    if len(results) == 2 and results[0].sessions_per_second:
        ratio = results[1].sessions_per_second / results[0].sessions_per_second
        lines.append(f"  ACS / trivial responder: {ratio:.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="acs bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=60, help="periodic Inform interval, seconds")
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds after the warm-up")
    parser.add_argument("--ramp", type=float, default=30.0, help="seconds over which the devices boot")
    parser.add_argument("--max-sessions", type=int, default=500, help="concurrent sessions of the simulator")
    parser.add_argument("--warmup-limit", type=float, default=1200.0, help="give up waiting for bootstraps")
    parser.add_argument("--data-dir", default=None, help="where the local servers keep data (temporary)")
    parser.add_argument("--skip-reference", action="store_true", help="measure the ACS only")
    args = parser.parse_args(argv)
    results = [] if args.skip_reference else [run_reference(args)]
    results.append(run_acs(args))
    print(report(args, results), flush=True)
    return 0 if all(r.failed == 0 and r.settled for r in results) else 1
