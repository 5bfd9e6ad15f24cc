"""The seed's flows from the outside: the whole ACS (four services, router, real Kafka, MongoDB and
S3) and simulated CPEs, checked only through the northbound API and the CPEs themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from simulator.config import FleetSettings
from simulator.device import Device
from simulator.fleet import Fleet
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


async def eventually(probe: Callable[[], Awaitable[Any]], seconds: float = 30.0) -> Any:
    """Poll ``probe`` until it returns something truthy."""
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
async def fleet(stack: Stack) -> AsyncIterator[Fleet]:
    """Two CPEs of their own (TR-098 at index 0, TR-181 at index 1) using the seed's shared account."""
    fleet = Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=2, model="mixed",
                                serial_prefix="E2E" + uuid.uuid4().hex[:6].upper(),
                                acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                                periodic_interval=3600, reboot_delay=0.5, seed=1))
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


def device(fleet: Fleet, index: int) -> Device:
    found = fleet.device_by_index(index)
    assert found is not None
    return found


def path_id(cpe: Device) -> str:
    return quote(cpe.id_string, safe="")


async def task_done(api: httpx.AsyncClient, task_id: str) -> dict[str, Any] | None:
    task = (await api.get(f"/tasks/{task_id}")).json()
    return task if task["status"] in {"succeeded", "failed", "cancelled", "expired"} else None


async def bootstrapped(api: httpx.AsyncClient, cpe: Device) -> dict[str, Any] | None:
    """The CPE's succeeded bootstrap task, once the CPE is out of that session too: the task
    succeeds with its last answer, and a connection request sent before the session ends gets
    "busy" (the task would then wait for the next periodic Inform, an hour away)."""
    if cpe.state != "idle":
        return None
    tasks = (await api.get(f"/devices/{path_id(cpe)}/tasks")).json().get("tasks", [])
    return next((t for t in tasks if t["name"] == "bootstrap" and t["status"] == "succeeded"), None)


async def test_bootstrap_sets_connection_request_credentials_and_discovers_the_model(
        api: httpx.AsyncClient, fleet: Fleet, stack: Stack) -> None:
    for index, root in ((0, "InternetGatewayDevice."), (1, "Device.")):
        cpe = device(fleet, index)
        task = await eventually(lambda cpe=cpe: bootstrapped(api, cpe))
        assert task["result"]["data_model"] == root
        # The CPE now holds unique random connection-request credentials set by the ACS.
        username, password = cpe.cr_credentials
        assert username and password and password != f"cr-{cpe.serial}"
        interval = cpe.values([f"{root}ManagementServer.PeriodicInformInterval"])[0].value.value
        assert interval == stack.env["ACS_PERIODIC_INFORM_INTERVAL"]
        # Discovery lands in inventory, which consumes the same answers on its own (so a moment
        # after the orchestrator's task): the device, with parameters read by GetParameterValues.
        async def recorded(cpe: Device = cpe) -> dict[str, Any] | None:
            response = await api.get(f"/devices/{path_id(cpe)}")
            return response.json() if response.status_code == 200 else None

        record = await eventually(recorded)
        assert record["oui"] == "00D09E" and record["serial_number"] == cpe.serial
        assert record["connection_request_url"] == cpe.cr_url
        query = {"q": f'{{"{root}DeviceInfo.SerialNumber": "{cpe.serial}"}}',
                 "fields": f"{root}DeviceInfo.HardwareVersion"}

        async def found(query: dict[str, str] = query) -> list[dict[str, Any]]:
            return list((await api.get("/devices", params=query)).json()["devices"])

        assert [d["id"] for d in await eventually(found)] == [cpe.id_string]


async def test_rest_task_runs_after_a_connection_request(api: httpx.AsyncClient, fleet: Fleet) -> None:
    cpe = device(fleet, 1)
    await eventually(lambda: bootstrapped(api, cpe))
    created = await api.post(f"/devices/{path_id(cpe)}/tasks", params={"connection_request": "true"},
                             json={"name": "setParameterValues", "parameterValues": [
                                 {"name": "Device.DeviceInfo.ProvisioningCode", "value": "E2E-CODE"}]})
    assert created.status_code in (200, 201), created.text
    assert created.json()["connection_request"]["outcome"] == "ok"
    task = await eventually(lambda: task_done(api, created.json()["id"]))
    assert task["status"] == "succeeded", task
    assert cpe.values(["Device.DeviceInfo.ProvisioningCode"])[0].value.value == "E2E-CODE"


async def test_cpe_fault_surfaces_on_the_task(api: httpx.AsyncClient, fleet: Fleet) -> None:
    cpe = device(fleet, 1)
    await eventually(lambda: bootstrapped(api, cpe))
    created = await api.post(f"/devices/{path_id(cpe)}/tasks", params={"connection_request": "true"},
                             json={"name": "setParameterValues", "parameterValues": [
                                 {"name": "Device.DeviceInfo.SerialNumber", "value": "forged"}]})
    task = await eventually(lambda: task_done(api, created.json()["id"]))
    assert task["status"] == "failed", task
    fault = task["faults"][-1]
    assert fault["code"] == 9003
    assert "9008" in str(fault) or "Device.DeviceInfo.SerialNumber" in str(fault)


