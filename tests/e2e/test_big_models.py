"""A big data model against the whole ACS (`acs up --external` on the real servers): a simulated
TR-181 CPE grown to 3,000 parameters (`--parameters`) is walked level by level in bounded plans,
and the walk's parameters, too many for its task document, are read back through the API.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from simulator.config import FleetSettings
from simulator.device import Device
from simulator.fleet import Fleet
from tests.e2e.conftest import Stack
from tests.e2e.test_device_lifecycle import api, bootstrap_ids, discovered, eventually, finished, path, wake

pytestmark = pytest.mark.e2e
__all__ = ["api"]  # fixture

BULK = "Device.X_SIM_Bulk."


@pytest.fixture
async def big_cpe(stack: Stack) -> AsyncIterator[Device]:
    fleet = Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=1, model="tr181", parameters=3000,
                                serial_prefix="BG" + uuid.uuid4().hex[:6].upper(),
                                acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                                periodic_interval=3600, reboot_delay=0.5, seed=4))
    await fleet.start()
    try:
        device = fleet.device_by_index(0)
        assert device is not None
        yield device
    finally:
        await fleet.stop()


async def test_a_walk_of_thousands_of_parameters_is_read_back_whole(api: httpx.AsyncClient, big_cpe: Device) -> None:
    first = await eventually(lambda: bootstrap_ids(api, big_cpe))
    await discovered(api, big_cpe, first[0])
    created = await api.post(f"/devices/{path(big_cpe)}/tasks",
                             json={"name": "getParameterNames", "parameterPath": BULK})
    assert created.status_code == 201, created.text
    await wake(big_cpe)
    task = await eventually(lambda: finished(api, created.json()["id"]), seconds=120)
    assert task["status"] == "succeeded", task
    expected = [n for n in big_cpe.model.get_parameter_names(BULK, False) if not n.name.endswith(".")]
    assert len(expected) > 2000
    result = task["result"]
    assert result["parameters_count"] == len(expected) and result["parameters_stored"]
    assert {p["name"] for p in result["parameters"]} == {n.name for n in expected}
    assert all("value" in p for p in result["parameters"])
    # The task as listed (no expansion) stays small: its parameters are not in its document.
    listed = (await api.get(f"/devices/{path(big_cpe)}/tasks", params={"name": "getParameterNames"})).json()
    assert "parameters" not in listed["tasks"][0]["result"]
