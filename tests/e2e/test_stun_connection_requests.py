"""UDP connection requests through NAT (Annex G) on the whole ACS (`acs up --external`, bootstrap
giving CPEs the test run's coturn) and simulated CPEs in STUN client mode."""

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
from tests.e2e.test_device_lifecycle import api, bootstrap_ids, eventually, finished, parameters
from tests.e2e.test_device_lifecycle import path as device_path

pytestmark = pytest.mark.e2e
__all__ = ["api"]  # fixtures

MS = "InternetGatewayDevice.ManagementServer."


async def _fleet(stack: Stack, prefix: str, **settings: Any) -> Fleet:
    fleet = Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=1, model="tr098",
                                serial_prefix=prefix + uuid.uuid4().hex[:6].upper(),
                                acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                                periodic_interval=3600, seed=19, **settings))
    await fleet.start()
    return fleet


@pytest.fixture
async def nat_fleet(stack: Stack) -> AsyncIterator[Fleet]:
    """A CPE behind a (simulated) carrier-grade NAT: its HTTP connection-request URL is unreachable."""
    fleet = await _fleet(stack, "SN", stun=True, behind_nat=True)
    try:
        yield fleet
    finally:
        await fleet.stop()


@pytest.fixture
async def silent_fleet(stack: Stack) -> AsyncIterator[Fleet]:
    """A CPE that takes STUNEnable but never reports an address (its STUN server out of reach)."""
    fleet = await _fleet(stack, "SQ")
    try:
        yield fleet
    finally:
        await fleet.stop()


async def _bootstrapped(api: httpx.AsyncClient, cpe: Device) -> dict[str, Any]:
    first = await eventually(lambda: bootstrap_ids(api, cpe))
    task = await eventually(lambda: finished(api, first[0]), seconds=40)
    assert task["status"] == "succeeded", task
    return task  # type: ignore[no-any-return]


async def _udp_address_known(api: httpx.AsyncClient, cpe: Device) -> str | None:
    value = (await parameters(api, cpe)).get(MS + "UDPConnectionRequestAddress", {}).get("value")
    return str(value) if value else None


async def _idle(cpe: Device) -> bool:
    return cpe.state == "idle"


async def _get_uptime(api: httpx.AsyncClient, cpe: Device) -> dict[str, Any]:
    created = await api.post(f"/devices/{device_path(cpe)}/tasks", params={"connection_request": "true"},
                             json={"name": "getParameterValues",
                                   "parameter_names": ["InternetGatewayDevice.DeviceInfo.UpTime"]})
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


async def test_a_task_wakes_a_device_behind_nat_over_udp(api: httpx.AsyncClient, nat_fleet: Fleet) -> None:
    cpe = nat_fleet.device_by_index(0)
    assert cpe is not None
    bootstrap = await _bootstrapped(api, cpe)
    assert bootstrap["result"]["stun"] == "enabled"
    # The 4 VALUE CHANGE Inform carried the address coturn saw.
    address = await eventually(lambda: _udp_address_known(api, cpe))
    link = nat_fleet.stun[cpe.index]
    assert address == f"127.0.0.1:{link.local_address[1]}" and link.bindings >= 1
    assert cpe.model.get(MS + "NATDetected") == "true"
    await eventually(lambda: _idle(cpe))

    created = await _get_uptime(api, cpe)
    woken = created["connection_request"]
    assert (woken["outcome"], woken["transport"]) == ("sent", "udp"), woken
    assert "behind NAT" in woken["detail"] and "UDP first" in woken["detail"]
    task = await eventually(lambda: finished(api, created["id"]))
    assert task["status"] == "succeeded", task
    assert link.requests == ["accepted"]  # one session for the three copies
    assert nat_fleet.metrics.connection_requests.get("accepted", 0) == 0  # HTTP never reached it


async def test_without_a_learned_address_the_request_falls_back_to_http_and_says_why(
        api: httpx.AsyncClient, silent_fleet: Fleet) -> None:
    cpe = silent_fleet.device_by_index(0)
    assert cpe is not None
    bootstrap = await _bootstrapped(api, cpe)
    assert bootstrap["result"]["stun"] == "enabled"
    assert cpe.model.get(MS + "STUNEnable") == "true" and not cpe.model.get(MS + "UDPConnectionRequestAddress")
    await eventually(lambda: _idle(cpe))

    created = await _get_uptime(api, cpe)
    woken = created["connection_request"]
    assert (woken["outcome"], woken["transport"]) == ("ok", "http"), woken
    assert "no UDPConnectionRequestAddress learned although STUN was turned on" in woken["detail"]
    task = await eventually(lambda: finished(api, created["id"]))
    assert task["status"] == "succeeded", task
