"""Inventory benchmark: inbound messages absorbed per second, and query latency on a large fleet.

    python benchmarks/inventory.py [--fleet 100000] [--inform-devices 2000] [--rounds 5]

Uses the servers named by ACS_MONGODB_URL and ACS_KAFKA_BOOTSTRAP when set; otherwise starts its
own (acs.infra: mongod and the Tansu broker from their PyPI packages) in a temporary folder.

1. Absorption: ``--inform-devices`` devices register (warm-up), then each sends ``--rounds``
   periodic Informs carrying 10 parameters whose values all changed. All Informs are queued on
   cwmp.inbound first; the figure is Informs applied to MongoDB, with their device.events
   published and offsets committed, per second of consumer time (first batch to last commit).
2. Queries: ``--fleet`` devices (about 25 parameters each) are bulk-loaded, then the common
   queries run through the API app in-process (query compilation, MongoDB, JSON rendering; no
   network), and their latency percentiles are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Runnable as a script from anywhere: the repository's packages are imported from its root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from aiokafka import ConsumerRecord, TopicPartition
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.bus.events import (
    TOPIC_DEVICE_EVENTS,
    TOPIC_INBOUND,
    DeviceIdentity,
    InformEventCode,
    InformReceived,
    ParameterValue,
    encode,
)
from services.bus.kafka import ensure_topics, make_producer, topic_name
from services.common.settings import Settings
from services.inventory import store
from services.inventory.app import create_app
from services.inventory.consumer import InventoryConsumer
from services.inventory.params import encode_name

CHANGING = [f"Device.Hosts.Host.{i}.X_Stats.BytesSent" for i in range(1, 9)] + [
    "Device.DeviceInfo.UpTime", "Device.DeviceInfo.MemoryStatus.Free"]
VERSIONS = ["1.0.0", "1.1.0", "1.2.0", "2.0.0", "2.0.1"]


def servers(stack: ExitStack) -> tuple[str, str]:
    mongo_url = os.environ.get("ACS_MONGODB_URL")
    kafka = os.environ.get("ACS_KAFKA_BOOTSTRAP")
    if mongo_url and kafka:
        return mongo_url, kafka
    from acs.infra import LocalKafka, LocalMongo

    root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="acs-bench-inventory-")))
    if not mongo_url:
        mongo = LocalMongo(root / "mongodb")
        mongo.start()
        stack.callback(mongo.stop)
        mongo_url = mongo.url
    if not kafka:
        broker = LocalKafka(root / "kafka")
        broker.start()
        stack.callback(broker.stop)
        kafka = broker.bootstrap
    return mongo_url, kafka


def inform(serial: int, round_: int, at: datetime) -> InformReceived:
    parameters = [ParameterValue(name=name, value=str(round_ * 1000 + serial + i), type="xsd:unsignedInt")
                  for i, name in enumerate(CHANGING)]
    parameters += [ParameterValue(name="Device.DeviceInfo.SoftwareVersion", value="1.0.0"),
                   ParameterValue(name="Device.ManagementServer.ConnectionRequestURL",
                                  value=f"http://10.{serial // 65536}.{serial // 256 % 256}.{serial % 256}:7547/")]
    return InformReceived(
        device_id=f"00259E-Bench-{serial:06d}", session_id=uuid.uuid4().hex, reply_to="r:0", gateway_id="bench",
        time=at, device=DeviceIdentity(manufacturer="Acme", oui="00259E", product_class="Bench",
                                       serial_number=f"{serial:06d}"),
        events=[InformEventCode(code="1 BOOT" if round_ == 0 else "2 PERIODIC")], parameters=parameters)


class TimedConsumer(InventoryConsumer):
    """Records when the first batch arrived and how many messages were fully handled."""

    first_batch: float | None = None
    handled = 0
    done_at = 0.0

    async def handle(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        if self.first_batch is None:
            self.first_batch = time.perf_counter()
        await super().handle(batch)
        self.handled += sum(len(records) for records in batch.values())
        self.done_at = time.perf_counter()


async def absorb(settings: Settings, db: AsyncDatabase, devices: int, rounds: int) -> None:
    await ensure_topics(settings, [TOPIC_INBOUND, TOPIC_DEVICE_EVENTS])
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    consumer = TimedConsumer(settings, db, producer, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    try:
        start = datetime.now(UTC) - timedelta(hours=1)

        async def produce(first_round: int, last_round: int) -> int:
            sent = 0
            topic = topic_name(settings, TOPIC_INBOUND)
            for round_ in range(first_round, last_round + 1):
                for serial in range(devices):
                    message = inform(serial, round_, start + timedelta(minutes=round_))
                    await producer.send(topic, encode(message), key=message.device_id.encode())
                    sent += 1
            await producer.flush()
            return sent

        warmup = await produce(0, 0)
        await consumer.start()
        await _wait(lambda: consumer.handled >= warmup, 120, lambda: f"warm-up: {consumer.handled}/{warmup}")
        assert consumer.first_batch is not None
        registered = warmup / (consumer.done_at - consumer.first_batch)

        produced_at = time.perf_counter()
        total = await produce(1, rounds)
        produce_rate = total / (time.perf_counter() - produced_at)
        consumer.first_batch = None
        consumer.handled = 0
        await _wait(lambda: consumer.handled >= total, 600, lambda: f"absorbing: {consumer.handled}/{total}")
        assert consumer.first_batch is not None
        elapsed = consumer.done_at - consumer.first_batch
        sample = await db["devices"].find_one({"_id": "00259E-Bench-000000"})
        assert sample is not None and sample["params"][encode_name(CHANGING[0])]["v"] == rounds * 1000
        print(f"absorption: {total} Informs x 10 changed parameters from {devices} devices "
              f"(+2 device.events each)")
        print(f"  steady state : {total / elapsed:8.0f} Informs/s ({elapsed:.1f} s)")
        print(f"  registration : {registered:8.0f} Informs/s (first contact, {warmup} devices)")
        print(f"  (producer side, for scale: {produce_rate:.0f} msgs/s queued)")
    finally:
        await consumer.stop()
        await producer.stop()


async def _wait(done: Callable[[], bool], limit: float, progress: Callable[[], str]) -> None:
    """Wait for ``done``, telling stderr how far along we are every 10 s (slow machines)."""
    report = time.monotonic() + 10
    async with asyncio.timeout(limit):
        while not done():
            await asyncio.sleep(0.05)
            if time.monotonic() > report:
                print(f"  ... {progress()}", file=sys.stderr, flush=True)
                report += 10


def synthetic_device(i: int, now: datetime) -> dict[str, Any]:
    rng = random.Random(i)
    version = VERSIONS[i % len(VERSIONS)]
    seen = now - timedelta(seconds=rng.randrange(7 * 86400))
    params: dict[str, Any] = {
        encode_name("Device.DeviceInfo.SoftwareVersion"): {"v": version, "t": "xsd:string", "ts": seen},
        encode_name("Device.DeviceInfo.UpTime"): {"v": rng.randrange(10**6), "t": "xsd:unsignedInt", "ts": seen},
        encode_name("Device.ManagementServer.PeriodicInformInterval"): {"v": 3600, "t": "xsd:unsignedInt",
                                                                        "ts": seen, "w": True},
        encode_name("Device.WiFi.SSID.1.SSID"): {"v": f"net-{i}", "t": "xsd:string", "ts": seen, "w": True},
    }
    for n in range(1, 22):
        params[encode_name(f"Device.Hosts.Host.{n}.HostName")] = {"v": f"host-{i}-{n}", "t": "xsd:string",
                                                                  "ts": seen}
    tags = [tag for tag, every in (("lab", 97), ("field", 3), ("vip", 1000)) if i % every == 0]
    return {"_id": f"00259E-Fleet-{i:07d}", "oui": "00259E" if i % 4 else "A0B1C2",
            "product_class": ("Box", "Hub", "Mesh")[i % 3], "serial_number": f"{i:07d}", "manufacturer": "Acme",
            "software_version": version, "tags": tags, "first_seen": seen - timedelta(days=30),
            "last_inform": seen, "last_boot": seen - timedelta(days=1), "inform_interval": 3600,
            "silent_deadline": seen + timedelta(hours=3), "applied": [uuid.uuid4().hex], "params": params}


async def load_fleet(db: AsyncDatabase, fleet: int) -> None:
    now = datetime.now(UTC)
    started = time.perf_counter()
    for start in range(0, fleet, 5000):
        await db["devices"].insert_many([synthetic_device(i, now) for i in range(start, min(fleet, start + 5000))],
                                        ordered=False)
    await store.ensure_indexes(db)
    stats = await db.command("collStats", "devices")
    print(f"fleet: {fleet} devices loaded and indexed in {time.perf_counter() - started:.1f} s "
          f"(average document {stats['avgObjSize']} bytes)")


async def queries(settings: Settings, client: AsyncMongoClient, fleet: int, runs: int) -> None:
    app = create_app(settings, client)
    headers = {"X-API-Key": settings.admin_api_key or ""}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://inventory",
                                 headers=headers, timeout=60) as api:
        rng = random.Random(7)
        since = (datetime.now(UTC) - timedelta(hours=6)).isoformat()

        def listing(query: dict[str, Any] | None = None, **params: Any) -> Callable[[], Awaitable[Any]]:
            def call() -> Awaitable[Any]:
                values = dict(params)
                if query is not None:
                    values["q"] = json.dumps(query)
                return api.get("/api/v1/devices", params=values)
            return call

        cases: list[tuple[str, Callable[[], Awaitable[Any]], int]] = [
            ("serial_number = x (1 device)",
             lambda: api.get("/api/v1/devices", params={"q": json.dumps(
                 {"serial_number": f"{rng.randrange(fleet):07d}"})}), runs),
            ("GET /devices/{id} (whole tree)",
             lambda: api.get(f"/api/v1/devices/00259E-Fleet-{rng.randrange(fleet):07d}"), runs),
            ("oui + product_class, 50/page", listing({"oui": "00259E", "product_class": "Hub"}), runs),
            ("software_version = x, 50/page", listing({"software_version": "2.0.0"}), runs),
            ("software_version $prefix 2., 50/page", listing({"software_version": {"$prefix": "2."}}), runs),
            ("tags = lab, 50/page", listing({"tags": "lab"}), runs),
            ("last_inform >= 6h ago, newest first", listing({"last_inform": {"$gte": since}}, sort="-last_inform"),
             runs),
            ("projection of 2 parameters, 100", listing({"software_version": "1.1.0"}, limit=100,
                                                        fields="Device.DeviceInfo.UpTime,Device.WiFi.SSID.1.SSID"),
             runs),
            ("count software_version = x", lambda: api.get("/api/v1/devices/count", params={
                "q": json.dumps({"software_version": "1.2.0"})}), runs),
            ("unindexed parameter = x (scan)", listing({"Device.WiFi.SSID.1.SSID": f"net-{fleet // 2}"}), 5),
        ]
        print(f"queries on {fleet} devices (through the API app in-process; milliseconds):")
        print(f"  {'query':40s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'results':>8s}")
        for name, call, count in cases:
            await call()  # warm the plan cache
            timings = []
            results = 0
            for _ in range(count):
                started = time.perf_counter()
                response = await call()
                timings.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
                body = response.json()
                results = len(body.get("devices", [])) if "devices" in body else body.get("count", 1)
            print(f"  {name:40s} {_pct(timings, 50):8.1f} {_pct(timings, 95):8.1f} {_pct(timings, 99):8.1f} "
                  f"{results:8d}")

        pages: list[float] = []
        cursor = None
        for _ in range(20):
            params = {"q": json.dumps({"product_class": "Box", "oui": "00259E"}), "sort": "id", "limit": 100}
            if cursor:
                params["cursor"] = cursor
            started = time.perf_counter()
            body = (await api.get("/api/v1/devices", params=params)).json()
            pages.append((time.perf_counter() - started) * 1000)
            cursor = body["next_cursor"]
        print(f"  {'cursor paging, 20 pages of 100':40s} {_pct(pages, 50):8.1f} {_pct(pages, 95):8.1f} "
              f"{max(pages):8.1f} {'100':>8s}")


def _pct(values: list[float], percentile: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percentile - 1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=int, default=100_000)
    parser.add_argument("--inform-devices", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=200, help="timed runs per query")
    args = parser.parse_args()
    with ExitStack() as stack:
        mongo_url, kafka = servers(stack)
        name = "bench" + uuid.uuid4().hex[:8]
        settings = Settings(mongodb_url=mongo_url, kafka_bootstrap=kafka, kafka_topic_prefix=f"{name}.",
                            mongodb_database=name, admin_api_key="bench-key", log_level="WARNING")
        client: AsyncMongoClient = AsyncMongoClient(mongo_url, tz_aware=True)
        try:
            absorb_db = client[f"{name}_absorb"]
            await store.ensure_indexes(absorb_db)
            await absorb(settings, absorb_db, args.inform_devices, args.rounds)
            await client.drop_database(f"{name}_absorb")
            await load_fleet(client[name], args.fleet)
            await queries(settings, client, args.fleet, args.runs)
        finally:
            await client.drop_database(name)
            await client.close()


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM (a timeout, a CI job cancelled) unwinds like Ctrl-C, so the servers we started stop.
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
