"""``python -m simulator.bench``: how many devices one simulator process sustains.

Starts the mini ACS (:mod:`simulator.miniacs`) in a child process, runs a fleet in this
process for a warm-up and a measured period, and reports the session rate, latency, the CPU
seconds each process spent per session, and the simulator's memory per device. The sustainable
fleet size at a given periodic interval is rate x interval: a fleet informing every 300 s at
300 sessions/s is 90,000 devices.

Both processes share the machine, so the figures are for "simulator + responder on one host";
the simulator's own CPU per session (``sim_cpu_ms_per_session``) is what bounds it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import subprocess
import sys
import time
from typing import Any

import psutil

from acs.infra import free_port

from .config import AuthMode, FleetSettings, HttpMode
from .fleet import Fleet

__all__ = ["main", "run_bench"]



def _wait_port(port: int, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"mini ACS did not listen on port {port}")


async def run_bench(devices: int, interval: int, warmup: float, measure: float, auth: str,
                    http_mode: str, max_sessions: int, acs_url: str, acs_pid: int | None) -> dict[str, Any]:
    me = psutil.Process()
    acs = psutil.Process(acs_pid) if acs_pid else None
    gc.collect()
    rss_before = me.memory_info().rss
    settings = FleetSettings(
        acs_url=acs_url, devices=devices, model="mixed", periodic_interval=interval,
        ramp=min(warmup, interval), auth=AuthMode(auth), acs_password="bench",
        http_mode=HttpMode(http_mode), max_sessions=max_sessions, seed=1, keep_records=1000,
    )
    fleet = Fleet(settings)
    await fleet.start()
    rss_created = me.memory_info().rss
    await asyncio.sleep(warmup)
    fleet.metrics.interval()  # drop the warm-up window
    m0 = fleet.metrics
    ok0, failed0, http0 = m0.sessions_ok, m0.sessions_failed, m0.http_requests
    cpu0 = sum(me.cpu_times()[:2])
    acs_cpu0 = sum(acs.cpu_times()[:2]) if acs else 0.0
    t0 = time.perf_counter()
    await asyncio.sleep(measure)
    elapsed = time.perf_counter() - t0
    window = fleet.metrics.interval(fleet.in_flight)
    cpu = sum(me.cpu_times()[:2]) - cpu0
    acs_cpu = (sum(acs.cpu_times()[:2]) - acs_cpu0) if acs else 0.0
    ok = m0.sessions_ok - ok0
    failed = m0.sessions_failed - failed0
    gc.collect()
    rss_after = me.memory_info().rss
    await fleet.stop()
    return {
        "devices": devices, "interval_s": interval, "auth": auth, "http_mode": http_mode,
        "offered_sessions_per_s": round(devices / interval, 1),
        "sessions_per_s": round(ok / elapsed, 1), "failed_per_s": round(failed / elapsed, 1),
        "http_requests_per_s": round((m0.http_requests - http0) / elapsed, 1),
        "p50_ms": window["p50_ms"], "p99_ms": window["p99_ms"],
        "sim_cpu_ms_per_session": round(1000 * cpu / ok, 3) if ok else None,
        "acs_cpu_ms_per_session": round(1000 * acs_cpu / ok, 3) if ok and acs else None,
        "sim_cpu_percent": round(100 * cpu / elapsed, 1),
        "rss_per_device_bytes": round((rss_after - rss_before) / devices),
        "rss_per_device_at_creation_bytes": round((rss_created - rss_before) / devices),
        "failure_reasons": dict(m0.failure_reasons),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=30, help="periodic interval; offered load = devices/interval")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--measure", type=float, default=30.0)
    parser.add_argument("--auth", choices=[m.value for m in AuthMode], default="digest")
    parser.add_argument("--http-mode", choices=[m.value for m in HttpMode], default="session")
    parser.add_argument("--max-sessions", type=int, default=500)
    parser.add_argument("--acs-url", default=None, help="an ACS to use instead of starting the mini ACS")
    args = parser.parse_args(argv)

    child = None
    acs_url = args.acs_url
    if acs_url is None:
        port = free_port()
        acs_auth = "none" if args.auth == "none" else args.auth
        child = subprocess.Popen([sys.executable, "-m", "simulator.miniacs", "--port", str(port),
                                  "--auth", acs_auth, "--password", "bench"])
        _wait_port(port)
        acs_url = f"http://127.0.0.1:{port}/"
    try:
        try:
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:
            runner = asyncio.Runner()
        with runner:
            result = runner.run(run_bench(args.devices, args.interval, args.warmup, args.measure, args.auth,
                                          args.http_mode, args.max_sessions, acs_url,
                                          child.pid if child else None))
    finally:
        if child is not None:
            child.terminate()
            child.wait(10)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
