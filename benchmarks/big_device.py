"""Big-device benchmark: one simulated CPE with a big data model, a full discovery walk.

Runs `acs gateway` as its own process and the simulator (`acs sim --parameters N`) as another, on
the real broker and MongoDB (local servers from acs.infra, or those in ACS_KAFKA_BOOTSTRAP and
ACS_MONGODB_URL); the orchestrator runs in this process, so that a MongoDB command monitor sees
every write it makes and this process's CPU time is the orchestrator's. For each size it lets the
device bootstrap, queues a getParameterNames of the data model's root (a full discovery walk,
level by level), wakes the device with a connection request and waits for the walk to end. It
prints, per size:

- bytes the orchestrator wrote to MongoDB per answer (BSON size of its insert/update/delete
  commands on its collections: tasks, sessions, devices, walks), mean and largest;
- the largest plan in bytes (the SessionPlan message as published);
- orchestrator CPU time per answer, and the walk's wall time;

then the decision time of a routine Inform (`2 PERIODIC`, nothing due: the orchestrator's whole
handling, its MongoDB read included) for a device that knows 0 names (bootstrapped only) and
for the devices whose walks found about 5,000 and 20,000. Targets (issue #14): writes per answer
and plan size within 2x between 1,000 and 20,000 parameters; decision time within 1.5x between 0
and 20,000 names.

    python benchmarks/big_device.py [--sizes 1000,5000,20000] [--informs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bson  # noqa: E402
import httpx  # noqa: E402
from pymongo import monitoring  # noqa: E402

from acs.infra import free_port  # noqa: E402
from services.bus.events import (  # noqa: E402
    TOPIC_DEVICE_EVENTS,
    TOPIC_INBOUND,
    TOPIC_REPLIES,
    DeviceIdentity,
    InboundEvent,
    InformEventCode,
    InformReceived,
    ParameterValue,
    SessionPlan,
    new_id,
    utcnow,
)
from services.bus.kafka import ensure_topics  # noqa: E402
from services.common.settings import Settings  # noqa: E402
from services.orchestrator import planner  # noqa: E402
from services.orchestrator.runtime import OrchestratorRuntime  # noqa: E402
from services.orchestrator.tasks import Task  # noqa: E402

COLLECTIONS = frozenset({"tasks", "orchestrator_sessions", "orchestrator_devices", "orchestrator_walks"})
WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})
CPE_USERNAME, CPE_PASSWORD = "bench", "bench-password"


class WriteMeter(monitoring.CommandListener):
    """Bytes of the write commands sent to the orchestrator's collections (documents included)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.commands = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in WRITE_COMMANDS and event.command.get(event.command_name) in COLLECTIONS:
            self.bytes += len(bson.encode(event.command))
            self.commands += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


@dataclass
class Phase:
    """What the orchestrator did while one walk ran."""

    bytes_per_answer: list[int] = field(default_factory=list)
    cpu_per_answer: list[float] = field(default_factory=list)
    plan_bytes: list[int] = field(default_factory=list)
    rpcs_per_plan: list[int] = field(default_factory=list)


class Probe:
    """Wraps the engine's handler and the plan publisher to attribute writes, CPU and plans."""

    def __init__(self, runtime: OrchestratorRuntime, meter: WriteMeter) -> None:
        self.meter = meter
        self.phase: Phase | None = None
        handle, publish = runtime.engine.handle, runtime.publisher.plan

        async def measured_handle(event: InboundEvent) -> None:
            before, cpu = meter.bytes, time.process_time()
            await handle(event)
            if self.phase is not None and event.type in ("rpc_response", "rpc_fault"):
                self.phase.bytes_per_answer.append(meter.bytes - before)
                self.phase.cpu_per_answer.append(time.process_time() - cpu)

        async def measured_plan(reply_to: str, plan: SessionPlan) -> None:
            if self.phase is not None:
                self.phase.plan_bytes.append(len(plan.model_dump_json()))
                self.phase.rpcs_per_plan.append(len(plan.rpcs))
            await publish(reply_to, plan)

        runtime.engine.handle = measured_handle  # type: ignore[method-assign]
        runtime.publisher.plan = measured_plan  # type: ignore[method-assign]


