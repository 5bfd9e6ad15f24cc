"""Connection-request targets: the allow-list of networks, the refused ranges, names, the requester."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest

from services.common.settings import Settings
from services.orchestrator.connreq import ConnectionRequester
from services.orchestrator.state import DeviceState
from services.orchestrator.targets import TargetPolicy, TargetRefused, parse_networks


def policy(allowed: str = "0.0.0.0/0,::/0", refused: str = "", own: tuple[str, ...] = (),
           names: dict[str, list[str]] | None = None) -> TargetPolicy:
    async def resolve(host: str) -> list[str]:
        if names is None or host not in names:
            raise OSError("no such name")
        return names[host]

    return TargetPolicy(parse_networks(allowed, "allowed"), parse_networks(refused, "refused"),
                        [ipaddress.ip_address(a) for a in own], resolve)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "169.254.169.254", "fe80::1", "0.0.0.0",
                                     "224.0.0.1", "ff02::1", "255.255.255.255", "::ffff:127.0.0.1", "::"])
def test_by_default_loopback_link_local_and_the_like_are_refused(address: str) -> None:
    assert policy().refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["203.0.113.5", "10.20.30.40", "192.168.1.1", "100.64.0.2", "2001:db8::5"])
def test_by_default_other_addresses_are_allowed(address: str) -> None:
    assert policy().refusal(ipaddress.ip_address(address)) is None


def test_the_acs_own_addresses_are_refused_even_inside_an_allowed_network() -> None:
    rules = policy("10.0.0.0/8", own=("10.1.2.3",))
    assert "the ACS itself" in (rules.refusal(ipaddress.ip_address("10.1.2.3")) or "")
    assert rules.refusal(ipaddress.ip_address("10.1.2.4")) is None


def test_a_network_within_a_refused_range_allows_it_and_refused_networks_always_win() -> None:
    local = policy("0.0.0.0/0,127.0.0.0/8")
    assert local.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert local.refusal(ipaddress.ip_address("169.254.169.254")) is not None  # link-local still refused
    narrow = policy("127.0.0.1/32")
    assert narrow.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert narrow.refusal(ipaddress.ip_address("127.0.0.2")) is not None
    assert narrow.refusal(ipaddress.ip_address("203.0.113.5")) is not None  # in no allowed network
    walled = policy("0.0.0.0/0,127.0.0.0/8", refused="127.0.0.0/24,10.96.0.0/12")
    assert "refused network" in (walled.refusal(ipaddress.ip_address("127.0.0.1")) or "")
    assert walled.refusal(ipaddress.ip_address("10.100.0.1")) is not None  # e.g. the cluster's services


async def test_a_name_is_resolved_checked_and_pinned() -> None:
    rules = policy(names={"cpe.example": ["203.0.113.7"], "rebind.example": ["203.0.113.8", "127.0.0.1"]})
    target = await rules.http_target("http://cpe.example:7547/cr?x=1")
    assert (target.url, target.host_header) == ("http://203.0.113.7:7547/cr?x=1", "cpe.example:7547")
    secure = await rules.http_target("https://cpe.example/cr")
    assert (secure.url, secure.sni_hostname) == ("https://203.0.113.7/cr", "cpe.example")
    with pytest.raises(TargetRefused, match="loopback"):
        await rules.http_target("http://rebind.example/")  # any address refused: the whole name is
    with pytest.raises(TargetRefused, match="cannot resolve"):
        await rules.http_target("http://unknown.example/")
    with pytest.raises(TargetRefused, match="http"):
        await rules.http_target("file:///etc/passwd")
    assert (await rules.http_target("http://[2001:db8::9]:80/")).url == "http://[2001:db8::9]:80/"


def test_settings_name_a_bad_network() -> None:
    with pytest.raises(ValueError, match="ACS_CONNECTION_REQUEST_ALLOWED_NETWORKS: 'nonsense'"):
        TargetPolicy.from_settings(Settings(connection_request_allowed_networks="10.0.0.0/8,nonsense"))
    assert TargetPolicy.from_settings(Settings()).refusal(ipaddress.ip_address("127.0.0.1")) is not None


async def test_the_requester_never_calls_a_refused_address_and_calls_an_allowed_one() -> None:
    seen: list[bytes] = []

    async def cpe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readline())
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    received: list[bytes] = []

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            received.append(data)

    server = await asyncio.start_server(cpe, "127.0.0.1", 0)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    port, udp_port = server.sockets[0].getsockname()[1], transport.get_extra_info("sockname")[1]
    device = DeviceState(id="d", connection_request_url=f"http://127.0.0.1:{port}/cr",
                         udp_connection_request_address=f"127.0.0.1:{udp_port}", cr_username="u", cr_password="p")
    try:
        async with httpx.AsyncClient() as client:
            strict = await ConnectionRequester(client, targets=TargetPolicy.from_settings(Settings())).wake(device)
            await asyncio.sleep(0.1)
            assert (strict.outcome, seen, received) == ("refused_address", [], [])
            assert "loopback" in strict.detail
            allowed = TargetPolicy.from_settings(Settings(connection_request_allowed_networks="127.0.0.0/8"))
            woken = await ConnectionRequester(client, targets=allowed).wake(device)
        assert (woken.outcome, seen) == ("ok", [b"GET /cr HTTP/1.1\r\n"])
    finally:
        server.close()
        transport.close()
