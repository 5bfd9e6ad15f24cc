"""Self-heal against the whole ACS (`acs up --external` on the real servers) and a simulated TR-181
CPE that answers 9005 for names it does not have: one walk per subtree, a name the walk does not
find fails its task at once, and names of the other data model fail without an RPC.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from simulator.device import Device
from tests.e2e.test_device_lifecycle import api, bootstrap_ids, cpe, discovered, eventually, finished, path, tasks, wake

pytestmark = pytest.mark.e2e
__all__ = ["api", "cpe"]  # fixtures


async def _create(api: httpx.AsyncClient, cpe: Device, spec: dict[str, Any]) -> str:
    created = await api.post(f"/devices/{path(cpe)}/tasks", json=spec)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def test_missing_names_fail_once_their_one_rediscovery_walk_has_not_found_them(
        api: httpx.AsyncClient, cpe: Device) -> None:
    first = await eventually(lambda: bootstrap_ids(api, cpe))
    await discovered(api, cpe, first[0])

    spv = await _create(api, cpe, {"name": "setParameterValues", "parameterValues": [
        {"name": "Device.DeviceInfo.NoSuchThing", "value": "1"}]})
    gpv = await _create(api, cpe, {"name": "getParameterValues",
                                   "parameterNames": ["Device.DeviceInfo.AlsoMissing"]})
    wrong_root = await _create(api, cpe, {"name": "setParameterValues", "parameterValues": [
        {"name": "InternetGatewayDevice.DeviceInfo.ProvisioningCode", "value": "X"}]})
    present = await _create(api, cpe, {"name": "getParameterValues",
                                       "parameterNames": ["Device.DeviceInfo.SoftwareVersion"]})
    await wake(cpe)  # the two missing names fault with 9005 in this session

    async def healer() -> dict[str, Any] | None:
        return next((t for t in await tasks(api, cpe) if t["origin"] == "self-heal"), None)
    heal = await eventually(healer)
    assert heal["args"]["parameter_path"] == "Device.DeviceInfo."
    task = await eventually(lambda: finished(api, wrong_root))
    assert task["status"] == "failed" and task["reason"].startswith("wrong data model root"), task
    assert task["faults"] == [] and task["attempts"] == 1  # never sent
    assert (await eventually(lambda: finished(api, present)))["status"] == "succeeded"

    await wake(cpe)  # the next session walks Device.DeviceInfo. once for both
    for task_id, name in ((spv, "NoSuchThing"), (gpv, "AlsoMissing")):
        task = await eventually(lambda task_id=task_id: finished(api, task_id))  # type: ignore[misc]
        assert (task["status"], task["reason"]) == ("failed", f"no such parameter: Device.DeviceInfo.{name}")
        assert task["attempts"] == 1, task
    heals = [t for t in await tasks(api, cpe) if t["origin"] == "self-heal"]
    assert [(t["args"]["parameter_path"], t["status"]) for t in heals] == [("Device.DeviceInfo.", "succeeded")]
