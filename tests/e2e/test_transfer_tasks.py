"""ScheduleDownload, Get(All)QueuedTransfers, CancelTransfer and ChangeDUState against the whole
ACS (`acs up --external` on the real servers) and a simulated TR-181 CPE: files come from the real
fileserver, the CPE reports with TransferComplete / DUStateChangeComplete in later sessions, and
the deployment units reach the inventory through the SoftwareModules walk that follows."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from simulator.device import Device
from tests.e2e.test_device_lifecycle import api, bootstrap_ids, cpe, discovered, eventually, finished, parameters, wake
from tests.e2e.test_device_lifecycle import path as device_path

pytestmark = pytest.mark.e2e
__all__ = ["api", "cpe"]  # fixtures


async def _ready(api: httpx.AsyncClient, cpe: Device) -> None:
    first = await eventually(lambda: bootstrap_ids(api, cpe))
    await discovered(api, cpe, first[0])


async def _put_file(api: httpx.AsyncClient, name: str, file_type: str) -> None:
    uploaded = await api.put(f"/files/{name}", content=os.urandom(2000), params={"file_type": file_type})
    assert uploaded.status_code == 201, uploaded.text


async def _queue(api: httpx.AsyncClient, cpe: Device, spec: dict[str, Any]) -> str:
    created = await api.post(f"/devices/{device_path(cpe)}/tasks", json=spec)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _ended(api: httpx.AsyncClient, cpe: Device, task_id: str, seconds: float = 30) -> dict[str, Any]:
    await wake(cpe)
    return dict(await eventually(lambda: finished(api, task_id), seconds=seconds))


async def _status_is(api: httpx.AsyncClient, task_id: str, status: str) -> dict[str, Any] | None:
    task = (await api.get(f"/tasks/{task_id}")).json()
    return task if task["status"] == status else None


async def test_a_schedule_download_in_an_open_window_completes_with_transfer_complete(
        api: httpx.AsyncClient, cpe: Device) -> None:
    await _ready(api, cpe)
    name = f"cfg-{cpe.serial}.xml"
    await _put_file(api, name, "3 Vendor Configuration File")
    task_id = await _queue(api, cpe, {"name": "scheduleDownload", "file_name": name,
                                      "time_windows": [{"window_start": 0, "window_end": 120}]})
    task = await _ended(api, cpe, task_id)
    assert task["status"] == "succeeded", task
    assert task["result"]["transfer"]["fault_code"] == 0
    downloads = (await api.get(f"/files/{name}/downloads")).json()["downloads"]
    assert any(d["outcome"] == "completed" and d["bytes_sent"] == 2000 for d in downloads), downloads


async def test_queued_transfers_are_listed_and_a_waiting_one_is_cancelled(
        api: httpx.AsyncClient, cpe: Device) -> None:
    await _ready(api, cpe)
    name = f"late-{cpe.serial}.xml"
    await _put_file(api, name, "3 Vendor Configuration File")
    scheduled = await _queue(api, cpe, {"name": "scheduleDownload", "file_name": name,
                                        "time_windows": [{"window_start": 3600, "window_end": 7200}]})
    await wake(cpe)
    waiting = await eventually(lambda: _status_is(api, scheduled, "pending_completion"))
    key = waiting["command_key"]

    listed = await _ended(api, cpe, await _queue(api, cpe, {"name": "getAllQueuedTransfers"}))
    assert listed["status"] == "succeeded", listed
    assert [(t["command_key"], t["state"], t["is_download"], t["file_type"]) for t in listed["result"]["transfers"]] \
        == [(key, 1, True, "3 Vendor Configuration File")]
    old_style = await _ended(api, cpe, await _queue(api, cpe, {"name": "getQueuedTransfers"}))
    assert old_style["result"]["transfers"] == [{"command_key": key, "state": 1}]

    cancel = await _ended(api, cpe, await _queue(api, cpe, {"name": "cancelTransfer", "command_key": key}))
    assert cancel["status"] == "succeeded", cancel
    # The transfer's own task will get no TransferComplete: it is cancelled, and the CPE's queue is empty.
    gone = await eventually(lambda: _status_is(api, scheduled, "cancelled"))
    assert gone["reason"].startswith("cancelled on the CPE by the cancelTransfer task")
    assert cpe.rt.transfers == []
    again = await _ended(api, cpe, await _queue(api, cpe, {"name": "cancelTransfer", "command_key": key}))
    assert again["status"] == "failed" and again["faults"][-1]["code"] == 9003, again


async def _software_modules_walk(api: httpx.AsyncClient, cpe: Device, after: str) -> dict[str, Any] | None:
    found = (await api.get(f"/devices/{device_path(cpe)}/tasks", params={"limit": 50})).json()["tasks"]
    return next((t for t in found if t["origin"] == "software-modules" and t["created_at"] > after), None)


async def test_change_du_state_installs_then_uninstalls_and_the_inventory_follows(
        api: httpx.AsyncClient, cpe: Device) -> None:
    await _ready(api, cpe)
    name = f"app-{cpe.serial}.ipk"
    await _put_file(api, name, "X SIMCPE Deployment Unit")
    # An unknown file is refused when the task is created.
    unknown = await api.post(f"/devices/{device_path(cpe)}/tasks", json={
        "name": "changeDUState", "operations": [{"type": "install", "file_name": "no-such.ipk"}]})
    assert unknown.status_code == 422, unknown.text

    installed = await _ended(api, cpe, await _queue(api, cpe, {"name": "changeDUState", "operations": [
        {"type": "install", "file_name": name}]}))
    assert installed["status"] == "succeeded", installed
    (op,) = installed["result"]["operations"]
    assert op["current_state"] == "Installed" and op["fault_code"] == 0
    assert op["deployment_unit_ref"] == "Device.SoftwareModules.DeploymentUnit.1"
    assert cpe.model.get("Device.SoftwareModules.DeploymentUnit.1.URL").endswith(f"/download/{name}")

    walk = await eventually(lambda: _software_modules_walk(api, cpe, installed["created_at"]))
    assert walk["args"]["parameter_path"] == "Device.SoftwareModules."
    walked = await _ended(api, cpe, walk["id"])
    assert walked["status"] == "succeeded", walked

    async def recorded() -> bool:
        values = await parameters(api, cpe)
        return str(values.get("Device.SoftwareModules.DeploymentUnit.1.UUID", {}).get("value", "")) == op["uuid"]
    await eventually(recorded)

    removed = await _ended(api, cpe, await _queue(api, cpe, {"name": "changeDUState", "operations": [
        {"type": "uninstall", "uuid": op["uuid"]}]}))
    assert removed["status"] == "succeeded", removed
    assert removed["result"]["operations"][0]["current_state"] == "Uninstalled"
    failed = await _ended(api, cpe, await _queue(api, cpe, {"name": "changeDUState", "operations": [
        {"type": "uninstall", "uuid": op["uuid"]}]}))
    assert failed["status"] == "failed" and failed["faults"][-1]["code"] == 9028, failed


async def _served(api: httpx.AsyncClient, cpe: Device) -> dict[str, Any] | None:
    found = (await api.get(f"/devices/{device_path(cpe)}/tasks", params={"limit": 50})).json()["tasks"]
    return next((t for t in found if t["origin"] == "request-download"), None)


async def test_request_download_is_served_the_newest_catalogued_file_of_its_type(
        api: httpx.AsyncClient, cpe: Device) -> None:
    await _ready(api, cpe)
    file_type = f"X SIMCPE Profile{cpe.serial}"
    await _put_file(api, f"old-{cpe.serial}.prof", file_type)
    await _put_file(api, f"new-{cpe.serial}.prof", file_type)
    cpe.request_download(file_type, {"Version": "2"})  # the simulator opens a session of its own
    task = await eventually(lambda: _served(api, cpe))
    assert (task["name"], task["args"]["file_name"]) == ("download", f"new-{cpe.serial}.prof")
    assert cpe.rt.pending_tcs == []  # answered with RequestDownloadResponse
    done = await _ended(api, cpe, task["id"])
    assert done["status"] == "succeeded" and done["result"]["transfer"]["fault_code"] == 0, done
