"""Firmware campaigns end to end: the whole ACS (`acs up --external`) and simulated CPEs.

The devices upgrade for real: a connection request, a Download of the catalogued image from the
fileserver, the reboot into the new SoftwareVersion, the TransferComplete; the campaign reads
the outcome from the task and the version the device reports when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import psutil
import pytest

from simulator.config import FleetSettings
from simulator.fleet import Fleet
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

TARGET = "2.0.0"


async def eventually(probe: Callable[[], Awaitable[Any]], seconds: float = 60.0, step: float = 0.3) -> Any:
    async with asyncio.timeout(seconds):
        while True:
            if result := await probe():
                return result
            await asyncio.sleep(step)


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.admin_headers, timeout=30) as client:
        yield client


async def start_fleet(stack: Stack, api: httpx.AsyncClient, devices: int, **options: Any) -> tuple[Fleet, str]:
    """A fleet of its own, every device bootstrapped (and so in the inventory) before the test goes on."""
    prefix = "CMP" + uuid.uuid4().hex[:6].upper()
    fleet = Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=devices, serial_prefix=prefix,
                                acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                                periodic_interval=3600, reboot_delay=0.3, seed=7, ramp=1.0, **options))
    await fleet.start()

    async def all_bootstrapped() -> bool:
        found = (await api.get("/tasks", params={"name": "bootstrap", "status": "succeeded", "limit": 500})).json()
        return sum(t["device_id"].endswith(tuple(f"-{prefix}{i:06d}" for i in range(devices)))
                   for t in found["tasks"]) >= devices

    async def all_in_the_inventory() -> bool:
        # The inventory consumes the Informs on its own: it may be behind the orchestrator.
        found = (await api.get("/devices/count", params={"q": json.dumps({"serial_number": {"$prefix": prefix}})}))
        return bool(found.json()["count"] == devices)

    await eventually(all_bootstrapped, seconds=90, step=0.5)
    await eventually(all_in_the_inventory, seconds=30, step=0.2)
    return fleet, prefix


async def upload_firmware(api: httpx.AsyncClient, product_class: str) -> str:
    name = f"fw-{product_class}-{uuid.uuid4().hex[:6]}-{TARGET}.bin"
    response = await api.put(f"/files/{name}", content=os.urandom(200_000),
                             params={"file_type": "1 Firmware Upgrade Image", "version": TARGET,
                                     "product_class": product_class})
    assert response.status_code == 201, response.text
    return name


async def progress(api: httpx.AsyncClient, campaign_id: str) -> dict[str, Any]:
    response = await api.get(f"/campaigns/{campaign_id}/progress")
    assert response.status_code == 200, response.text
    return response.json()


async def campaign_devices(api: httpx.AsyncClient, campaign_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = (await api.get(f"/campaigns/{campaign_id}/devices",
                              params={"limit": 1000, **({"cursor": cursor} if cursor else {})})).json()
        rows += page["devices"]
        cursor = page["next_cursor"]
        if not cursor:
            return rows


async def watch(api: httpx.AsyncClient, campaign_id: str, until: Callable[[dict[str, Any]], bool],
                seconds: float, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Poll the progress (keeping every answer) until ``until`` holds."""
    async def probe() -> dict[str, Any] | None:
        current = await progress(api, campaign_id)
        samples.append(current)
        return current if until(current) else None

    try:
        result: dict[str, Any] = await eventually(probe, seconds=seconds, step=0.2)
    except TimeoutError:
        raise AssertionError(f"not reached in {seconds} s; last progress: {samples[-1] if samples else None}, "
                             f"tasks: {(await api.get('/tasks', params={'job_id': campaign_id})).json()}, "
                             f"devices: {await campaign_devices(api, campaign_id)}") from None
    return result


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                   key=lambda e: (e[0], e[1]))
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


