"""The work-due marker (issue 21), from the outside: the whole ACS and a simulated CPE.

Once the orchestrator found nothing due for a device, the gateway ends its routine periodic
sessions itself (the Inform still reaches the inventory); a task created between two sessions
must still run at the very next Inform.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from simulator.config import FleetSettings
from simulator.device import Device
from simulator.fleet import Fleet
from tests.e2e.conftest import Stack
from tests.e2e.test_seed_flows import bootstrapped, device, eventually, path_id, task_done

pytestmark = pytest.mark.e2e

__all__ = ["api"]  # fixture


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.admin_headers, timeout=30) as client:
        yield client


@pytest.fixture
async def one_cpe(stack: Stack) -> AsyncIterator[Fleet]:
    fleet = Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=1, model="tr181",
                                serial_prefix="WD" + uuid.uuid4().hex[:6].upper(),
                                acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                                periodic_interval=3600, seed=3))
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


def periodic_now(fleet: Fleet, cpe: Device) -> None:
    """The device's periodic timer fires now (its interval is the ACS's 300 s)."""
    cpe.periodic_due = fleet.settings.clock()
    fleet._wake(cpe, cpe.periodic_due)


async def routine_sessions(stack: Stack) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{stack.env['ACS_GATEWAY_ADMIN_PORT']}/metrics")).text
    found = re.search(r"^acs_gateway_routine_sessions_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def one_more_session(fleet: Fleet, cpe: Device) -> None:
    done = fleet.metrics.sessions_ok
    periodic_now(fleet, cpe)

    async def ended() -> bool:
        return fleet.metrics.sessions_ok > done

    await eventually(ended)


async def test_a_task_created_between_sessions_runs_at_the_next_inform(
        api: httpx.AsyncClient, one_cpe: Fleet, stack: Stack) -> None:
    cpe = device(one_cpe, 0)
    await eventually(lambda: bootstrapped(api, cpe))
    # Provisioning may take a session or two more; then a periodic session with nothing due.
    for _ in range(5):
        before = await routine_sessions(stack)
        await one_more_session(one_cpe, cpe)
        if await routine_sessions(stack) > before:
            break
    else:
        pytest.fail("the gateway never ended a routine session itself")
    async def last_inform() -> str | None:
        # The inventory consumes the Informs on its own and may not have the device yet (under load).
        found = await api.get(f"/devices/{path_id(cpe)}")
        return found.json().get("last_inform") if found.status_code == 200 else None

    informed = await eventually(last_inform)

    # The next routine session ends at the gateway too, and the inventory still hears of it.
    before = await routine_sessions(stack)
    await one_more_session(one_cpe, cpe)
    assert await routine_sessions(stack) == before + 1

    async def inventory_saw_it() -> bool:
        return (await last_inform() or "") > informed

    await eventually(inventory_saw_it)

    # Between sessions: a task, no connection request. The next Inform must run it.
    created = await api.post(f"/devices/{path_id(cpe)}/tasks", json={
        "name": "setParameterValues",
        "parameterValues": [{"name": "Device.DeviceInfo.ProvisioningCode", "value": "WORK-DUE"}]})
    assert created.status_code == 201, created.text
    before = await routine_sessions(stack)
    await one_more_session(one_cpe, cpe)
    task = await eventually(lambda: task_done(api, created.json()["id"]))
    assert task["status"] == "succeeded", task
    assert cpe.values(["Device.DeviceInfo.ProvisioningCode"])[0].value.value == "WORK-DUE"
    assert await routine_sessions(stack) == before  # that session went to the orchestrator
    assert one_cpe.metrics.sessions_failed == 0
