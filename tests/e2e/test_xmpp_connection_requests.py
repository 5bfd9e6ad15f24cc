"""XMPP connection requests (Annex K) on the whole ACS (`acs up --external`, the orchestrator logged
in to the test run's prosody) and a simulated TR-181 CPE in XMPP client mode."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from simulator.config import FleetSettings
from simulator.device import Device
from simulator.fleet import Fleet
from tests.e2e.conftest import Stack
from tests.e2e.test_device_lifecycle import api, bootstrap_ids, discovered, eventually, finished
from tests.e2e.test_device_lifecycle import path as device_path

pytestmark = pytest.mark.e2e
__all__ = ["api"]  # fixtures


@pytest.fixture
async def xmpp_fleet(stack: Stack) -> AsyncIterator[Fleet]:
    fleet = Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=1, model="tr181",
                                serial_prefix="XE" + uuid.uuid4().hex[:6].upper(),
                                acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                                periodic_interval=3600, seed=8, xmpp_server=stack.xmpp_server))
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


async def _jid_known(api: httpx.AsyncClient, cpe: Device) -> bool:
    record = (await api.get(f"/devices/{device_path(cpe)}")).json()
    value = record.get("parameters", {}).get("Device.ManagementServer.ConnReqJabberID", {}).get("value")
    return bool(value)


async def test_a_task_wakes_the_device_over_xmpp(api: httpx.AsyncClient, xmpp_fleet: Fleet) -> None:
    cpe = xmpp_fleet.device_by_index(0)
    assert cpe is not None
    first = await eventually(lambda: bootstrap_ids(api, cpe))
    await discovered(api, cpe, first[0])
    await eventually(lambda: _jid_known(api, cpe))  # the 4 VALUE CHANGE Inform carried the JID
    await eventually(lambda: _idle(cpe))
    created = await api.post(f"/devices/{device_path(cpe)}/tasks", params={"connection_request": "true"},
                             json={"name": "getParameterValues", "parameter_names": ["Device.DeviceInfo.UpTime"]})
    assert created.status_code == 201, created.text
    woken = created.json()["connection_request"]
    assert (woken["outcome"], woken["transport"]) == ("ok", "xmpp"), woken
    task = await eventually(lambda: finished(api, created.json()["id"]))
    assert task["status"] == "succeeded", task
    assert xmpp_fleet.xmpp[cpe.index].requests == ["accepted"]


async def _idle(cpe: Device) -> bool:
    return cpe.state == "idle"
