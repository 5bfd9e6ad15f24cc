"""The simulator's STUN client (simulator/stunmode.py) against the real STUN server (coturn): it
learns its UDPConnectionRequestAddress, reports it with 4 VALUE CHANGE, and takes the UDP connection
request of Annex G only when it is correctly signed, fresh and new."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from acs.stunserver import StunServer
from cwmp.models import CwmpMessage, Inform, ParameterValueStruct, SetParameterValues
from cwmp.session import InformReceived
from cwmp.udp import build_udp_connection_request, parse_udp_address
from cwmp.values import ParameterValue
from simulator.config import FleetSettings
from simulator.device import Device
from simulator.fleet import Fleet
from simulator.miniacs import MiniAcs, eventually, serving

MS = "InternetGatewayDevice.ManagementServer."


def bootstrap_plan(stun_host: str, stun_port: int):  # type: ignore[no-untyped-def]
    """What the ACS does at bootstrap: CR credentials, then STUN on (Annex G)."""

    def plan(inform: Inform) -> list[CwmpMessage]:
        if inform.event[0].event_code != "0 BOOTSTRAP":
            return []
        return [
            SetParameterValues([ParameterValueStruct(MS + "ConnectionRequestUsername", ParameterValue("cr-user")),
                                ParameterValueStruct(MS + "ConnectionRequestPassword", ParameterValue("cr-pass"))],
                               "bootstrap"),
            SetParameterValues([
                ParameterValueStruct(MS + "STUNEnable", ParameterValue("true", "xsd:boolean")),
                ParameterValueStruct(MS + "STUNServerAddress", ParameterValue(stun_host)),
                ParameterValueStruct(MS + "STUNServerPort", ParameterValue(str(stun_port), "xsd:unsignedInt")),
                ParameterValueStruct(MS + "STUNMinimumKeepAlivePeriod", ParameterValue("1", "xsd:unsignedInt")),
            ], "bootstrap"),
        ]

    return plan


@dataclass
class Run:
    acs: MiniAcs
    fleet: Fleet

    @property
    def device(self) -> Device:
        return self.fleet.devices[0]

    def informs(self) -> list[Inform]:
        return [e.inform for e in self.acs.received(InformReceived)]

    def events(self) -> list[list[str]]:
        return [[e.event_code for e in inform.event] for inform in self.informs()]


async def _run(stun_host: str, stun_port: int, **settings: object) -> AsyncIterator[Run]:
    acs = MiniAcs(auth="none", plan=bootstrap_plan(stun_host, stun_port))
    async with serving(acs) as base:
        fleet = Fleet(FleetSettings(acs_url=base + "/", devices=1, periodic_interval=3600, stun=True,
                                    serial_prefix="ST", **settings))  # type: ignore[arg-type]
        await fleet.start()
        try:
            yield Run(acs, fleet)
        finally:
            await fleet.stop()


@pytest.fixture
async def run(stun_server: StunServer) -> AsyncIterator[Run]:
    async for value in _run(stun_server.host, stun_server.port):
        yield value


@pytest.fixture
async def nat_run(stun_server: StunServer) -> AsyncIterator[Run]:
    async for value in _run(stun_server.host, stun_server.port, behind_nat=True):
        yield value


def _reported(inform: Inform) -> dict[str, str]:
    return {p.name: p.value.value for p in inform.parameter_list}


async def _address_reported(run: Run) -> str:
    await eventually(lambda: any(MS + "UDPConnectionRequestAddress" in _reported(i) and
                                 _reported(i)[MS + "UDPConnectionRequestAddress"] for i in run.informs()
                                 if "4 VALUE CHANGE" in [e.event_code for e in i.event]), 15)
    inform = next(i for i in run.informs() if "4 VALUE CHANGE" in [e.event_code for e in i.event])
    return _reported(inform)[MS + "UDPConnectionRequestAddress"]


def _send(address: str, datagram: bytes, copies: int = 1) -> None:
    host, port = parse_udp_address(address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(copies):
            sock.sendto(datagram, (host, port))


async def test_the_device_learns_its_mapped_address_from_coturn_and_reports_it(run: Run) -> None:
    address = await _address_reported(run)
    link = run.fleet.stun[run.device.index]
    # coturn saw the device's UDP connection-request socket itself: no NAT on loopback.
    assert address == f"127.0.0.1:{link.local_address[1]}"
    assert run.device.model.get(MS + "NATDetected") == "false"
    assert link.bindings >= 1 and link.last_error == ""
    # Keep-alive (STUNMinimumKeepAlivePeriod=1): more Binding requests, and no new value change.
    before = link.bindings
    await eventually(lambda: link.bindings > before, 5)
    assert sum("4 VALUE CHANGE" in codes for codes in run.events()) == 1


async def test_a_signed_udp_connection_request_opens_a_session(run: Run) -> None:
    address = await _address_reported(run)
    link = run.fleet.stun[run.device.index]
    await eventually(lambda: run.device.state == "idle" and run.acs.sessions_completed >= 2)
    sessions = len(run.informs())
    host, port = parse_udp_address(address)

    _send(address, build_udp_connection_request(host, port, "cr-user", "wrong-pass"))
    _send(address, build_udp_connection_request(host, port, "someone", "cr-pass"))
    stale = int(time.time()) - 3600
    _send(address, build_udp_connection_request(host, port, "cr-user", "cr-pass", ts=stale))
    await eventually(lambda: len(link.requests) == 3)
    assert link.requests == ["bad signature", "username mismatch", "timestamp outside the accepted window"]
    await asyncio.sleep(0.3)
    assert len(run.informs()) == sessions  # none of those woke it

    now = int(time.time())
    _send(address, build_udp_connection_request(host, port, "cr-user", "cr-pass", ts=now, message_id=7), copies=3)
    await eventually(lambda: len(run.informs()) > sessions)
    assert "6 CONNECTION REQUEST" in run.events()[sessions]
    assert link.requests[3:] == ["accepted"]  # the two copies were ignored
    await eventually(lambda: run.device.state == "idle")
    # A replay (an older ts, a new id) is refused.
    _send(address, build_udp_connection_request(host, port, "cr-user", "cr-pass", ts=now - 1, message_id=8))
    await eventually(lambda: len(link.requests) == 5)
    assert link.requests[4] == "timestamp older than the last accepted request"
    assert run.fleet.metrics.connection_requests["udp accepted"] == 1


async def test_behind_nat_the_device_says_so(nat_run: Run) -> None:
    address = await _address_reported(nat_run)
    reported = _reported(nat_run.informs()[0])
    assert reported[MS + "ConnectionRequestURL"].startswith("http://100.64.0.1:")
    assert address.startswith("127.0.0.1:")
    assert nat_run.device.model.get(MS + "NATDetected") == "true"


async def test_with_the_stun_server_down_no_address_is_learned() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async for run in _run("127.0.0.1", port):
        links = run.fleet.stun
        await eventually(lambda links=links: bool(links) and bool(next(iter(links.values())).last_error), 10)
        link = links[run.device.index]
        assert link.last_error.startswith(f"no answer from the STUN server 127.0.0.1:{port}")
        assert run.device.model.get(MS + "UDPConnectionRequestAddress") == ""
        assert not any("4 VALUE CHANGE" in codes for codes in run.events())
