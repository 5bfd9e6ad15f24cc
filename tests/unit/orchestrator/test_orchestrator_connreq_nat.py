"""UDP first for CPEs behind NAT (Annex G), HTTP first otherwise, and the reasons in the outcome."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from cwmp.udp import parse_udp_connection_request
from services.orchestrator.connreq import ConnectionRequester, behind_nat
from services.orchestrator.state import DeviceState
from services.orchestrator.targets import TargetPolicy, parse_networks
from services.orchestrator.xmppconnreq import XmppRequester
from tests.unit.orchestrator.orchestrator_builders import IGD, Clock, Harness, inform, small_config

LOCAL = TargetPolicy(parse_networks("0.0.0.0/0,127.0.0.0/8", "test"))
STRICT = TargetPolicy(parse_networks("0.0.0.0/0", "test"))  # loopback refused


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received.put_nowait(data)


@pytest.fixture
async def udp_cpe() -> AsyncIterator[tuple[str, Sink]]:
    """A UDP socket standing for the CPE's mapped address."""
    transport, sink = await asyncio.get_running_loop().create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{transport.get_extra_info('sockname')[1]}", sink
    finally:
        transport.close()


def http_cpe() -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle)), seen


def device(url: str | None, udp: str | None, **extra: object) -> DeviceState:
    return DeviceState(id="d", connection_request_url=url, udp_connection_request_address=udp,
                       cr_username="acs", cr_password="secret", **extra)  # type: ignore[arg-type]


async def test_natdetected_means_udp_first(udp_cpe: tuple[str, Sink]) -> None:
    address, sink = udp_cpe
    client, seen = http_cpe()
    async with client:
        result = await ConnectionRequester(client, targets=LOCAL).wake(
            device("http://127.0.0.1:7547/", address, nat_detected=True))
    assert (result.outcome, result.transport) == ("sent", "udp")
    assert "behind NAT (NATDetected): UDP first" in result.detail
    assert parse_udp_connection_request(await asyncio.wait_for(sink.received.get(), 2)).verify_signature("secret")
    assert seen == []  # HTTP was not tried: it cannot pass the NAT


async def test_a_stun_address_other_than_the_url_host_means_udp_first(udp_cpe: tuple[str, Sink]) -> None:
    address, sink = udp_cpe
    client, seen = http_cpe()
    async with client:
        result = await ConnectionRequester(client, targets=LOCAL).wake(device("http://100.64.0.7:7547/", address))
    assert (result.outcome, result.transport) == ("sent", "udp")
    assert "differs from its ConnectionRequestURL host 100.64.0.7" in result.detail
    await asyncio.wait_for(sink.received.get(), 2)
    assert seen == []


async def test_a_cpe_not_behind_nat_gets_http_first(udp_cpe: tuple[str, Sink]) -> None:
    address, sink = udp_cpe
    client, seen = http_cpe()
    async with client:
        result = await ConnectionRequester(client, targets=LOCAL).wake(
            device("http://127.0.0.1:7547/", address, nat_detected=False))
    assert (result.outcome, result.transport) == ("ok", "http")
    assert len(seen) == 1 and sink.received.empty()


def test_only_address_literals_are_compared() -> None:
    assert behind_nat(device("http://cpe.example.net:7547/", "192.0.2.1:5000")) == ""
    assert behind_nat(device("http://[2001:db8::1]:7547/", "[2001:db8::1]:5000")) == ""
    assert behind_nat(device("http://192.0.2.9:7547/", None, nat_detected=True)) == ""  # nothing to use
    assert behind_nat(device(None, "192.0.2.1:5000")) == "no ConnectionRequestURL"


async def test_stun_on_but_no_address_learned_falls_back_to_http_and_says_why(
        caplog: pytest.LogCaptureFixture) -> None:
    client, seen = http_cpe()
    caplog.set_level(logging.INFO, "services.orchestrator.connreq")
    async with client:
        result = await ConnectionRequester(client, targets=LOCAL).wake(
            device("http://127.0.0.1:7547/", None, stun_enabled=True))
    assert (result.outcome, result.transport) == ("ok", "http") and len(seen) == 1
    assert "no UDPConnectionRequestAddress learned although STUN was turned on" in result.detail
    record = next(r for r in caplog.records if r.getMessage() == "connection request")
    assert record.transport == "http" and "STUN" in record.detail  # type: ignore[attr-defined]
    assert "secret" not in caplog.text


async def test_behind_nat_with_a_refused_udp_address_falls_back_to_http(udp_cpe: tuple[str, Sink]) -> None:
    address, sink = udp_cpe
    client, seen = http_cpe()
    async with client:
        result = await ConnectionRequester(client, targets=STRICT).wake(
            device("http://192.0.2.50:7547/", address, nat_detected=True))
    assert (result.outcome, result.transport) == ("ok", "http") and len(seen) == 1
    assert result.detail.startswith("behind NAT (NATDetected) but UDP failed (refused_address: not called:")
    assert sink.received.empty()


def test_natdetected_is_learned_from_the_inform(clock: Clock) -> None:
    h = Harness(clock, small_config())
    ms = f"{IGD}ManagementServer."
    h.inform(inform("1 BOOT", parameters={f"{ms}ConnectionRequestURL": "http://10.0.0.2:7547/",
                                          f"{ms}UDPConnectionRequestAddress": "198.51.100.2:40001",
                                          f"{ms}NATDetected": "true"}))
    assert h.device is not None
    assert (h.device.udp_connection_request_address, h.device.nat_detected) == ("198.51.100.2:40001", True)
    h.end()
    h.inform(inform("4 VALUE CHANGE", parameters={f"{ms}NATDetected": "0"}, session="s2"))
    assert h.device.nat_detected is False
    assert h.device.udp_connection_request_address == "198.51.100.2:40001"  # unchanged: not in that Inform


async def test_with_the_xmpp_server_down_a_device_behind_nat_gets_udp_and_both_reasons(
        udp_cpe: tuple[str, Sink]) -> None:
    address, sink = udp_cpe
    client, seen = http_cpe()
    down = XmppRequester("127.0.0.1:1", "acs@acs.local", "pw", answer_within=1.0)  # nothing listens there
    try:
        async with client:
            result = await ConnectionRequester(client, targets=LOCAL, xmpp=down).wake(
                device("http://100.64.0.9:7547/", address, xmpp_jid="cpe-9@acs.local/cwmp"))
    finally:
        await down.close()
    assert (result.outcome, result.transport) == ("sent", "udp"), result
    assert result.detail.startswith("XMPP failed (unreachable: XMPP server unavailable")
    assert "; behind NAT (its STUN address 127.0.0.1 differs" in result.detail
    await asyncio.wait_for(sink.received.get(), 2)
    assert seen == []


async def test_without_credentials_udp_is_not_tried_and_the_detail_says_so(udp_cpe: tuple[str, Sink]) -> None:
    address, sink = udp_cpe
    client, seen = http_cpe()
    state = DeviceState(id="d", connection_request_url="http://100.64.0.9:7547/",
                        udp_connection_request_address=address)
    async with client:
        result = await ConnectionRequester(client, targets=LOCAL).wake(state)
    assert (result.outcome, result.transport) == ("ok", "http") and len(seen) == 1
    assert result.detail == "UDP needs the connection request credentials, not provisioned yet: HTTP"
    assert sink.received.empty()
