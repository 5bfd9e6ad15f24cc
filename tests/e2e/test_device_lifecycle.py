"""A device's record follows the ACS's writes, and deleting a device forgets it: the whole ACS
(`acs up --external` on the real servers) and a simulated TR-181 CPE, seen through the northbound
API and the CPE itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from simulator.config import FleetSettings
from simulator.device import Device, DeviceState
from simulator.fleet import Fleet
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


async def eventually(probe: Callable[[], Awaitable[Any]], seconds: float = 30.0) -> Any:
    async with asyncio.timeout(seconds):
        while True:
            if result := await probe():
                return result
            await asyncio.sleep(0.2)


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.admin_headers, timeout=30) as client:
        yield client


@pytest.fixture
async def cpe(stack: Stack) -> AsyncIterator[Device]:
    """One TR-181 CPE of its own, on the seed's shared account."""
    fleet = Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=1, model="tr181",
                                serial_prefix="LC" + uuid.uuid4().hex[:6].upper(),
                                acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                                periodic_interval=3600, reboot_delay=0.5, seed=2))
    await fleet.start()
    try:
        device = fleet.device_by_index(0)
        assert device is not None
        yield device
    finally:
        await fleet.stop()


def path(cpe: Device) -> str:
    return quote(cpe.id_string, safe="")


async def tasks(api: httpx.AsyncClient, cpe: Device) -> list[dict[str, Any]]:
    return list((await api.get(f"/devices/{path(cpe)}/tasks", params={"limit": 200})).json().get("tasks", []))


async def finished(api: httpx.AsyncClient, task_id: str) -> dict[str, Any] | None:
    task = (await api.get(f"/tasks/{task_id}")).json()
    return task if task["status"] in {"succeeded", "failed", "cancelled", "expired"} else None


async def wake(cpe: Device) -> None:
    """A connection request straight to the CPE, as the orchestrator would send one (without its
    per-device rate limit: three writes in a row would exceed it)."""
    # A CPE still in the session of the last task would answer "busy".
    await eventually(lambda: asyncio.sleep(0, cpe.state == DeviceState.IDLE))
    username, password = cpe.cr_credentials
    async with httpx.AsyncClient(auth=httpx.DigestAuth(username, password)) as client:
        assert (await client.get(cpe.cr_url)).status_code in (200, 204)


async def run_task(api: httpx.AsyncClient, cpe: Device, spec: dict[str, Any]) -> dict[str, Any]:
    created = await api.post(f"/devices/{path(cpe)}/tasks", json=spec)
    assert created.status_code == 201, created.text
    await wake(cpe)
    task = await eventually(lambda: finished(api, created.json()["id"]))
    assert task["status"] == "succeeded", task
    return task


async def parameters(api: httpx.AsyncClient, cpe: Device) -> dict[str, Any]:
    response = await api.get(f"/devices/{path(cpe)}")
    return dict(response.json()["parameters"]) if response.status_code == 200 else {}


async def discovered(api: httpx.AsyncClient, cpe: Device, bootstrap_id: str) -> set[str]:
    """The names the bootstrap discovery read, once they are all in the inventory record."""
    task = await eventually(lambda: finished(api, bootstrap_id), seconds=60)
    assert task["status"] == "succeeded", task
    names = {p["name"] for p in task["result"]["parameters"] if "value" in p}
    assert len(names) > 20

    async def recorded() -> bool:
        return names <= set(await parameters(api, cpe))
    await eventually(recorded)
    return names


async def bootstrap_ids(api: httpx.AsyncClient, cpe: Device) -> list[str]:
    return [t["id"] for t in await tasks(api, cpe) if t["name"] == "bootstrap"]


async def test_each_write_shows_in_the_device_record_without_a_later_read(
        api: httpx.AsyncClient, cpe: Device) -> None:
    first = await eventually(lambda: bootstrap_ids(api, cpe))
    await discovered(api, cpe, first[0])

    await run_task(api, cpe, {"name": "setParameterValues", "parameterValues": [
        {"name": "Device.DeviceInfo.ProvisioningCode", "value": "LC-1"}]})
    await eventually(lambda: _has(api, cpe, "Device.DeviceInfo.ProvisioningCode", "LC-1"))

    added = await run_task(api, cpe, {"name": "addObject", "objectName": "Device.NAT.PortMapping.",
                                      "parameterValues": [{"name": "ExternalPort", "value": "2222",
                                                           "type": "xsd:unsignedInt"}]})
    instance = added["result"]["object"]
    await eventually(lambda: _has(api, cpe, f"{instance}ExternalPort", 2222))
    assert (await parameters(api, cpe))[instance]["object"] is True

    await run_task(api, cpe, {"name": "deleteObject", "objectName": instance})

    async def gone() -> bool:
        return not any(name.startswith(instance) for name in await parameters(api, cpe))
    await eventually(gone)


async def _has(api: httpx.AsyncClient, cpe: Device, name: str, value: Any) -> bool:
    return (await parameters(api, cpe)).get(name, {}).get("value") == value


async def test_a_deleted_device_comes_back_as_a_first_contact_and_its_queued_work_is_dropped(
        api: httpx.AsyncClient, cpe: Device) -> None:
    first = await eventually(lambda: bootstrap_ids(api, cpe))
    before = await discovered(api, cpe, first[0])
    queued = await api.post(f"/devices/{path(cpe)}/tasks", json={"name": "setParameterValues", "parameterValues": [
        {"name": "Device.DeviceInfo.ProvisioningCode", "value": "QUEUED-BEFORE-DELETE"}]})
    assert queued.status_code == 201, queued.text

    assert (await api.delete(f"/devices/{path(cpe)}")).status_code == 204
    assert (await api.get(f"/devices/{path(cpe)}")).status_code == 404
    await eventually(lambda: _status(api, queued.json()["id"], "cancelled"))

    await wake(cpe)  # the ACS no longer knows where to reach it

    # A first contact: bootstrap provisioning and the whole discovery again.
    second = await eventually(lambda: _new_bootstrap(api, cpe, first), seconds=60)
    again = await discovered(api, cpe, second)
    assert again >= before
    task = (await api.get(f"/tasks/{queued.json()['id']}")).json()
    assert task["status"] == "cancelled" and "deleted" in task["reason"]
    assert cpe.values(["Device.DeviceInfo.ProvisioningCode"])[0].value.value != "QUEUED-BEFORE-DELETE"


async def _status(api: httpx.AsyncClient, task_id: str, status: str) -> bool:
    return bool((await api.get(f"/tasks/{task_id}")).json()["status"] == status)


async def _new_bootstrap(api: httpx.AsyncClient, cpe: Device, known: list[str]) -> str | None:
    return next((i for i in await bootstrap_ids(api, cpe) if i not in known), None)
