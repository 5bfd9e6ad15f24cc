"""Reboot and FactoryReset against the whole ACS (`acs up --external` on the real servers) and a
simulated TR-181 CPE that really reboots (1 BOOT + M Reboot) or resets (0 BOOTSTRAP): the task
succeeds when the device is back, and fails after ACS_REBOOT_TIMEOUT (8 s in the e2e stack) when it
is not.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from simulator.config import FleetSettings
from simulator.device import Device
from simulator.fleet import Fleet
from tests.e2e.conftest import Stack
from tests.e2e.test_device_lifecycle import api, bootstrap_ids, cpe, discovered, eventually, finished, path, wake

pytestmark = pytest.mark.e2e
__all__ = ["api", "cpe"]  # fixtures


async def _status(api: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    return dict((await api.get(f"/tasks/{task_id}")).json())


async def _run(api: httpx.AsyncClient, cpe: Device, name: str) -> tuple[str, list[str]]:
    """Queue ``name``, wake the CPE, and record the statuses the task went through."""
    created = await api.post(f"/devices/{path(cpe)}/tasks", json={"name": name})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    seen: list[str] = []

    async def ended() -> dict[str, Any] | None:
        task = await _status(api, task_id)
        if not seen or seen[-1] != task["status"]:
            seen.append(task["status"])
        return await finished(api, task_id)
    await wake(cpe)
    await eventually(ended, seconds=60)
    return task_id, seen


async def test_a_reboot_succeeds_when_the_device_is_back_with_its_command_key(
        api: httpx.AsyncClient, cpe: Device) -> None:
    first = await eventually(lambda: bootstrap_ids(api, cpe))
    await discovered(api, cpe, first[0])
    boots = cpe.boot_time
    task_id, seen = await _run(api, cpe, "reboot")
    task = await _status(api, task_id)
    assert task["status"] == "succeeded", task
    assert "pending_completion" in seen, seen  # waited for the device after RebootResponse
    assert cpe.boot_time != boots  # the simulator did reboot
    assert task["result"]["command_key"] == task["command_key"]
    assert {"1 BOOT", "M Reboot"} <= set(task["result"]["events"])


async def test_a_factory_reset_succeeds_on_the_bootstrap_that_follows(api: httpx.AsyncClient, cpe: Device) -> None:
    first = await eventually(lambda: bootstrap_ids(api, cpe))
    await discovered(api, cpe, first[0])
    task_id, seen = await _run(api, cpe, "factoryReset")
    task = await _status(api, task_id)
    assert task["status"] == "succeeded", task
    assert "pending_completion" in seen, seen
    assert "0 BOOTSTRAP" in task["result"]["events"]
    # The reset device is provisioned afresh.
    await eventually(lambda: _new_bootstrap(api, cpe, first), seconds=60)


async def _new_bootstrap(api: httpx.AsyncClient, cpe: Device, known: list[str]) -> bool:
    return any(i not in known for i in await bootstrap_ids(api, cpe))


@pytest.fixture
async def slow_cpe(stack: Stack) -> AsyncIterator[Device]:
    """A CPE that stays away for a minute after a reboot, far beyond the stack's reboot timeout."""
    fleet = Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=1, model="tr181",
                                serial_prefix="RB" + uuid.uuid4().hex[:6].upper(),
                                acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                                periodic_interval=3600, reboot_delay=60, seed=3))
    await fleet.start()
    try:
        device = fleet.device_by_index(0)
        assert device is not None
        yield device
    finally:
        await fleet.stop()


async def test_a_reboot_the_device_does_not_come_back_from_fails_after_the_timeout(
        api: httpx.AsyncClient, slow_cpe: Device) -> None:
    first = await eventually(lambda: bootstrap_ids(api, slow_cpe))
    await discovered(api, slow_cpe, first[0])
    task_id, seen = await _run(api, slow_cpe, "reboot")
    task = await _status(api, task_id)
    assert "pending_completion" in seen, seen
    assert task["status"] == "failed", task
    assert task["reason"].startswith("the device did not come back"), task