async def test_three_waves_in_order_under_the_cap_ineligible_skipped(api: httpx.AsyncClient, stack: Stack) -> None:
    # Mixed: even indexes are IGD-SIM (TR-098), odd ones DEV-SIM; the firmware is for IGD-SIM only.
    fleet, prefix = await start_fleet(stack, api, 40, model="mixed", download_seconds=0.3)
    try:
        firmware = await upload_firmware(api, "IGD-SIM")
        cap = 4
        started = time.monotonic()
        created = await api.post("/campaigns", json={
            "name": "three waves", "query": {"serial_number": {"$prefix": prefix}},
            "firmware": [{"product_class": "IGD-SIM", "file_name": firmware}],
            "canary": {"size": 2}, "waves": [{"size": 6}, {"percent": 100}],
            "gates": {"min_success_rate": 0.9}, "stop": {"max_failures": 1},
            "limits": {"max_in_flight": cap, "connection_requests_per_second": 20,
                       "device_timeout_seconds": 60}})
        assert created.status_code == 201, created.text
        campaign = created.json()
        assert campaign["total"] == 40 and [w["target"] for w in campaign["waves"]] == [2, 6, None]
        samples: list[dict[str, Any]] = []
        done = await watch(api, campaign["id"], lambda p: p["state"] in ("completed", "paused"), 50, samples)
        assert done["state"] == "completed", done
        assert done["counts"] == {"eligible": 0, "waiting": 0, "in_progress": 0, "upgraded": 20, "failed": 0,
                                  "skipped": 20}
        assert max(s["downloads_in_flight"] for s in samples) <= cap

        rows = await campaign_devices(api, campaign["id"])
        upgraded = [r for r in rows if r["state"] == "upgraded"]
        skipped = [r for r in rows if r["state"] == "skipped"]
        assert len(upgraded) == 20 and len(skipped) == 20
        assert {r["reason"] for r in skipped} == {"no firmware in the campaign for product class 'DEV-SIM'"}
        assert sorted(len([r for r in upgraded if r["wave"] == w]) for w in range(3)) == [2, 6, 12]
        # In order: no device of a wave started before every device of the wave before it ended.
        for wave in (1, 2):
            before = max(datetime.fromisoformat(r["ended_at"]) for r in upgraded if r["wave"] == wave - 1)
            assert all(datetime.fromisoformat(r["started_at"]) >= before for r in upgraded if r["wave"] == wave)
        # The orchestrator's own record of the upgrades never had more than the cap at once.
        assert max_overlap([(datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["ended_at"]))
                            for r in upgraded]) <= cap
        # And the fileserver's: every download of the image, none overlapping more than the cap.
        records = (await api.get(f"/files/{firmware}/downloads", params={"limit": 1000})).json()["downloads"]
        assert len(records) == 20 and all(r["outcome"] == "completed" for r in records)
        spans = []
        for record in records:
            end = datetime.fromisoformat(record["finished_at"])
            spans.append((end - timedelta(seconds=record["duration_seconds"]), end))
        assert max_overlap(spans) <= cap
        # Every eligible device runs the target version now, and reported it to the inventory.
        for cpe in fleet.devices:
            assert (cpe.sw_version or fleet.settings.sw_version) == (TARGET if cpe.index % 2 == 0 else "1.0.0")
        async def inventory_on_target() -> bool:
            # The inventory consumes the devices' Informs on its own, possibly a little behind.
            found = (await api.get("/devices/count", params={"q": json.dumps(
                {"serial_number": {"$prefix": prefix}, "software_version": TARGET})})).json()
            return bool(found["count"] == 20)

        await eventually(inventory_on_target, seconds=30)
        assert time.monotonic() - started < 90
    finally:
        await fleet.stop()


async def test_a_failing_share_pauses_the_campaign_in_its_second_wave_and_it_resumes(
        api: httpx.AsyncClient, stack: Stack) -> None:
    fleet, prefix = await start_fleet(stack, api, 40, model="tr098", fail_share=0.3)
    try:
        firmware = await upload_firmware(api, "IGD-SIM")
        created = await api.post("/campaigns", json={
            "name": "failing share", "query": {"serial_number": {"$prefix": prefix}},
            "firmware": [{"product_class": "IGD-SIM", "file_name": firmware}],
            "canary": {"size": 10}, "waves": [{"size": 20}, {"percent": 100}],
            "gates": {"min_success_rate": 0.6}, "stop": {"max_failure_rate": 0.2, "window": 15},
            "limits": {"max_in_flight": 6, "connection_requests_per_second": 20, "device_timeout_seconds": 60}})
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]
        samples: list[dict[str, Any]] = []
        paused = await watch(api, campaign_id, lambda p: p["state"] in ("paused", "completed"), 50, samples)
        assert paused["state"] == "paused" and paused["wave"] == 1, paused
        assert paused["reason"].startswith("stop rule: ") and "of the last 15 devices failed (limit 20%)" \
            in paused["reason"]
        assert (await api.get(f"/campaigns/{campaign_id}")).json()["paused_by"] == "rule"
        # Nothing starts while paused (what was in flight ends and is counted).
        await eventually(lambda: _settled(api, campaign_id), seconds=30)
        before = (await progress(api, campaign_id))["counts"]
        await asyncio.sleep(2)
        assert (await progress(api, campaign_id))["counts"] == before
        failed = [r for r in await campaign_devices(api, campaign_id) if r["state"] == "failed"]
        assert failed and all(r["fault"]["code"] == 9010 and "9010" in r["reason"] for r in failed)

        fleet.settings.fail_share = 0.0  # the bad image is fixed
        resumed = await api.post(f"/campaigns/{campaign_id}/resume")
        assert resumed.status_code == 200 and resumed.json()["state"] == "running", resumed.text
        done = await watch(api, campaign_id, lambda p: p["state"] in ("completed", "paused"), 50, samples)
        assert done["state"] == "completed", done
        assert done["counts"]["upgraded"] + done["counts"]["failed"] == 40
        # The failed devices get another attempt (a new Download) and upgrade too.
        retried = await api.post(f"/campaigns/{campaign_id}/retry-failed")
        assert retried.status_code == 200, retried.text
        done = await watch(api, campaign_id, lambda p: p["state"] == "completed" and p["counts"]["upgraded"] == 40,
                           40, samples)
        assert all((cpe.sw_version or "") == TARGET for cpe in fleet.devices)
    finally:
        await fleet.stop()


