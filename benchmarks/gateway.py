"""Gateway benchmark: completed CWMP sessions per second and session latency.

Runs, each in its own process: one `acs gateway` on the real broker and MongoDB (local servers
from acs.infra, or those in ACS_KAFKA_BOOTSTRAP/ACS_MONGODB_URL), an orchestrator stand-in that
answers every Inform with an empty plan, and, as the reference, a trivial responder (Inform ->
InformResponse, empty POST -> 204, no bus, no database). The same load generator drives both:
C concurrent CPEs on keep-alive connections, each running sessions back to back (Inform,
empty POST, 204) for D seconds. Prints sessions/s, p50/p99 latency and failures for each, and
the ratio. The machine is shared and small: compare the ratio, not absolute figures.

    python benchmarks/gateway.py [--concurrency 50] [--duration 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from acs.infra import free_port

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

INFORM = (
    '<?xml version="1.0" encoding="UTF-8"?><soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/"'
    ' xmlns:soap-enc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:cwmp="urn:dslforum-org:cwmp-1-0">'
    '<soap-env:Header><cwmp:ID soap-env:mustUnderstand="1">1</cwmp:ID></soap-env:Header><soap-env:Body>'
    "<cwmp:Inform><DeviceId><Manufacturer>Bench</Manufacturer><OUI>00D09E</OUI><ProductClass>IGD</ProductClass>"
    "<SerialNumber>{serial}</SerialNumber></DeviceId><Event soap-enc:arrayType=\"cwmp:EventStruct[1]\">"
    "<EventStruct><EventCode>2 PERIODIC</EventCode><CommandKey></CommandKey></EventStruct></Event>"
    "<MaxEnvelopes>1</MaxEnvelopes><CurrentTime>2026-11-24T10:00:00Z</CurrentTime><RetryCount>0</RetryCount>"
    '<ParameterList soap-enc:arrayType="cwmp:ParameterValueStruct[10]">{params}</ParameterList>'
    "</cwmp:Inform></soap-env:Body></soap-env:Envelope>"
)
PARAM = ('<ParameterValueStruct><Name>InternetGatewayDevice.X.Param{i}</Name>'
         '<Value xsi:type="xsd:string">value-{i}</Value></ParameterValueStruct>')



def inform_request(serial: str) -> bytes:
    body = INFORM.format(serial=serial, params="".join(PARAM.format(i=i) for i in range(10))).encode()
    return (b"POST / HTTP/1.1\r\nHost: acs\r\nContent-Type: text/xml; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def empty_post(cookie: str | None) -> bytes:
    extra = f"Cookie: {cookie}\r\n".encode() if cookie else b""
    return b"POST / HTTP/1.1\r\nHost: acs\r\n" + extra + b"Content-Length: 0\r\n\r\n"


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def one_cpe(port: int, index: int, stop_at: float, latencies: list[float], failures: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    inform = inform_request(f"BENCH{index:06d}")
    try:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                writer.write(inform)
                status, headers, _ = await read_response(reader)
                if status != 200:
                    failures.append(f"inform {status}")
                    await asyncio.sleep(0.05)
                    continue
                cookie = headers.get("set-cookie", "").split(";", 1)[0] or None
                writer.write(empty_post(cookie))
                status, _, _ = await read_response(reader)
                if status != 204:
                    failures.append(f"end {status}")
                    continue
                latencies.append(time.monotonic() - started)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                failures.append(type(exc).__name__)
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


async def drive(port: int, concurrency: int, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    failures: list[str] = []
    # Warm-up: connections, imports, JIT-less caches.
    await asyncio.gather(*(one_cpe(port, i, time.monotonic() + 1.0, [], []) for i in range(concurrency)))
    started = time.monotonic()
    await asyncio.gather(*(one_cpe(port, i, started + duration, latencies, failures) for i in range(concurrency)))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies) or [0.0]
    return {
        "sessions_per_second": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "failed": float(len(failures)),
        "completed": float(len(latencies)),
    }


def wait_http(port: int, path: str = "/healthz", within: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered on port {port}")


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def gateway_breakdown(port: int) -> dict[str, float]:
    """Mean Kafka acknowledgement and plan wait, from the gateway's own histograms."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        for metric, label in (("acs_gateway_publish_seconds", "publish"),
                              ("acs_gateway_plan_wait_seconds", "plan wait"),
                              ("acs_gateway_session_duration_seconds", "session")):
            if line.startswith(f"{metric}_sum "):
                sums[f"{label}_sum"] = float(line.split()[1])
            elif line.startswith(f"{metric}_count "):
                sums[f"{label}_count"] = float(line.split()[1])
    return {label: 1000 * sums[f"{label}_sum"] / max(sums[f"{label}_count"], 1)
            for label in ("publish", "plan wait", "session") if f"{label}_count" in sums}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=15.0)
    args = parser.parse_args()

    from acs.infra import LocalKafka, LocalMongo

    servers = []
    env = dict(os.environ)
    root = Path(tempfile.mkdtemp(prefix="acs-bench-"))
    if "ACS_KAFKA_BOOTSTRAP" not in env:
        kafka = LocalKafka(root / "kafka")
        kafka.start()
        servers.append(kafka)
        env["ACS_KAFKA_BOOTSTRAP"] = kafka.bootstrap
    if "ACS_MONGODB_URL" not in env:
        mongo = LocalMongo(root / "mongodb")
        mongo.start()
        servers.append(mongo)
        env["ACS_MONGODB_URL"] = mongo.url
    gateway_port, admin_port, trivial_port = free_port(), free_port(), free_port()
    env.update({"ACS_GATEWAY_PORT": str(gateway_port), "ACS_GATEWAY_ADMIN_PORT": str(admin_port),
                "ACS_CPE_AUTH": "none", "ACS_LOG_LEVEL": "WARNING",
                "ACS_SECRET_KEY": "benchmark-secret-key-0123456789", "ACS_MAX_SESSIONS": "100000"})
    children = [
        subprocess.Popen([sys.executable, "-m", "acs.cli", "gateway"], env=env, cwd=REPO),
        subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "empty_planner.py")], env=env, cwd=REPO),
        subprocess.Popen([sys.executable, "-m", "uvicorn", "acs.trivial:app", "--port",
                          str(trivial_port), "--log-level", "warning", "--no-access-log"], env=env, cwd=REPO),
    ]
    try:
        wait_http(gateway_port, "/readyz", 60)
        wait_http(trivial_port)
        time.sleep(3)  # the planner's consumer group join
        trivial_cpu = cpu_seconds([children[2].pid])
        reference = asyncio.run(drive(trivial_port, args.concurrency, args.duration))
        trivial_cpu = cpu_seconds([children[2].pid]) - trivial_cpu
        stack_pids = [children[0].pid, children[1].pid] + [s.process.pid for s in servers if s.process]
        before = {pid: cpu_seconds([pid]) for pid in stack_pids}
        gateway = asyncio.run(drive(gateway_port, args.concurrency, args.duration))
        used = {pid: cpu_seconds([pid]) - before[pid] for pid in stack_pids}
        breakdown = gateway_breakdown(admin_port)  # /metrics is on the admin port
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        for server in servers:
            server.stop()
    print(f"concurrency {args.concurrency}, {args.duration:.0f} s each, Inform with 10 parameters + empty POST")
    for name, figures in (("trivial responder", reference), ("gateway (Kafka acks=all, locks)", gateway)):
        print(f"{name:34s} {figures['sessions_per_second']:8.1f} sessions/s  p50 {figures['p50_ms']:6.1f} ms  "
              f"p99 {figures['p99_ms']:6.1f} ms  failed {figures['failed']:.0f}")
    sessions = gateway["completed"] + 1 + int(args.concurrency)  # + warm-up, roughly
    names = ["gateway", "planner stand-in"] + [s.name for s in servers]
    per_process = ", ".join(f"{name} {1000 * used[pid] / sessions:.2f} ms"
                            for name, pid in zip(names, stack_pids, strict=True))
    trivial_ms = 1000 * trivial_cpu / max(reference["completed"], 1)
    print(f"CPU per session: trivial responder {trivial_ms:.2f} ms; {per_process}")
    print("gateway time per session, mean: " + ", ".join(f"{k} {v:.1f} ms" for k, v in breakdown.items()))
    ratio = gateway["sessions_per_second"] / max(reference["sessions_per_second"], 1e-9)
    print(f"gateway / trivial responder: {ratio:.2f}")


if __name__ == "__main__":
    main()
