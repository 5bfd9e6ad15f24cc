"""Bulk jobs survive the orchestrator: killed while paging, resumed by another instance, no duplicates.

The inventory runs for real (its app under uvicorn on the test's MongoDB, with seeded devices);
a gate in front of it holds the third page of a job's selection, so the test knows the job is
in the middle of its paging when it kills the orchestrator (a real `acs orchestrator` process,
SIGKILL: no shutdown, its lease left to expire) or cancels the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from acs.infra import free_port
from services.bus.kafka import ensure_topics
from services.common.settings import Settings
from services.inventory import store as inventory_store
from services.inventory.app import create_app as inventory_app
from services.orchestrator.app import create_app as orchestrator_app
from services.orchestrator.jobs import JobConfig, job_task_id
from services.orchestrator.runtime import OrchestratorRuntime
from tests.integration.test_fileserver_support import _listening_socket, serving
from tests.integration.test_inventory_api import seed

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ADMIN = {"Authorization": "Bearer test-admin-key"}
DEVICES = 23
PAGE = 5


class Gate:
    """The inventory, holding the selection's pages after the first ``open_pages`` until released."""

    def __init__(self, app: Any, open_pages: int) -> None:
        self.app, self.open_pages = app, open_pages
        self.pages = 0
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/api/v1/devices" and f"limit={PAGE}".encode() in \
                scope["query_string"] and (b"x-test", b"bypass") not in scope["headers"]:
            self.pages += 1
            if self.pages > self.open_pages:
                self.held.set()
                await self.release.wait()
        await self.app(scope, receive, send)


@dataclass
class Inventory:
    url: str
    gate: Gate
    db: AsyncDatabase


@pytest.fixture
async def inventory(settings: Settings, mongodb_url: str) -> AsyncIterator[Inventory]:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    db = client[settings.mongodb_database]
    await inventory_store.ensure_indexes(db)
    await seed(db, DEVICES)
    gate = Gate(inventory_app(settings, client), open_pages=2)
    sock = _listening_socket()
    try:
        async with serving(gate, sock):  # type: ignore[arg-type]
            yield Inventory(f"http://127.0.0.1:{sock.getsockname()[1]}", gate, db)
    finally:
        gate.release.set()
        await client.drop_database(settings.mongodb_database)
        await client.close()


