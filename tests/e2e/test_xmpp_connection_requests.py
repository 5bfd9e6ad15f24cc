"""XMPP connection requests (Annex K) on the whole ACS (`acs up --external`, the orchestrator logged
in to the test run's prosody) and a simulated TR-181 CPE in XMPP client mode."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from services.orchestrator import cpecreds
from services.orchestrator import provisioning as prov
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
    await _woken_over_xmpp(api, cpe)
    assert xmpp_fleet.xmpp[cpe.index].requests == ["accepted"]


async def _woken_over_xmpp(api: httpx.AsyncClient, cpe: Device) -> None:
    """A task created with a connection request goes out over XMPP and runs."""
    await eventually(lambda: _idle(cpe))
    created = await api.post(f"/devices/{device_path(cpe)}/tasks", params={"connection_request": "true"},
                             json={"name": "getParameterValues", "parameter_names": ["Device.DeviceInfo.UpTime"]})
    assert created.status_code == 201, created.text
    woken = created.json()["connection_request"]
    assert (woken["outcome"], woken["transport"]) == ("ok", "xmpp"), woken
    task = await eventually(lambda: finished(api, created.json()["id"]))
    assert task["status"] == "succeeded", task


async def _idle(cpe: Device) -> bool:
    return cpe.state == "idle"


@pytest.fixture
async def provisioned_fleet(stack: Stack) -> AsyncIterator[Fleet]:
    """One TR-181 CPE without an XMPP account: it logs in with the one its bootstrap sets."""
    fleet = Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=1, model="tr181",
                                serial_prefix="XP" + uuid.uuid4().hex[:6].upper(),
                                acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                                periodic_interval=3600, seed=9, xmpp_provisioned=True))
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


async def test_bootstrap_provisions_the_account_and_a_task_wakes_the_device_over_it(
        api: httpx.AsyncClient, provisioned_fleet: Fleet, stack: Stack) -> None:
    cpe = provisioned_fleet.device_by_index(0)
    assert cpe is not None
    assert provisioned_fleet.xmpp == {}  # no account yet: nothing to log in with
    first = await eventually(lambda: bootstrap_ids(api, cpe))
    bootstrap = await eventually(lambda: finished(api, first[0]), seconds=60)
    assert bootstrap is not None and bootstrap["status"] == "succeeded", bootstrap
    assert bootstrap["result"]["xmpp"] == "provisioned"

    # The CPE logged in with what bootstrap set, and its JID came in a 4 VALUE CHANGE Inform.
    await eventually(lambda: _jid_known(api, cpe))
    link = provisioned_fleet.xmpp[cpe.index]
    domain = stack.env["ACS_XMPP_JID"].partition("@")[2]
    assert link.account.jid == f"{prov.xmpp_username(cpe.id_string)}@{domain}"
    assert link.account.connection == "Device.XMPP.Connection.1."
    assert link.account.host == stack.xmpp_server.rpartition(":")[0]
    model = cpe.model
    assert model.get("Device.XMPP.Connection.1.Server.1.Port") == stack.xmpp_server.rpartition(":")[2]
    assert model.get("Device.ManagementServer.ConnReqAllowedJabberIDs") == stack.env["ACS_XMPP_JID"]

    # The account's password is derived, and shown nowhere.
    password = cpecreds.derive_xmpp_password(stack.env["ACS_SECRET_KEY"], cpe.id_string)
    assert link.account.password == password
    record = await api.get(f"/devices/{device_path(cpe)}")
    device_tasks = await api.get(f"/devices/{device_path(cpe)}/tasks")
    assert password not in record.text and password not in device_tasks.text

    await _woken_over_xmpp(api, cpe)
    assert link.requests == ["accepted"]
