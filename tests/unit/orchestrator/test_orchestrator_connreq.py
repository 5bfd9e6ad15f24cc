"""Connection requests: Digest (with and without qop), 503, wrong credentials, timeouts, UDP, limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from cwmp.digest import compute_ha1, compute_response, parse_authorization
from cwmp.udp import parse_udp_connection_request
from services.orchestrator.connreq import (
    ConnectionRequester,
    RateLimiter,
    TokenBucket,
    http_connection_request,
    udp_connection_request,
)
from services.orchestrator.state import DeviceState
from services.orchestrator.targets import TargetPolicy, parse_networks

URL = "http://cpe.test:7547/cr?x=1"


async def _resolve(host: str) -> list[str]:
    return {"cpe.test": ["192.0.2.10"]}[host]


# The simulated CPEs of these tests live on this machine: loopback allowed explicitly.
LOCAL = TargetPolicy(parse_networks("0.0.0.0/0,127.0.0.0/8", "test"), resolve=_resolve)


def cpe(challenge: str, password: str = "secret") -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    """A CPE that challenges, then checks the Digest answer against ``password``."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        header = request.headers.get("authorization")
        if header is None:
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        given = parse_authorization(header)
        expected = compute_response("MD5", compute_ha1("MD5", "acs", "cpe", password), "abc", "GET", given.uri,
                                    qop=given.qop, nc=given.nc, cnonce=given.cnonce)
        return httpx.Response(200 if given.response == expected else 401)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle)), seen


@pytest.mark.parametrize("challenge", [
    'Digest realm="cpe", qop="auth", nonce="abc", opaque="o"',
    'Digest realm="cpe", nonce="abc"',  # RFC 2069: no qop (genieacs#181)
])
async def test_a_digest_challenge_is_answered_once(challenge: str) -> None:
    client, seen = cpe(challenge)
    async with client:
        result = await http_connection_request(client, URL, "acs", "secret")
    assert (result.outcome, result.http_status, result.transport) == ("ok", 200, "http")
    assert len(seen) == 2
    assert parse_authorization(seen[1].headers["authorization"]).uri == "/cr?x=1"


async def test_wrong_credentials_fail_after_one_retry() -> None:
    client, seen = cpe('Digest realm="cpe", qop="auth", nonce="abc"', password="other")
    async with client:
        result = await http_connection_request(client, URL, "acs", "secret")
    assert result.outcome == "auth_failed" and len(seen) == 2


async def test_basic_is_never_offered_our_credentials() -> None:
    client, seen = cpe('Basic realm="cpe"')
    async with client:
        result = await http_connection_request(client, URL, "acs", "secret")
    assert result.outcome == "auth_failed" and "Basic" in result.detail
    assert len(seen) == 1


async def test_busy_is_not_an_authentication_failure() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(
        lambda request: httpx.Response(503, headers={"Retry-After": "30"})))
    async with client:
        result = await http_connection_request(client, URL, "acs", "secret")
    assert (result.outcome, result.detail) == ("busy", "30")


@pytest.mark.parametrize(("error", "outcome"), [(httpx.ConnectTimeout, "timeout"), (httpx.ConnectError, "unreachable")])
async def test_timeouts_and_unreachable_cpes_are_reported(error: Callable[[str], Exception], outcome: str) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise error("boom")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        assert (await http_connection_request(client, URL, "acs", "secret")).outcome == outcome


async def test_udp_sends_three_signed_copies_of_one_request() -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            received.put_nowait(data)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        result = await udp_connection_request(f"127.0.0.1:{port}", "acs", "secret")
        datagrams = [await asyncio.wait_for(received.get(), 2) for _ in range(3)]
    finally:
        transport.close()
    assert result.outcome == "sent"
    assert len(set(datagrams)) == 1  # same id in every copy
    request = parse_udp_connection_request(datagrams[0])
    assert request.username == "acs" and request.verify_signature("secret")


async def test_udp_is_the_fallback_when_http_cannot_reach_the_cpe() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("behind NAT")

    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            received.put_nowait(data)

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        device = DeviceState(id="d", connection_request_url=URL, udp_connection_request_address=f"127.0.0.1:{port}",
                             cr_username="acs", cr_password="secret")
        async with httpx.AsyncClient(transport=httpx.MockTransport(unreachable)) as client:
            result = await ConnectionRequester(client, targets=LOCAL).wake(device)
        assert (result.outcome, result.transport) == ("sent", "udp")
        assert parse_udp_connection_request(await asyncio.wait_for(received.get(), 2)).verify_signature("secret")
    finally:
        transport.close()


async def test_wake_is_rate_limited_per_device() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(204)))
    device = DeviceState(id="d", connection_request_url=URL, cr_username="acs", cr_password="secret")
    async with client:
        requester = ConnectionRequester(client, RateLimiter(device_rate=0.001, device_burst=2), targets=LOCAL)
        outcomes = [(await requester.wake(device)).outcome for _ in range(3)]
        other = await requester.wake(device.model_copy(update={"id": "e"}))
    assert outcomes == ["ok", "ok", "rate_limited"]
    assert other.outcome == "ok"  # another device has its own budget


def test_token_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=2.0, capacity=2.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)
    assert bucket.take(100.0) and bucket.take(100.0) and not bucket.take(100.0)


def test_a_device_over_its_limit_does_not_use_up_the_global_budget() -> None:
    limiter = RateLimiter(global_rate=0.0, global_burst=3, device_rate=0.0, device_burst=1)
    assert limiter.allow("a", 0.0)
    assert not limiter.allow("a", 0.0) and not limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0) and limiter.allow("c", 0.0)  # the global budget was kept for them
    assert not limiter.allow("d", 0.0)