async def _resolved(api: httpx.AsyncClient, job_id: str, within: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while (job := (await api.get(f"/api/v1/jobs/{job_id}", headers=ADMIN)).json())["status"] == "resolving":  # noqa: ASYNC110 - another process works it
            await asyncio.sleep(0.1)
    return job


async def _ready(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(60):
        while True:
            assert process.poll() is None, "the orchestrator exited"
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)


async def test_a_job_killed_while_paging_completes_with_one_task_per_device(
        settings: Settings, kafka_bootstrap: str, inventory: Inventory, tmp_path: Path) -> None:
    await ensure_topics(settings)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACS_")}
    env.update({"ACS_KAFKA_BOOTSTRAP": kafka_bootstrap, "ACS_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
                "ACS_MONGODB_URL": settings.mongodb_url, "ACS_MONGODB_DATABASE": settings.mongodb_database,
                "ACS_ADMIN_API_KEY": "test-admin-key", "ACS_SECRET_KEY": settings.secret_key,
                "ACS_ORCHESTRATOR_PORT": str(port), "ACS_INVENTORY_URL": inventory.url,
                "ACS_JOB_PAGE_SIZE": str(PAGE), "ACS_JOB_LEASE_SECONDS": "2", "ACS_LOG_LEVEL": "INFO"})
    log = (tmp_path / "orchestrator.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "acs.cli", "orchestrator"], cwd=REPO, env=env,  # noqa: ASYNC220
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        await _ready(url, process)
        async with httpx.AsyncClient(base_url=url) as api:
            created = await api.post("/api/v1/jobs", headers=ADMIN, json={"query": {}, "task": {"name": "reboot"}})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        async with asyncio.timeout(30):
            await inventory.gate.held.wait()  # two pages done, the third asked for
    finally:
        process.send_signal(signal.SIGKILL)  # no shutdown: its lease stays, to expire
        process.wait(10)
        log.close()

    jobs = inventory.db["jobs"]
    stored = await jobs.find_one({"_id": job_id})
    assert stored is not None
    assert (stored["status"], stored["pages"], stored["lease_owner"] is not None) == ("resolving", 2, True)
    tasks = inventory.db["tasks"]
    assert await tasks.count_documents({"job_id": job_id}) == 2 * PAGE
    # The worst moment to die: after a page's tasks were written, before its cursor was. Put the
    # cursor back one page, as if that write had been lost.
    first_page = [d["_id"] async for d in inventory_store.devices(inventory.db).find({}, {"_id": 1})
                  .sort("_id", 1).limit(PAGE)]
    assert inventory.gate.pages == 3
    page_one = await _page_cursor(inventory.url, PAGE)
    await jobs.update_one({"_id": job_id}, {"$set": {"cursor": page_one, "pages": 1}})
    inventory.gate.release.set()

    # Another instance takes the job over once the dead one's lease expires.
    runtime = OrchestratorRuntime(settings.model_copy(update={"inventory_url": inventory.url}), with_kafka=False,
                                  job_config=JobConfig(page_size=PAGE, lease_seconds=2, claim_interval=0.2))
    await runtime.start()
    try:
        app = orchestrator_app(runtime, manage_runtime=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://orchestrator") as api:
            job = await _resolved(api, job_id)
    finally:
        await runtime.close()
    assert (job["status"], job["device_count"], job["counts"]["pending"]) == ("running", DEVICES, DEVICES)
    created_tasks = [d async for d in tasks.find({"job_id": job_id}, {"device_id": 1})]
    device_ids = [d["device_id"] for d in created_tasks]
    assert len(device_ids) == len(set(device_ids)) == DEVICES  # exactly one task per matching device
    assert {d["_id"] for d in created_tasks} == {job_task_id(job_id, d) for d in device_ids}
    assert set(first_page) <= set(device_ids)


async def _page_cursor(inventory_url: str, page: int) -> str:
    async with httpx.AsyncClient(base_url=inventory_url, headers={**ADMIN, "X-Test": "bypass"}) as client:
        body = (await client.get("/api/v1/devices", params={"q": "{}", "fields": "id", "limit": page})).json()
    return str(body["next_cursor"])


async def test_a_job_cancelled_while_paging_creates_nothing_more_and_ends_every_task(
        settings: Settings, inventory: Inventory) -> None:
    runtime = OrchestratorRuntime(settings.model_copy(update={"inventory_url": inventory.url}), with_kafka=False,
                                  job_config=JobConfig(page_size=PAGE, lease_seconds=5, claim_interval=0.2))
    await runtime.start()
    try:
        app = orchestrator_app(runtime, manage_runtime=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://orchestrator") as api:
            created = await api.post("/api/v1/jobs", headers=ADMIN, json={"query": {}, "task": {"name": "reboot"}})
            job_id = created.json()["id"]
            async with asyncio.timeout(30):
                await inventory.gate.held.wait()
            cancelled = await api.post(f"/api/v1/jobs/{job_id}/cancel", headers=ADMIN)
            assert cancelled.status_code == 200, cancelled.text
            assert (cancelled.json()["status"], cancelled.json()["counts"]["cancelled"]) == ("cancelled", 2 * PAGE)
            inventory.gate.release.set()  # the held page arrives after the cancel
            async with asyncio.timeout(30):
                while (await runtime.store.get_job(job_id) or {}).get("work"):  # noqa: ASYNC110 - stored state
                    await asyncio.sleep(0.05)
            job = (await api.get(f"/api/v1/jobs/{job_id}", headers=ADMIN)).json()
    finally:
        await runtime.close()
    # The page that was in flight was swept by the worker that saw the cancel; no page came after.
    assert job["status"] == "cancelled"
    assert job["counts"]["pending"] == 0 and job["device_count"] <= 3 * PAGE
    assert job["counts"]["cancelled"] == job["device_count"]
    assert inventory.gate.pages == 3
