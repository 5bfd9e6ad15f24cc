"""What third-party CPE agents did, against the whole ACS (`acs up --external`, real servers).

The simulator plays them (options off by default): a Digest client that resends nc=00000001, a
CPE that drops its connection mid-session and comes back with a new Inform, a ProductClass with a
space, and a download agent that pastes its credentials into the URL for wget or curl.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from simulator.config import FleetSettings
from simulator.device import Device
from simulator.fleet import Fleet
from tests.e2e.conftest import Stack
from tests.e2e.test_seed_flows import _software_version, bootstrapped, eventually, path_id, task_done

pytestmark = pytest.mark.e2e


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.admin_headers, timeout=30) as client:
        yield client


@asynccontextmanager
async def agent(stack: Stack, **behaviour: Any) -> AsyncIterator[tuple[Fleet, Device]]:
    """One TR-098 CPE of its own with the given simulator options."""
    fleet = Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=1, model="tr098",
                                serial_prefix="AG" + uuid.uuid4().hex[:6].upper(),
                                acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                                periodic_interval=3600, reboot_delay=0.5, seed=1, **behaviour))
    await fleet.start()
    try:
        device = fleet.device_by_index(0)
        assert device is not None
        yield fleet, device
    finally:
        await fleet.stop()


def failures(fleet: Fleet) -> dict[str, int]:
    return dict(fleet.metrics.summary()["failure_reasons"])


async def test_a_sloppy_digest_agent_with_a_space_in_its_product_class_upgrades_its_firmware(
        api: httpx.AsyncClient, stack: Stack) -> None:
    """nc=00000001 on every request; the minted download credentials pasted into the URL."""
    async with agent(stack, product_class="easy cwmp", digest_reuse_nc=True, credentials_in_url=True) as (fleet, cpe):
        assert cpe.id_string == f"00D09E-easy%20cwmp-{cpe.serial}"
        await eventually(lambda: bootstrapped(api, cpe), seconds=60)
        image = os.urandom(50_000)
        name = f"fw-{cpe.serial}-4.0.1.bin"
        uploaded = await api.put(f"/files/{name}", content=image,
                                 params={"file_type": "1 Firmware Upgrade Image", "version": "4.0.1"})
        assert uploaded.status_code == 201, uploaded.text
        created = await api.post(f"/devices/{path_id(cpe)}/tasks", params={"connection_request": "true"},
                                 json={"name": "download", "fileName": name})
        assert created.status_code in (200, 201), created.text
        task = await eventually(lambda: task_done(api, created.json()["id"]), seconds=60)
        assert task["status"] == "succeeded", task
        assert task["result"]["transfer"]["fault_code"] == 0
        await eventually(lambda: _software_version(api, cpe, "4.0.1"))
        assert failures(fleet) == {}  # no 401, no 400 "no session", no throttling
    downloads = (await api.get(f"/files/{name}/downloads")).json()["downloads"]
    assert [d["outcome"] for d in downloads] == ["completed"]
    assert downloads[0]["device_id"] == cpe.id_string


async def test_an_agent_that_drops_mid_session_starts_over_at_once_and_its_task_keeps_the_books(
        api: httpx.AsyncClient, stack: Stack) -> None:
    """Its first session's bootstrap RPC goes unanswered and the CPE comes back with a new Inform
    on a new connection: that session starts at once (no 503 until the idle timeout), and the
    orchestrator settles the dropped one from the gateway's account, as any dropped session: the
    RPC was sent and never answered, so the attempt counts and the task retries after its backoff."""
    async with agent(stack, drop_mid_session=1, ignore_cookies=True) as (fleet, cpe):
        await eventually(lambda: _async(len(fleet.metrics.records) >= 2), seconds=30)
        dropped, after = list(fleet.metrics.records)[:2]
        tasks = (await api.get(f"/devices/{path_id(cpe)}/tasks")).json()["tasks"]
    assert (dropped.ok, after.ok) == (False, True), after.reason
    assert dropped.reason.startswith("dropped mid-session") and after.retry_count == 1
    assert after.start - dropped.end < 5  # not the 30 s of ACS_SESSION_IDLE_TIMEOUT
    [bootstrap] = [t for t in tasks if t["name"] == "bootstrap"]
    assert (bootstrap["status"], bootstrap["attempts"]) == ("pending", 1), bootstrap
    assert bootstrap["faults"][-1]["string"] == "session ended (dropped) before the CPE answered SetParameterValues"
    record = (await api.get(f"/devices/{path_id(cpe)}")).json()
    assert record["id"] == cpe.id_string


async def _async(value: bool) -> bool:
    return value
