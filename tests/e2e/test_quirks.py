"""Per-vendor quirks from the outside (issue 19): an entry made through /api/v1/quirks changes what
the whole ACS does for the devices it matches, and nothing for the others.

Two simulated CPEs with the same habits (only 1/0 booleans, no GetParameterNames NextLevel=true);
the entry matches the ProductClass of one of them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from simulator.config import FleetSettings
from simulator.fleet import Fleet
from tests.e2e.conftest import Stack
from tests.e2e.test_seed_flows import bootstrapped, device, eventually, path_id, task_done

pytestmark = pytest.mark.e2e

__all__ = ["api"]  # fixture

TAG = uuid.uuid4().hex[:6].upper()
QUIRKY = f"Quirky {TAG}"
PLAIN = f"Plain {TAG}"


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.admin_headers, timeout=30) as client:
        yield client


def cpe_fleet(stack: Stack, product_class: str, prefix: str, **habits: object) -> Fleet:
    return Fleet(FleetSettings(acs_url=stack.gateway_url + "/", devices=1, model="tr181",
                               serial_prefix=prefix + TAG, product_class=product_class,
                               acs_username=stack.cpe_username, acs_password=stack.cpe_password,
                               periodic_interval=3600, seed=5, **habits))  # type: ignore[arg-type]


async def test_an_entry_changes_the_matching_devices_only(api: httpx.AsyncClient, stack: Stack) -> None:
    created = await api.post("/quirks", json={
        "name": f"quirky-{TAG}", "match": {"product_class": QUIRKY},
        "quirks": {"boolean_style": "numeric", "gpn_next_level": False}})
    assert created.status_code == 201, created.text
    await asyncio.sleep(3)  # ACS_QUIRKS_REFRESH_SECONDS (2 s): every gateway has read it now

    quirky = cpe_fleet(stack, QUIRKY, "QK", bool_style="numeric", gpn_next_level=False)
    plain = cpe_fleet(stack, PLAIN, "PL", gpn_next_level=False)
    await quirky.start()
    await plain.start()
    try:
        q_cpe, p_cpe = device(quirky, 0), device(plain, 0)
        # The bootstrap sets PeriodicInformEnable (xsd:boolean): as 1 for the quirky CPE, which
        # refuses "true" with 9007; so its bootstrap succeeding shows the literal style applied.
        await eventually(lambda: bootstrapped(api, q_cpe), seconds=40)
        await eventually(lambda: bootstrapped(api, p_cpe), seconds=40)
        assert q_cpe.values(["Device.ManagementServer.PeriodicInformEnable"])[0].value.value == "true"

        # A walk: level by level (NextLevel=true) unless the quirks say the CPE cannot do it.
        tasks = {}
        for name, cpe in (("quirky", q_cpe), ("plain", p_cpe)):
            task = await api.post(f"/devices/{path_id(cpe)}/tasks?connection_request=true", json={
                "name": "getParameterNames", "parameterPath": "Device.DeviceInfo."})
            assert task.status_code in (200, 201, 202), task.text
            tasks[name] = task.json()["id"]
        done_q = await eventually(lambda: task_done(api, tasks["quirky"]), seconds=40)
        done_p = await eventually(lambda: task_done(api, tasks["plain"]), seconds=40)
        assert done_q["status"] == "succeeded", done_q
        assert any("SoftwareVersion" in str(p) for p in done_q["result"].get("parameters", [])), done_q["result"]
        assert done_p["status"] != "succeeded", done_p  # 9003 from a CPE asked with NextLevel=true
        assert quirky.metrics.sessions_failed == 0
    finally:
        await quirky.stop()
        await plain.stop()
        await api.delete(f"/quirks/{created.json()['id']}")
