"""Campaigns on the real servers without CPEs: windows on an injected clock, the in-flight cap,
eligibility, and an orchestrator killed in the middle of a wave.

The inventory (seeded devices) and the fileserver (the catalogued image) run for real on the
test's MongoDB and S3. No device answers, so a started device ends by the campaign's device
timeout: enough to see what starts when, and that a restart creates no second Download.
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
from datetime import UTC, datetime, timedelta
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
from services.orchestrator.campaign_runner import CampaignConfig
from services.orchestrator.campaigns import campaign_task_id
from services.orchestrator.jobs import JobConfig
from services.orchestrator.runtime import OrchestratorRuntime
from tests.integration.test_fileserver_support import _listening_socket, run_fileserver, serving, upload
from tests.integration.test_inventory_api import seed

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ADMIN = {"Authorization": "Bearer test-admin-key"}
DEVICES = 30  # Box SN00..SN19 (software 1.0, 2.0, 2.1 in turn), Hub SN20..SN29
FIRMWARE = "box-3.0.0.bin"
# A Wednesday at 12:00 in Paris; the window is 02:00-04:00 there on weekdays.
NOON = datetime(2026, 1, 7, 11, 0, tzinfo=UTC)
NIGHT = datetime(2026, 1, 7, 1, 30, tzinfo=UTC)


@dataclass
class Servers:
    settings: Settings
    db: AsyncDatabase


@pytest.fixture
async def servers(settings: Settings, mongodb_url: str, s3_server: Any) -> AsyncIterator[Servers]:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    db = client[settings.mongodb_database]
    await inventory_store.ensure_indexes(db)
    await seed(db, DEVICES)
    sock = _listening_socket()
    try:
        async with serving(inventory_app(settings, client), sock), \
                run_fileserver(settings, with_kafka=False) as fileserver:
            async with httpx.AsyncClient() as http:
                stored = await upload(http, fileserver, FIRMWARE, os.urandom(10_000), version="3.0.0",
                                      product_class="Box")
                assert stored.status_code == 201, stored.text
            yield Servers(settings.model_copy(update={
                "inventory_url": f"http://127.0.0.1:{sock.getsockname()[1]}", "fileserver_url": fileserver.api_url,
                "files_public_url": fileserver.downloads_url}), db)
    finally:
        await client.drop_database(settings.mongodb_database)
        await client.close()


def campaign(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "box upgrade", "query": {}, "firmware": [{"product_class": "Box", "file_name": FIRMWARE}],
        "canary": {"size": 3}, "waves": [{"size": 6}, {"percent": 100}],
        "limits": {"max_in_flight": 3, "connection_requests_per_second": 100, "device_timeout_seconds": 1.0}}
    body.update(overrides)
    return body


async def wait_for(api: httpx.AsyncClient, campaign_id: str, until: Any, seconds: float = 30) -> dict[str, Any]:
    last: dict[str, Any] = {}
    try:
        async with asyncio.timeout(seconds):
            while True:
                last = (await api.get(f"/api/v1/campaigns/{campaign_id}/progress", headers=ADMIN)).json()
                if until(last):
                    break
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not reached; last progress {last}") from None
    return last


async def test_nothing_starts_outside_the_window_then_at_most_the_cap_ineligible_skipped(
        servers: Servers) -> None:
    now = [NOON]
    runtime = OrchestratorRuntime(servers.settings, with_kafka=False,
                                  job_config=JobConfig(lease_seconds=5, claim_interval=0.1),
                                  campaign_config=CampaignConfig(tick_seconds=0.1, rewake_seconds=0.3,
                                                                 clock=lambda: now[0]))
    await runtime.start()
    try:
        app = orchestrator_app(runtime, manage_runtime=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://orchestrator") as api:
            created = await api.post("/api/v1/campaigns", headers=ADMIN, json=campaign(
                eligibility={"versions": ["1.0", "2.0"]}, limits={
                    "max_in_flight": 2, "connection_requests_per_second": 100, "device_timeout_seconds": 600},
                windows=[{"weekdays": ["mon", "tue", "wed", "thu", "fri"], "start": "02:00", "end": "04:00",
                          "timezone": "Europe/Paris"}]))
            assert created.status_code == 201, created.text
            cid = created.json()["id"]
            first = await wait_for(api, cid, lambda p: p.get("note", "").startswith("outside"))
            assert first["note"].startswith("outside the maintenance windows (mon,tue,wed,thu,fri 02:00-04:00 "
                                            "Europe/Paris); the next opens at 2026-01-08T01:")
            await asyncio.sleep(1.0)  # ten rounds, none of them starts anything
            outside = (await api.get(f"/api/v1/campaigns/{cid}/progress", headers=ADMIN)).json()
            assert outside["counts"]["in_progress"] == 0 and outside["counts"]["waiting"] > 0
            assert await servers.db["tasks"].count_documents({"job_id": cid}) == 0

            now[0] = NIGHT  # 02:30 in Paris: the window is open
            inside = await wait_for(api, cid, lambda p: p["counts"]["in_progress"] == 2)
            assert inside["note"] == ""
            for _ in range(10):  # nothing ends (no device answers): the cap holds
                await asyncio.sleep(0.1)
                assert (await api.get(f"/api/v1/campaigns/{cid}/progress",
                                      headers=ADMIN)).json()["counts"]["in_progress"] == 2
            assert await servers.db["tasks"].count_documents({"job_id": cid, "name": "download"}) == 2
            # Their Downloads are still queued (no device answers): they are woken again, on the clock.
            assert await servers.db["campaign_devices"].count_documents(
                {"campaign_id": cid, "state": "in_progress", "woken_at": {"$exists": True}}) == 0
            now[0] = NIGHT + timedelta(seconds=1)
            async with asyncio.timeout(10):
                while await servers.db["campaign_devices"].count_documents(  # noqa: ASYNC110 - the engine writes
                        {"campaign_id": cid, "state": "in_progress", "woken_at": now[0]}) < 2:
                    await asyncio.sleep(0.05)

            rows = (await api.get(f"/api/v1/campaigns/{cid}/devices", headers=ADMIN,
                                  params={"state": "skipped", "limit": 1000})).json()["devices"]
            reasons = {r["device_id"].split("-")[-1]: r["reason"] for r in rows}
            assert reasons["SN02"] == "software version 2.1 is not eligible"
            # The canary is 3 eligible devices: SN00 (1.0), SN01 (2.0), SN03 (1.0); SN02 was skipped.
            assert set(reasons) == {"SN02"}
            # A campaign lives in the jobs engine's collection, but it is not a job.
            assert (await api.get(f"/api/v1/jobs/{cid}", headers=ADMIN)).status_code == 404
            assert cid not in {j["id"] for j in (await api.get("/api/v1/jobs", headers=ADMIN)).json()["jobs"]}
            waiting = (await api.get(f"/api/v1/campaigns/{cid}/devices", headers=ADMIN)).json()["devices"]
            assert sorted(r["device_id"].split("-")[-1] for r in waiting if r["state"] != "skipped") == \
                ["SN00", "SN01", "SN03"]
    finally:
        await runtime.close()


async def _ready(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(60):
        while True:
            assert process.poll() is None, "the orchestrator exited"
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)


async def test_an_orchestrator_killed_mid_wave_is_continued_without_a_second_download(
        servers: Servers, kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = servers.settings
    await ensure_topics(settings)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACS_")}
    env.update({"ACS_KAFKA_BOOTSTRAP": kafka_bootstrap, "ACS_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
                "ACS_MONGODB_URL": settings.mongodb_url, "ACS_MONGODB_DATABASE": settings.mongodb_database,
                "ACS_ADMIN_API_KEY": "test-admin-key", "ACS_SECRET_KEY": settings.secret_key,
                "ACS_ORCHESTRATOR_PORT": str(port), "ACS_INVENTORY_URL": settings.inventory_url,
                "ACS_FILESERVER_URL": settings.fileserver_url, "ACS_FILES_PUBLIC_URL": settings.files_public_url,
                "ACS_JOB_LEASE_SECONDS": "2", "ACS_CAMPAIGN_TICK_SECONDS": "0.2", "ACS_LOG_LEVEL": "INFO"})
    log = (tmp_path / "orchestrator.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "acs.cli", "orchestrator"], cwd=REPO, env=env,  # noqa: ASYNC220
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        await _ready(url, process)
        async with httpx.AsyncClient(base_url=url) as api:
            created = await api.post("/api/v1/campaigns", headers=ADMIN, json=campaign())
            assert created.status_code == 201, created.text
            cid = created.json()["id"]
            # In the middle of the second wave: some of it ended, some in flight.
            await wait_for(api, cid, lambda p: p.get("wave") == 1 and p["waves"][1]["counts"]["failed"] >= 1
                           and p["counts"]["in_progress"] >= 1, seconds=40)
    finally:
        process.send_signal(signal.SIGKILL)  # no shutdown: its lease stays, to expire
        process.wait(10)
        log.close()
    tasks = servers.db["tasks"]
    before = {d["_id"] async for d in tasks.find({"job_id": cid}, {"_id": 1})}
    assert before

    runtime = OrchestratorRuntime(settings, with_kafka=False,
                                  job_config=JobConfig(lease_seconds=2, claim_interval=0.1),
                                  campaign_config=CampaignConfig(tick_seconds=0.2))
    await runtime.start()
    try:
        app = orchestrator_app(runtime, manage_runtime=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://orchestrator") as api:
            done = await wait_for(api, cid, lambda p: p["state"] == "completed", seconds=40)
            rows = (await api.get(f"/api/v1/campaigns/{cid}/devices", headers=ADMIN,
                                  params={"limit": 1000})).json()["devices"]
    finally:
        await runtime.close()
    # Box devices not already on 3.0.0: all 20; every one got exactly one Download, of attempt 0.
    assert done["counts"] == {"eligible": 0, "waiting": 0, "in_progress": 0, "upgraded": 0, "failed": 20,
                              "skipped": 10}
    downloads = [d async for d in tasks.find({"job_id": cid}, {"device_id": 1, "name": 1})]
    device_ids = [d["device_id"] for d in downloads]
    assert len(device_ids) == len(set(device_ids)) == 20 and {d["name"] for d in downloads} == {"download"}
    assert {d["_id"] for d in downloads} == {campaign_task_id(cid, d, 0) for d in device_ids}
    assert before <= {d["_id"] for d in downloads}
    failed = [r for r in rows if r["state"] == "failed"]
    assert {r["reason"] for r in failed} == {"no upgrade within the device timeout"}
    # The waves in order, across the restart.
    for wave in (1, 2):
        ended = max(datetime.fromisoformat(r["ended_at"]) for r in failed if r["wave"] == wave - 1)
        assert all(datetime.fromisoformat(r["started_at"]) >= ended - timedelta(milliseconds=1)
                   for r in failed if r["wave"] == wave)


async def test_draft_approval_gate_operator_pause_and_cancel(servers: Servers) -> None:
    runtime = OrchestratorRuntime(servers.settings, with_kafka=False,
                                  job_config=JobConfig(lease_seconds=5, claim_interval=0.1),
                                  campaign_config=CampaignConfig(tick_seconds=0.1))
    await runtime.start()
    try:
        app = orchestrator_app(runtime, manage_runtime=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://orchestrator") as api:
            created = await api.post("/api/v1/campaigns", headers=ADMIN, json=campaign(
                draft=True, gates={"manual_approval": True}))
            assert created.status_code == 201 and created.json()["state"] == "draft", created.text
            cid = created.json()["id"]
            assert (await api.post(f"/api/v1/campaigns/{cid}/resume", headers=ADMIN)).status_code == 409
            await asyncio.sleep(0.5)
            assert (await runtime.store.get_job(cid) or {}).get("state") == "draft"  # a draft is not worked
            assert (await api.post(f"/api/v1/campaigns/{cid}/start", headers=ADMIN)).json()["state"] == "scheduled"
            # The canary (3 devices) ends by the device timeout; the next wave waits for an approval.
            gated = await wait_for(api, cid, lambda p: p.get("note", "").startswith("waiting for an operator"))
            assert (gated["wave"], gated["counts"]["failed"]) == (0, 3)
            approved = await api.post(f"/api/v1/campaigns/{cid}/approve", headers=ADMIN)
            assert approved.status_code == 200 and approved.json()["waves"][1]["approved"], approved.text
            await wait_for(api, cid, lambda p: p["wave"] == 1 and p["counts"]["in_progress"] > 0)
            paused = await api.post(f"/api/v1/campaigns/{cid}/pause", headers=ADMIN)
            assert (paused.json()["state"], paused.json()["paused_by"]) == ("paused", "bootstrap-admin")
            settled = await wait_for(api, cid, lambda p: p["counts"]["in_progress"] == 0)
            await asyncio.sleep(0.5)  # paused: nothing starts
            assert (await api.get(f"/api/v1/campaigns/{cid}/progress", headers=ADMIN)).json()["counts"] == \
                settled["counts"]
            cancelled = await api.post(f"/api/v1/campaigns/{cid}/cancel", headers=ADMIN)
            assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
            assert (await api.post(f"/api/v1/campaigns/{cid}/resume", headers=ADMIN)).status_code == 409
            async with asyncio.timeout(20):
                while (await runtime.store.get_job(cid) or {}).get("work"):  # noqa: ASYNC110 - the engine sweeps
                    await asyncio.sleep(0.05)
            done = (await api.get(f"/api/v1/campaigns/{cid}/progress", headers=ADMIN)).json()
            assert done["counts"]["waiting"] == done["counts"]["in_progress"] == 0
            rows = (await api.get(f"/api/v1/campaigns/{cid}/devices", headers=ADMIN,
                                  params={"state": "skipped", "limit": 1000})).json()["devices"]
            assert any(r["reason"] == "campaign cancelled by bootstrap-admin" for r in rows)
            listed = (await api.get("/api/v1/campaigns", headers=ADMIN, params={"state": "cancelled"})).json()
            assert [c["id"] for c in listed["campaigns"]] == [cid]
        assert await servers.db["tasks"].count_documents({"job_id": cid, "status": {"$in": [
            "pending", "in_progress", "pending_completion"]}}) == 0
    finally:
        await runtime.close()


async def test_a_scoped_operator_campaign_selects_only_within_its_scope(servers: Servers) -> None:
    """A scoped operator's campaign over every device selects the devices of its scope only, and
    campaigns made outside the scope are unknown to it (404), also to list, control or read devices."""
    runtime = OrchestratorRuntime(servers.settings, with_kafka=False,
                                  job_config=JobConfig(lease_seconds=5, claim_interval=0.1),
                                  campaign_config=CampaignConfig(tick_seconds=0.1))
    await runtime.start()
    scope = {"serial_number": {"$prefix": "SN0"}}  # SN00..SN09: 10 of the 30 devices
    try:
        app = orchestrator_app(runtime, manage_runtime=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://orchestrator") as api:
            user = await api.post("/api/v1/users", headers=ADMIN, json={
                "username": "olga", "password": "a long enough password", "role": "operator", "scope": scope})
            assert user.status_code == 201, user.text
            key = (await api.post("/api/v1/apikeys", headers=ADMIN, json={
                "name": "olga-key", "role": "operator", "user": "olga"})).json()["key"]
            olga = {"X-API-Key": key}
            theirs = (await api.post("/api/v1/campaigns", headers=ADMIN, json=campaign(draft=True))).json()
            assert theirs["total"] == 30
            created = await api.post("/api/v1/campaigns", headers=olga, json=campaign(
                canary={"size": 3}, query={"product_class": "Box"}))
            assert created.status_code == 201, created.text
            mine = created.json()
            assert mine["total"] == 10 and mine["query"] == {"$and": [scope, {"product_class": "Box"}]}
            assert [c["id"] for c in (await api.get("/api/v1/campaigns", headers=olga)).json()["campaigns"]] == \
                [mine["id"]]
            assert len((await api.get("/api/v1/campaigns", headers=ADMIN)).json()["campaigns"]) == 2
            for route in ("", "/progress", "/devices"):
                assert (await api.get(f"/api/v1/campaigns/{theirs['id']}{route}", headers=olga)).status_code == 404
                assert (await api.get(f"/api/v1/campaigns/{mine['id']}{route}", headers=olga)).status_code == 200
            for action in ("start", "cancel", "approve"):
                assert (await api.post(f"/api/v1/campaigns/{theirs['id']}/{action}",
                                       headers=olga)).status_code == 404
            # The canary materialises devices of the scope only.
            async with asyncio.timeout(20):
                while await servers.db["campaign_devices"].count_documents({"campaign_id": mine["id"]}) < 3:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            rows = (await api.get(f"/api/v1/campaigns/{mine['id']}/devices", headers=olga,
                                  params={"limit": 1000})).json()["devices"]
            assert rows and all(r["device_id"].split("-")[-1].startswith("SN0") for r in rows)
            assert (await api.post(f"/api/v1/campaigns/{mine['id']}/cancel", headers=olga)).status_code == 200
            assert (await runtime.store.get_job(theirs["id"]) or {}).get("state") == "draft"
    finally:
        await runtime.close()