async def test_firmware_upgrade_from_upload_to_new_version(api: httpx.AsyncClient, fleet: Fleet,
                                                           stack: Stack) -> None:
    cpe = device(fleet, 0)
    await eventually(lambda: bootstrapped(api, cpe))
    image = os.urandom(200_000)
    name = f"fw-{cpe.serial}-3.1.0.bin"
    uploaded = await api.put(f"/files/{name}", content=image,
                             params={"file_type": "1 Firmware Upgrade Image", "version": "3.1.0"})
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["sha256"] == hashlib.sha256(image).hexdigest()
    # Without the credentials minted for a Download, the file server refuses the CPE.
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(f"{stack.downloads_url}/download/{name}")).status_code == 401

    created = await api.post(f"/devices/{path_id(cpe)}/tasks", params={"connection_request": "true"},
                             json={"name": "download", "fileName": name})
    assert created.status_code in (200, 201), created.text
    task = await eventually(lambda: task_done(api, created.json()["id"]), seconds=60)
    assert task["status"] == "succeeded", task
    assert task["result"]["transfer"]["fault_code"] == 0  # TransferComplete after the reboot
    record = await eventually(lambda: _software_version(api, cpe, "3.1.0"))
    assert record["software_version"] == "3.1.0"
    downloads = (await api.get(f"/files/{name}/downloads")).json()
    assert any(d["outcome"] == "completed" and d["bytes_sent"] == len(image) for d in downloads["downloads"])


async def _software_version(api: httpx.AsyncClient, cpe: Device, version: str) -> dict[str, Any] | None:
    record = (await api.get(f"/devices/{path_id(cpe)}")).json()
    return record if record.get("software_version") == version else None


async def _inform_as(stack: Stack, cpe: Device, username: str, password: str) -> int:
    """The status of an Inform with ``cpe``'s DeviceId sent with the given ACS credentials."""
    from cwmp.codec import build_envelope
    from cwmp.digest import DigestClient

    body = build_envelope(cpe.build_inform(stack.gateway_url + "/"), cwmp_ns="urn:dslforum-org:cwmp-1-0",
                          cwmp_id="imp-1")
    headers = {"content-type": "text/xml; charset=utf-8"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        challenge = await client.post("/", content=body, headers=headers)
        assert challenge.status_code == 401
        authorization = DigestClient(username, password).authorization(
            "POST", "/", challenge.headers["www-authenticate"])
        response = await client.post("/", content=body, headers={**headers, "authorization": authorization})
        if response.status_code == 200:
            assert (await client.post("/", content=b"")).status_code in (200, 204)
        return response.status_code


async def test_bootstrap_gives_each_device_its_own_acs_credentials_and_the_shared_pair_no_longer_speaks_for_it(
        api: httpx.AsyncClient, fleet: Fleet, stack: Stack) -> None:
    for index in (0, 1):  # TR-098 and TR-181: ManagementServer.Username/Password of either root
        cpe = device(fleet, index)
        task = await eventually(lambda cpe=cpe: bootstrapped(api, cpe))
        assert task["result"].get("cpe_credentials") == "set", task["result"]
        # The simulator took them from the SetParameterValues and uses them from its next session.
        username, password = cpe.acs_credentials
        assert username == cpe.id_string and len(password) >= 24 and password != stack.cpe_password

        async def active(cpe: Device = cpe, password: str = password) -> list[dict[str, Any]]:
            listed = await api.get("/credentials", params={"device_id": cpe.id_string})
            assert password not in listed.text
            return [c for c in listed.json()["credentials"] if c["state"] == "active"]

        (entry,) = await eventually(active)
        assert (entry["username"], entry["source"]) == (cpe.id_string, "bootstrap")

        async def record(cpe: Device = cpe) -> dict[str, Any] | None:  # the inventory may lag a moment
            response = await api.get(f"/devices/{path_id(cpe)}")
            return response.json() if response.status_code == 200 else None

        assert (await eventually(record))["cpe_credentials"] is True
        # Someone with the shared pair and this DeviceId (an 0 BOOTSTRAP, say) is refused...
        assert await _inform_as(stack, cpe, stack.cpe_username, stack.cpe_password) == 401
        # ...while the device itself, with its own pair, goes on (a task over a connection request).
        created = await api.post(f"/devices/{path_id(cpe)}/tasks", params={"connection_request": "true"},
                                 json={"name": "getRPCMethods"})
        assert created.status_code == 201, created.text
        done = await eventually(lambda created=created: task_done(api, created.json()["id"]))
        assert done["status"] == "succeeded", done


async def test_a_fleet_run_again_remembers_the_credentials_its_devices_were_given(
        api: httpx.AsyncClient, stack: Stack, tmp_path: Any) -> None:
    """`acs sim` run twice against one ACS: the second run's devices inform with their own pair.

    Without a memory they would come back with the shared pair, which the ACS refuses for a
    device that has its own: every re-run of the documented example would fail with 401.
    """
    settings = FleetSettings(acs_url=stack.gateway_url + "/", devices=2, model="mixed",
                             serial_prefix="MEM" + uuid.uuid4().hex[:6].upper(),
                             acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                             periodic_interval=3600, seed=1, memory_file=str(tmp_path / "sim-memory.json"))
    first = Fleet(settings)
    await first.start()
    try:
        for index in (0, 1):
            await eventually(lambda index=index: bootstrapped(api, device(first, index)))
        own = {d.id_string: d.acs_credentials for d in first.devices}
    finally:
        await first.stop()
    assert all(password != stack.cpe_password for _, password in own.values())
    assert os.stat(settings.memory_file).st_mode & 0o077 == 0  # it holds passwords

    again = Fleet(settings)
    recalled: dict[str, tuple[str, str]] = {}
    summary = await again.run(4.0, report_every=60, on_start=lambda: recalled.update(
        {d.id_string: d.acs_credentials for d in again.devices}))
    assert recalled == own
    assert summary["sessions_failed"] == 0 and summary["sessions_ok"] >= 2, summary
    assert summary["events"].get("0 BOOTSTRAP", 0) == 0 and summary["events"]["1 BOOT"] >= 2, summary
