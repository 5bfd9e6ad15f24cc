"""Campaign benchmark: a firmware campaign over a million stored devices, the orchestrator's memory
and the progress query's latency.

    python benchmarks/campaigns.py [--devices 1000000] [--seconds 30] [--runs 200]

Uses the servers named by ACS_MONGODB_URL, ACS_KAFKA_BOOTSTRAP and ACS_S3_ENDPOINT (with
ACS_S3_ACCESS_KEY, ACS_S3_SECRET_KEY) when set; otherwise starts its own (acs.infra) in a
temporary folder. The inventory, the fileserver and the orchestrator run as their own processes
(`acs inventory`, `acs fileserver`, `acs orchestrator`), as in a deployment.

1. ``--devices`` devices are bulk-loaded into the inventory's collection (identity, product class
   and software version: what a campaign reads), a firmware image is uploaded.
2. A campaign over all of them is created through the API (its canary of 1,000, then the rest in
   one wave, the in-flight cap at 1,000). No CPE answers, so started devices end by the device
   timeout (2 s) and the campaign keeps materialising its second wave, lazily, from its stored
   cursor, while ``--seconds`` pass.
3. Meanwhile the orchestrator process's RSS is sampled (peak printed) and the progress query
   (GET /api/v1/campaigns/{id}/progress over HTTP) is timed ``--runs`` times (p50, p99 printed).
Targets: RSS under 300 MB, progress under 50 ms.
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
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

# Runnable as a script from anywhere: the repository's packages are imported from its root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil
from pymongo import AsyncMongoClient

from acs.infra import free_port
from services.inventory import store

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-admin-key-" + uuid.uuid4().hex
HEADERS = {"Authorization": f"Bearer {KEY}"}
VERSIONS = ["1.0.0", "1.1.0", "1.2.0"]


def servers(stack: ExitStack) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("ACS_MONGODB_URL", "ACS_KAFKA_BOOTSTRAP", "ACS_S3_ENDPOINT",
                                      "ACS_S3_ACCESS_KEY", "ACS_S3_SECRET_KEY") if os.environ.get(k)}
    from acs.infra import LocalKafka, LocalMongo, LocalS3

    root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="acs-bench-campaigns-")))
    if "ACS_MONGODB_URL" not in env:
        mongo = LocalMongo(root / "mongodb")
        mongo.start()
        stack.callback(mongo.stop)
        env["ACS_MONGODB_URL"] = mongo.url
    if "ACS_KAFKA_BOOTSTRAP" not in env:
        broker = LocalKafka(root / "kafka")
        broker.start()
        stack.callback(broker.stop)
        env["ACS_KAFKA_BOOTSTRAP"] = broker.bootstrap
    if "ACS_S3_ENDPOINT" not in env:
        s3 = LocalS3(root / "s3")
        s3.start()
        stack.callback(s3.stop)
        env.update(ACS_S3_ENDPOINT=s3.endpoint, ACS_S3_ACCESS_KEY=s3.access_key, ACS_S3_SECRET_KEY=s3.secret_key)
    return env


def device(i: int) -> dict[str, Any]:
    return {"_id": f"00259E-Box-{i:07d}", "oui": "00259E", "product_class": "Box", "serial_number": f"{i:07d}",
            "manufacturer": "Acme", "software_version": VERSIONS[i % len(VERSIONS)], "tags": [], "params": {}}


async def load(url: str, database: str, devices: int) -> None:
    client: AsyncMongoClient = AsyncMongoClient(url, tz_aware=True)
    try:
        db = client[database]
        started = time.perf_counter()
        for start in range(0, devices, 10_000):
            await db["devices"].insert_many([device(i) for i in range(start, min(devices, start + 10_000))],
                                            ordered=False)
        await store.ensure_indexes(db)
        print(f"inventory: {devices} devices loaded and indexed in {time.perf_counter() - started:.1f} s")
    finally:
        await client.close()


def start(name: str, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    out = (logs / f"{name}.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "acs.cli", name], cwd=REPO, env=env, stdout=out,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()
    return process


async def ready(url: str, process: subprocess.Popen[bytes], name: str) -> None:
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode}")
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.3)
    raise SystemExit(f"{name} not ready in 120 s")


def _pct(values: list[float], percentile: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percentile - 1] if len(values) > 1 else values[0]


async def run(args: argparse.Namespace, env: dict[str, str], logs: Path) -> None:
    name = "benchcmp" + uuid.uuid4().hex[:8]
    ports = {p: free_port() for p in ("INVENTORY", "FILESERVER", "DOWNLOADS", "ORCHESTRATOR")}
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACS_")}
    base.update(env)
    base.update({f"ACS_{p}_PORT": str(port) for p, port in ports.items()})
    base.update({"ACS_MONGODB_DATABASE": name, "ACS_KAFKA_TOPIC_PREFIX": f"{name}.", "ACS_S3_BUCKET": name,
                 "ACS_ADMIN_API_KEY": KEY, "ACS_SECRET_KEY": "bench-secret-" + uuid.uuid4().hex,
                 "ACS_INVENTORY_URL": f"http://127.0.0.1:{ports['INVENTORY']}",
                 "ACS_FILESERVER_URL": f"http://127.0.0.1:{ports['FILESERVER']}",
                 "ACS_FILES_PUBLIC_URL": f"http://127.0.0.1:{ports['DOWNLOADS']}",
                 "ACS_CAMPAIGN_TICK_SECONDS": "0.5", "ACS_LOG_LEVEL": "WARNING"})
    await load(env["ACS_MONGODB_URL"], name, args.devices)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for service in ("inventory", "fileserver", "orchestrator"):
            processes[service] = start(service, base, logs)
        for service in processes:
            await ready(f"http://127.0.0.1:{ports[service.upper()]}", processes[service], service)
        orchestrator = psutil.Process(processes["orchestrator"].pid)
        idle_rss = orchestrator.memory_info().rss
        async with httpx.AsyncClient(headers=HEADERS, timeout=120) as http:
            files = f"http://127.0.0.1:{ports['FILESERVER']}/api/v1/files/box-2.0.0.bin"
            uploaded = await http.put(files, content=os.urandom(100_000),
                                      params={"file_type": "1 Firmware Upgrade Image", "version": "2.0.0",
                                              "product_class": "Box"})
            assert uploaded.status_code == 201, uploaded.text
            api = f"http://127.0.0.1:{ports['ORCHESTRATOR']}/api/v1/campaigns"
            began = time.perf_counter()
            created = await http.post(api, json={
                "name": "a million boxes", "query": {"product_class": "Box"},
                "firmware": [{"product_class": "Box", "file_name": "box-2.0.0.bin"}],
                "canary": {"size": 1000}, "waves": [{"percent": 100}],
                "limits": {"max_in_flight": 1000, "connection_requests_per_second": 5000,
                           "device_timeout_seconds": 2}})
            assert created.status_code == 201, created.text
            cid = created.json()["id"]
            print(f"campaign created over {created.json()['total']} devices in "
                  f"{(time.perf_counter() - began) * 1000:.0f} ms (the selection counted by the inventory)")
            peak = orchestrator.memory_info().rss
            timings: list[float] = []
            deadline = time.monotonic() + args.seconds
            body: dict[str, Any] = {}
            while time.monotonic() < deadline or len(timings) < args.runs:
                t0 = time.perf_counter()
                response = await http.get(f"{api}/{cid}/progress")
                timings.append((time.perf_counter() - t0) * 1000)
                body = response.json()
                peak = max(peak, orchestrator.memory_info().rss)
                await asyncio.sleep(max(0.0, args.seconds / args.runs - timings[-1] / 1000))
        print(f"after {args.seconds:.0f} s: wave {body['wave']}, devices per state {body['counts']}")
        print(f"orchestrator RSS: {idle_rss / 2**20:.0f} MB idle, peak {peak / 2**20:.0f} MB while the campaign "
              f"ran (target < 300 MB)")
        print(f"progress query over HTTP ({len(timings)} runs): p50 {_pct(timings, 50):.1f} ms, "
              f"p99 {_pct(timings, 99):.1f} ms, max {max(timings):.1f} ms (target < 50 ms)")
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        client: AsyncMongoClient = AsyncMongoClient(env["ACS_MONGODB_URL"])
        await client.drop_database(name)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=200, help="timed progress queries")
    args = parser.parse_args()
    with ExitStack() as stack:
        env = servers(stack)
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="acs-bench-campaigns-logs-")))
        try:
            asyncio.run(run(args, env, logs))
        except BaseException:
            for log in logs.glob("*.log"):
                print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