async def _settled(api: httpx.AsyncClient, campaign_id: str) -> bool:
    return (await progress(api, campaign_id))["counts"]["in_progress"] == 0


async def test_offline_devices_fail_by_the_timeout_and_refused_downloads_with_the_cpe_fault(
        api: httpx.AsyncClient, stack: Stack) -> None:
    # 10 devices: 4 and 9 answer the Download RPC with 9010; 0 and 5 accept it, then go offline.
    fleet, prefix = await start_fleet(stack, api, 10, model="tr098", fail_share=0.2, fail_stage="download",
                                      offline_share=0.2)
    try:
        firmware = await upload_firmware(api, "IGD-SIM")
        created = await api.post("/campaigns", json={
            "name": "offline and refused", "query": {"serial_number": {"$prefix": prefix}},
            "firmware": [{"product_class": "IGD-SIM", "file_name": firmware}],
            "canary": {"percent": 100}, "waves": [],
            "limits": {"max_in_flight": 10, "connection_requests_per_second": 50, "device_timeout_seconds": 6}})
        assert created.status_code == 201, created.text
        assert created.json()["total"] == 10
        campaign_id = created.json()["id"]
        done = await watch(api, campaign_id, lambda p: p["state"] == "completed", 45, [])
        assert (done["counts"]["upgraded"], done["counts"]["failed"]) == (6, 4), str(
            (done["counts"], done["waves"], [(r["device_id"][-2:], r["state"], r["reason"])
                                             for r in await campaign_devices(api, campaign_id)]))
        rows = {int(r["device_id"][-6:]): r for r in await campaign_devices(api, campaign_id)}
        for index in (0, 5):
            assert rows[index]["state"] == "failed"
            assert rows[index]["reason"] == "no upgrade within the device timeout"
        for index in (4, 9):
            assert rows[index]["state"] == "failed" and rows[index]["fault"]["code"] == 9010
            assert rows[index]["fault"]["method"] == "Download"
        tasks = (await api.get("/tasks", params={"job_id": campaign_id, "limit": 100})).json()["tasks"]
        offline = [t for t in tasks if int(t["device_id"][-6:]) in (0, 5)]
        # The campaign gave up on them: their Downloads are cancelled, not left waiting forever.
        assert {t["status"] for t in offline} == {"cancelled"}
    finally:
        await fleet.stop()


def service_pid(stack: Stack, name: str) -> int | None:
    for child in psutil.Process(stack.up_pid).children():
        with contextlib.suppress(psutil.Error):
            if child.cmdline()[-1:] == [name]:
                return child.pid
    return None


async def test_an_orchestrator_killed_mid_wave_is_restarted_and_continues_without_a_second_download(
        api: httpx.AsyncClient, stack: Stack) -> None:
    """Real devices, real downloads: SIGKILL of the orchestrator while a wave's Downloads are in
    flight; `acs up` starts it again, and the campaign ends with one Download per device."""
    fleet, prefix = await start_fleet(stack, api, 24, model="tr098", download_seconds=1.5)
    try:
        firmware = await upload_firmware(api, "IGD-SIM")
        created = await api.post("/campaigns", json={
            "name": "killed mid-wave", "query": {"serial_number": {"$prefix": prefix}},
            "firmware": [{"product_class": "IGD-SIM", "file_name": firmware}],
            "canary": {"size": 2}, "waves": [{"percent": 100}],
            "limits": {"max_in_flight": 6, "connection_requests_per_second": 20, "device_timeout_seconds": 90}})
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]
        samples: list[dict[str, Any]] = []
        await watch(api, campaign_id, lambda p: p["wave"] == 1 and p["counts"]["in_progress"] >= 3, 60, samples)
        killed = service_pid(stack, "orchestrator")
        assert killed is not None
        os.kill(killed, signal.SIGKILL)

        async def restarted_and_ready() -> bool:
            pid = service_pid(stack, "orchestrator")
            return pid not in (None, killed) and \
                (await api.get(f"/campaigns/{campaign_id}/progress")).status_code == 200

        await eventually(restarted_and_ready, seconds=30)
        done = await watch(api, campaign_id, lambda p: p["state"] in ("completed", "paused"), 90, samples)
        assert done["state"] == "completed" and done["counts"]["upgraded"] == 24, done
        # One Download per device: in the orchestrator's tasks and in the fileserver's records.
        tasks = (await api.get("/tasks", params={"job_id": campaign_id, "limit": 100})).json()["tasks"]
        assert sorted(t["device_id"] for t in tasks) == sorted({t["device_id"] for t in tasks})
        assert len(tasks) == 24 and {t["status"] for t in tasks} == {"succeeded"}
        records = (await api.get(f"/files/{firmware}/downloads", params={"limit": 1000})).json()["downloads"]
        assert sorted(r["device_id"] for r in records) == sorted({r["device_id"] for r in records})
        assert len(records) == 24
        assert all((cpe.sw_version or "") == TARGET for cpe in fleet.devices)
    finally:
        await fleet.stop()
