"""XMPP connection requests (TR-069 Annex K) through a real XMPP server (prosody): the
orchestrator's requester asks, a simulated CPE in XMPP client mode answers and opens a session;
with the XMPP server unreachable the request falls back to HTTP and says why."""

from __future__ import annotations

import uuid

import httpx
import pytest

from acs.xmppserver import XmppServer
from cwmp.session import InformReceived
from services.orchestrator.connreq import ConnectionRequester
from services.orchestrator.state import DeviceState
from services.orchestrator.targets import TargetPolicy, parse_networks
from services.orchestrator.xmppconnreq import XmppRequester
from simulator.config import FleetSettings
from simulator.device import Device
from simulator.fleet import Fleet
from simulator.miniacs import MiniAcs, eventually, serving

pytestmark = pytest.mark.integration
# The simulated CPEs listen on loopback, which a deployment refuses by default (targets.py).
LOCAL_TARGETS = TargetPolicy(parse_networks("0.0.0.0/0,127.0.0.0/8", "test"))


def _events(acs: MiniAcs, serial: str) -> list[list[str]]:
    return [[e.event_code for e in ev.inform.event] for ev in acs.received(InformReceived)
            if ev.inform.device_id.serial_number == serial]


def _reported_jid(acs: MiniAcs, serial: str) -> str | None:
    for event in acs.received(InformReceived):
        if event.inform.device_id.serial_number == serial:
            for p in event.inform.parameter_list:
                if p.name == "Device.ManagementServer.ConnReqJabberID" and p.value.value:
                    return p.value.value
    return None


def _state(device: Device, jid: str | None, *, password: str | None = None, url: str | None = None) -> DeviceState:
    username, right = device.cr_credentials
    return DeviceState(id=device.id_string, xmpp_jid=jid, cr_username=username, cr_password=password or right,
                       connection_request_url=url)


async def test_an_xmpp_connection_request_wakes_the_device_through_the_xmpp_server(xmpp_server: XmppServer) -> None:
    acs = MiniAcs(auth="none")
    prefix = "XM" + uuid.uuid4().hex[:4].upper()
    async with serving(acs) as base, httpx.AsyncClient() as http:
        fleet = Fleet(FleetSettings(acs_url=base + "/", devices=1, model="tr181", periodic_interval=3600,
                                    serial_prefix=prefix, seed=5, xmpp_server=xmpp_server.address,
                                    xmpp_domain=xmpp_server.domain))
        xmpp = XmppRequester(xmpp_server.address, f"acs-{prefix.lower()}@{xmpp_server.domain}", "acs-xmpp-pw",
                             register=True)
        await fleet.start()
        try:
            device = fleet.device_by_index(0)
            assert device is not None
            # The CPE reports its full JID (forced active notification: a 4 VALUE CHANGE Inform).
            await eventually(lambda: _reported_jid(acs, device.serial) is not None)
            jid = _reported_jid(acs, device.serial)
            assert jid == f"cpe-{device.serial.lower()}@{xmpp_server.domain}/cwmp"
            await eventually(lambda: device.state == "idle")
            sessions = len(_events(acs, device.serial))

            requester = ConnectionRequester(http, targets=LOCAL_TARGETS, xmpp=xmpp)
            # Wrong credentials: the CPE itself says not-authorized; no session, no HTTP attempt.
            refused = await requester.wake(_state(device, jid, password="wrong", url=device.cr_url))
            assert (refused.outcome, refused.transport) == ("auth_failed", "xmpp"), refused
            right = await ConnectionRequester(http, targets=LOCAL_TARGETS, xmpp=xmpp).wake(
                _state(device, jid, url=device.cr_url))
            assert (right.outcome, right.transport) == ("ok", "xmpp"), right
            await eventually(lambda: len(_events(acs, device.serial)) == sessions + 1)
            assert _events(acs, device.serial)[-1] == ["6 CONNECTION REQUEST"]
            assert fleet.xmpp[device.index].requests == ["not-authorized", "accepted"]
            # Only the JIDs in ConnReqAllowedJabberIDs may ask, once the list is set.
            device.model.set_internal("Device.ManagementServer.ConnReqAllowedJabberIDs", "someone@else.test")
            await eventually(lambda: device.state == "idle")
            stranger = await ConnectionRequester(http, targets=LOCAL_TARGETS, xmpp=xmpp).wake(_state(device, jid))
            assert stranger.outcome == "auth_failed", stranger
        finally:
            await xmpp.close()
            await fleet.stop()


async def test_with_the_xmpp_server_down_the_request_falls_back_to_http_and_says_why(
        xmpp_server: XmppServer) -> None:
    acs = MiniAcs(auth="none")
    async with serving(acs) as base, httpx.AsyncClient() as http:
        fleet = Fleet(FleetSettings(acs_url=base + "/", devices=1, model="tr181", periodic_interval=3600,
                                    serial_prefix="XF" + uuid.uuid4().hex[:4].upper(), seed=6))
        # Nothing listens there: the XMPP server is down.
        down = XmppRequester("127.0.0.1:1", "acs@acs.local", "pw", answer_within=1.0)
        await fleet.start()
        try:
            device = fleet.device_by_index(0)
            assert device is not None
            await eventually(lambda: len(_events(acs, device.serial)) >= 1 and device.state == "idle")
            result = await ConnectionRequester(http, targets=LOCAL_TARGETS, xmpp=down).wake(
                _state(device, "cpe-x@acs.local/cwmp", url=device.cr_url))
            assert (result.outcome, result.transport) == ("ok", "http"), result
            assert result.detail.startswith("XMPP failed (unreachable: XMPP server unavailable: cannot reach"), result
            await eventually(lambda: _events(acs, device.serial)[-1] == ["6 CONNECTION REQUEST"])
            # Without an HTTP URL there is nothing to fall back to: the XMPP outcome stands.
            alone = await ConnectionRequester(http, targets=LOCAL_TARGETS, xmpp=down).wake(
                _state(device, "cpe-x@acs.local/cwmp"))
            assert (alone.outcome, alone.transport) == ("unreachable", "xmpp"), alone
        finally:
            await down.close()
            await fleet.stop()