async def eventually(probe: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := await probe():
            return result
        await asyncio.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


async def wait_port(port: int, seconds: float = 60) -> None:
    async def open_() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True
    await eventually(open_, seconds, f"port {port}")


class Bench:
    def __init__(self, settings: Settings, env: dict[str, str], runtime: OrchestratorRuntime, probe: Probe,
                 gateway_url: str) -> None:
        self.settings, self.env, self.runtime, self.probe, self.gateway_url = settings, env, runtime, probe, gateway_url
        self.store = runtime.store

    async def device(self, serial: str) -> dict[str, Any] | None:
        return await self.store.devices.find_one({"serial_number": serial})

    async def bootstrapped(self, serial: str) -> str | None:
        device = await self.device(serial)
        if device is None or not device.get("cr_username"):
            return None
        task = await self.store.tasks.find_one({"device_id": device["_id"], "name": "bootstrap"})
        return str(device["_id"]) if task and task["status"] == "succeeded" else None

    async def wake(self, device_id: str) -> None:
        device = await self.store.devices.find_one({"_id": device_id})
        assert device is not None
        async with httpx.AsyncClient(auth=httpx.DigestAuth(device["cr_username"], device["cr_password"])) as http:
            async def woken() -> bool:
                return (await http.get(device["connection_request_url"])).status_code in (200, 204)
            await eventually(woken, 30, "the connection request")

    async def walk(self, device_id: str, root: str) -> tuple[Phase, dict[str, Any], float]:
        now = utcnow()
        task = Task(id=new_id(), device_id=device_id, name="getParameterNames", args={
            "parameter_path": root, "read_values": True}, created_at=now, updated_at=now)
        phase = Phase()
        self.probe.phase = phase
        started = time.monotonic()
        await self.store.insert_tasks([task])
        await self.wake(device_id)

        async def ended() -> dict[str, Any] | None:
            document = await self.store.tasks.find_one({"_id": task.id})
            return document if document and document["status"] in ("succeeded", "failed") else None
        document = await eventually(ended, 1800, "the walk")
        self.probe.phase = None
        return phase, document, time.monotonic() - started

    async def decision_time(self, device_id: str, serial: str, informs: int) -> tuple[float, float]:
        """Median seconds the orchestrator takes for a routine Inform of this device (nothing due):
        its whole handling, and the pure decision alone (planner.on_inform on the loaded view)."""
        device = await self.store.devices.find_one({"_id": device_id})
        assert device is not None
        identity = DeviceIdentity(manufacturer=device["manufacturer"], oui=device["oui"],
                                  product_class=device["product_class"], serial_number=serial)
        times = []
        for _ in range(informs):
            event = InformReceived(device_id=device_id, session_id=new_id(), gateway_id="bench",
                                   reply_to=f"{TOPIC_REPLIES}:0", device=identity,
                                   events=[InformEventCode(code="2 PERIODIC")],
                                   parameters=[ParameterValue(name="Device.DeviceInfo.SoftwareVersion", value="1.0.0")])
            started = time.perf_counter()
            await self.runtime.engine.handle(event)
            times.append(time.perf_counter() - started)
        engine = self.runtime.engine
        view = (await self.store.inform_views([device_id]))[device_id]
        policies = await engine.policies.current()
        pure = []
        for _ in range(informs):
            started = time.perf_counter()
            planner.on_inform(event, view.device, view.open_tasks, policies, frozenset(), view.sessions, engine.env(),
                              engine.config)
            pure.append(time.perf_counter() - started)
        return statistics.median(times), statistics.median(pure)

    def simulator(self, size: int, serial_prefix: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "simulator", "--acs-url", self.gateway_url, "--devices", "1", "--model", "tr181",
             "--parameters", str(size), "--serial-prefix", serial_prefix, "--interval", "3600",
             "--username", CPE_USERNAME, "--password", CPE_PASSWORD, "--report-every", "3600"],
            env=self.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _fmt_bytes(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n:.0f} B"


async def run(args: argparse.Namespace, env: dict[str, str]) -> None:
    settings = Settings()
    await ensure_topics(settings, [TOPIC_INBOUND, TOPIC_REPLIES, TOPIC_DEVICE_EVENTS])
    gateway = subprocess.Popen([sys.executable, "-m", "acs.cli", "gateway"], env=env, cwd=REPO,  # noqa: ASYNC220
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meter = WriteMeter()
    monitoring.register(meter)  # every client made from now on: the orchestrator's
    runtime = OrchestratorRuntime(settings, consumer_options={"session_timeout_ms": 6000,
                                                              "heartbeat_interval_ms": 1000})
    probe = Probe(runtime, meter)
    sims: list[subprocess.Popen[bytes]] = []
    rows: list[dict[str, Any]] = []
    decisions: dict[str, tuple[float, float]] = {}
    try:
        await runtime.start()
        await wait_port(settings.gateway_port)
        bench = Bench(settings, env, runtime, probe, f"http://127.0.0.1:{settings.gateway_port}/")
        for size in args.sizes:
            prefix = f"BIG{size}X"
            sims.append(bench.simulator(size, prefix))
            serial = f"{prefix}000000"
            device_id = await eventually(lambda serial=serial: bench.bootstrapped(serial), 120, "the bootstrap")
            if size == args.sizes[0]:
                decisions["0"] = await bench.decision_time(device_id, serial, args.informs)
            cpu = time.process_time()
            phase, task, wall = await bench.walk(device_id, "Device.")
            cpu = time.process_time() - cpu
            result = task["result"]
            found = result.get("parameters_count", len(result.get("parameters", [])))
            answers = len(phase.bytes_per_answer)
            rows.append({"size": size, "status": task["status"], "found": found, "answers": answers,
                         "plans": len(phase.plan_bytes), "bytes_mean": statistics.mean(phase.bytes_per_answer),
                         "bytes_max": max(phase.bytes_per_answer), "bytes_total": sum(phase.bytes_per_answer),
                         "plan_max": max(phase.plan_bytes), "rpcs_max": max(phase.rpcs_per_plan),
                         "cpu_per_answer": statistics.mean(phase.cpu_per_answer), "cpu_total": cpu, "wall": wall,
                         "truncated": bool(result.get("truncated"))})
            if size in (5000, 20000) or size == args.sizes[-1]:
                decisions[str(found)] = await bench.decision_time(device_id, serial, args.informs)
            sims.pop().terminate()
    finally:
        for sim in sims:
            sim.terminate()
        with contextlib.suppress(Exception):
            await runtime.mongo.drop_database(settings.mongodb_database)
        await runtime.close()
        gateway.terminate()
        gateway.wait(30)

    print(f"\nbig device: one simulated TR-181 CPE, full discovery walk of Device. (gpv batch "
          f"{settings.gpv_batch_size}); orchestrator writes to MongoDB measured by a command monitor\n")
    print(f"{'parameters':>10} {'found':>6} {'answers':>7} {'plans':>5} {'writes/answer':>13} {'max/answer':>10} "
          f"{'walk total':>10} {'largest plan':>12} {'RPCs/plan':>9} {'CPU/answer':>10} {'CPU total':>9} "
          f"{'wall':>6}")
    for r in rows:
        print(f"{r['size']:>10} {r['found']:>6} {r['answers']:>7} {r['plans']:>5} {_fmt_bytes(r['bytes_mean']):>13} "
              f"{_fmt_bytes(r['bytes_max']):>10} {_fmt_bytes(r['bytes_total']):>10} {_fmt_bytes(r['plan_max']):>12} "
              f"{r['rpcs_max']:>9} {r['cpu_per_answer'] * 1e3:>8.2f}ms {r['cpu_total']:>8.1f}s {r['wall']:>5.0f}s"
              + ("  TRUNCATED" if r["truncated"] else "") + ("" if r["status"] == "succeeded" else f"  {r['status']}"))
    print("\nroutine Inform (2 PERIODIC, nothing due), median of", args.informs, "- the orchestrator's whole handling:")
    for names, (seconds, pure) in decisions.items():
        print(f"  {names:>6} names known: {seconds * 1e6:8.0f} us, of which the decision itself {pure * 1e6:6.0f} us")
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print(f"\nratios {last['size']} vs {first['size']} parameters: writes/answer "
              f"{last['bytes_mean'] / first['bytes_mean']:.2f}x (target <= 2), largest plan "
              f"{last['plan_max'] / first['plan_max']:.2f}x (target <= 2), CPU/answer "
              f"{last['cpu_per_answer'] / first['cpu_per_answer']:.2f}x")
    if len(decisions) >= 2:
        values = list(decisions.values())
        print(f"decision time, most names vs none: {values[-1][0] / values[0][0]:.2f}x, the decision itself "
              f"{values[-1][1] / values[0][1]:.2f}x (target <= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,20000", help="parameters of the simulated device, per run")
    parser.add_argument("--informs", type=int, default=200, help="routine Informs timed per device")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    name = "bigdev" + uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items()}
    env.update({"ACS_KAFKA_TOPIC_PREFIX": f"{name}.", "ACS_MONGODB_DATABASE": name,
                "ACS_GATEWAY_PORT": str(free_port()), "ACS_CPE_USERNAME": CPE_USERNAME,
                "ACS_CPE_PASSWORD": CPE_PASSWORD, "ACS_SECRET_KEY": "bench-" + uuid.uuid4().hex,
                "ACS_LOG_LEVEL": "WARNING", "ACS_KAFKA_IDEMPOTENCE": "false"})
    with tempfile.TemporaryDirectory(prefix="acs-bigdev-") as tmp:
        servers: list[Any] = []
        try:
            if not os.environ.get("ACS_KAFKA_BOOTSTRAP"):
                from acs.infra import LocalKafka
                kafka = LocalKafka(Path(tmp) / "kafka")
                kafka.start()
                servers.append(kafka)
                env["ACS_KAFKA_BOOTSTRAP"] = kafka.bootstrap
            if not os.environ.get("ACS_MONGODB_URL"):
                from acs.infra import LocalMongo
                mongo = LocalMongo(Path(tmp) / "mongodb")
                mongo.start()
                servers.append(mongo)
                env["ACS_MONGODB_URL"] = mongo.url
            os.environ.update(env)  # the in-process orchestrator reads the same settings
            asyncio.run(run(args, env))
        finally:
            for server in reversed(servers):
                server.stop()

if __name__ == "__main__":
    main()
