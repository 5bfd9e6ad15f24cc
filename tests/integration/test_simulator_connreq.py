"""Connection requests to simulated CPEs: Digest verification, 503 when busy, prompt session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from cwmp.digest import DigestClient, basic_authorization, parse_challenge
from cwmp.models import Inform, ParameterValueStruct, SetParameterValues
from cwmp.session import InformReceived
from cwmp.values import ParameterValue
from simulator.config import FleetSettings
from simulator.device import DeviceState
from simulator.fleet import Fleet
from simulator.miniacs import MiniAcs, eventually, serving


async def connection_request(url: str, username: str, password: str) -> httpx.Response:
    """What an ACS does: GET, answer the Digest challenge, GET again (A5)."""
    async with httpx.AsyncClient() as client:
        first = await client.get(url)
        if first.status_code != 401:
            return first
        challenge = parse_challenge(first.headers.get_list("www-authenticate"), allow_basic=False)
        authorization = DigestClient(username, password).authorization(
            "GET", httpx.URL(url).raw_path.decode(), challenge)
        return await client.get(url, headers={"Authorization": authorization})


def events_of(acs: MiniAcs) -> list[list[str]]:
    return [[e.event_code for e in ev.inform.event] for ev in acs.received(InformReceived)]


class Gate:
    """ASGI wrapper that can hold every CWMP POST, to keep a session open on purpose."""

    def __init__(self, app: MiniAcs) -> None:
        self.app = app
        self.open = asyncio.Event()
        self.open.set()

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http":
            await self.open.wait()
        await self.app(scope, receive, send)


async def test_connection_request_with_right_and_wrong_credentials() -> None:
    acs = MiniAcs(auth="none")
    async with serving(acs) as base:
        fleet = Fleet(FleetSettings(acs_url=base + "/", devices=3, model="mixed", periodic_interval=3600,
                                    serial_prefix="CR", seed=2))
        await fleet.start()
        try:
            await eventually(lambda: acs.sessions_completed >= 3)
            device = fleet.device_by_index(1)
            assert device is not None
            url = device.cr_url
            assert url == f"{fleet.settings.cr_base_url}/1"
            # The URL the device reports is the one it listens on.
            informs = [e.inform for e in acs.received(InformReceived) if e.inform.device_id.serial_number == "CR000001"]
            reported = {p.name: p.value.value for p in informs[0].parameter_list}
            assert reported["Device.ManagementServer.ConnectionRequestURL"] == url

            wrong = await connection_request(url, "CR000001", "not-the-password")
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Digest")
            async with httpx.AsyncClient() as client:
                basic = await client.get(url, headers={"Authorization": basic_authorization("CR000001", "cr-CR000001")})
            assert basic.status_code == 401  # Basic is refused for connection requests (A5)
            await asyncio.sleep(0.2)
            assert len(events_of(acs)) == 3  # no session for the refused attempts

            started = time.monotonic()
            right = await connection_request(url, "CR000001", "cr-CR000001")
            assert right.status_code == 200 and right.content == b""
            await eventually(lambda: len(events_of(acs)) == 4)
            assert time.monotonic() - started < 1.0
            assert events_of(acs)[-1] == ["6 CONNECTION REQUEST"]
            unknown = await connection_request(f"{fleet.settings.cr_base_url}/99", "x", "y")
            assert unknown.status_code == 404
        finally:
            await fleet.stop()
    assert fleet.metrics.connection_requests == {"unauthorized": 4, "accepted": 1, "unknown device": 1}


async def test_busy_device_answers_503_and_credentials_follow_the_data_model() -> None:
    ms = "InternetGatewayDevice.ManagementServer."

    def plan(inform: Inform) -> list:  # type: ignore[type-arg]
        if inform.event[0].event_code != "0 BOOTSTRAP":
            return []
        # What an ACS does at bootstrap (S2): provision unique connection-request credentials.
        return [SetParameterValues([
            ParameterValueStruct(ms + "ConnectionRequestUsername", ParameterValue("acs-made-user")),
            ParameterValueStruct(ms + "ConnectionRequestPassword", ParameterValue("acs-made-pass")),
        ], "bootstrap")]

    acs = MiniAcs(auth="none", plan=plan)
    gate = Gate(acs)
    async with serving(gate) as base:
        fleet = Fleet(FleetSettings(acs_url=base + "/", devices=1, periodic_interval=3600))
        await fleet.start()
        try:
            await eventually(lambda: acs.sessions_completed >= 1)
            device = fleet.devices[0]
            old = await connection_request(device.cr_url, "SIM000000", "cr-SIM000000")
            assert old.status_code == 401  # the factory credentials were replaced
            gate.open.clear()  # the next session will hang in the ACS
            ok = await connection_request(device.cr_url, "acs-made-user", "acs-made-pass")
            assert ok.status_code == 200
            await eventually(lambda: device.state == DeviceState.SESSION)
            busy = await connection_request(device.cr_url, "acs-made-user", "acs-made-pass")
            assert busy.status_code == 503
            gate.open.set()
            await eventually(lambda: acs.sessions_completed >= 2 and device.state == DeviceState.IDLE)
        finally:
            await fleet.stop()
    assert [e[0] for e in events_of(acs)] == ["0 BOOTSTRAP", "6 CONNECTION REQUEST"]
    assert fleet.metrics.connection_requests["busy"] == 1
