"""Forwarding headers count only from ACS_TRUSTED_PROXIES, read right to left."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.forwarding import TrustedProxies, client_address, forwarded_scheme, parse_networks
from services.common.settings import Settings

PROXIES = parse_networks("10.0.0.0/8, 192.0.2.1")


@pytest.mark.parametrize(("peer", "headers", "expected"), [
    # Not from a trusted proxy: the headers are a claim worth nothing.
    ("203.0.113.7", {"x-forwarded-for": "198.51.100.1"}, "203.0.113.7"),
    ("203.0.113.7", {"forwarded": "for=198.51.100.1"}, "203.0.113.7"),
    # From a trusted proxy: the nearest untrusted hop is the client.
    ("10.1.2.3", {"x-forwarded-for": "198.51.100.1"}, "198.51.100.1"),
    ("10.1.2.3", {"x-forwarded-for": "6.6.6.6, 198.51.100.1, 10.9.9.9"}, "198.51.100.1"),  # spoofed head
    ("10.1.2.3", {"forwarded": 'for=6.6.6.6, for="[2001:db8::1]:4711";proto=https'}, "2001:db8::1"),
    ("10.1.2.3", {"forwarded": "for=198.51.100.1", "x-forwarded-for": "6.6.6.6"}, "198.51.100.1"),
    ("10.1.2.3", {"x-forwarded-for": "198.51.100.1:5555"}, "198.51.100.1"),
    # Nothing but proxies: the farthest one.
    ("10.1.2.3", {"x-forwarded-for": "192.0.2.1, 10.0.0.9"}, "192.0.2.1"),
    # Garbage ends the walk at the last trusted hop.
    ("10.1.2.3", {"x-forwarded-for": "6.6.6.6, unknown"}, "10.1.2.3"),
    ("10.1.2.3", {"forwarded": "for=_hidden"}, "10.1.2.3"),
    ("10.1.2.3", {}, "10.1.2.3"),
    ("::ffff:10.1.2.3", {"x-forwarded-for": "198.51.100.1"}, "198.51.100.1"),  # v4-mapped peer
])
def test_client_address(peer: str, headers: dict[str, str], expected: str) -> None:
    assert client_address(peer, headers, PROXIES) == expected


def test_no_trusted_proxies_by_default_not_even_loopback() -> None:
    networks = Settings().trusted_proxy_networks
    assert networks == ()
    assert client_address("127.0.0.1", {"x-forwarded-for": "198.51.100.1"}, networks) == "127.0.0.1"


def test_scheme_only_from_a_trusted_proxy() -> None:
    assert forwarded_scheme("10.1.2.3", {"x-forwarded-proto": "https"}, PROXIES) == "https"
    assert forwarded_scheme("10.1.2.3", {"forwarded": "for=1.2.3.4;proto=https"}, PROXIES) == "https"
    assert forwarded_scheme("203.0.113.7", {"x-forwarded-proto": "https"}, PROXIES) is None
    assert forwarded_scheme("10.1.2.3", {"x-forwarded-proto": "gopher"}, PROXIES) is None


def test_bad_networks_are_a_settings_error() -> None:
    with pytest.raises(ValueError, match="ACS_TRUSTED_PROXIES"):
        Settings(trusted_proxies="10.0.0.0/8, not-a-network")


async def test_the_middleware_rewrites_client_and_scheme_keeping_the_port() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: object, send: object) -> None:
        seen.append(scope)

    wrapped = TrustedProxies(app, PROXIES)
    headers = [(b"x-forwarded-for", b"198.51.100.1"), (b"x-forwarded-proto", b"https")]
    await wrapped({"type": "http", "client": ("10.1.2.3", 4242), "scheme": "http", "headers": headers}, None, None)
    await wrapped({"type": "http", "client": ("203.0.113.7", 1), "scheme": "http", "headers": headers}, None, None)
    assert (seen[0]["client"], seen[0]["scheme"]) == (("198.51.100.1", 4242), "https")
    assert (seen[1]["client"], seen[1]["scheme"]) == (("203.0.113.7", 1), "http")


async def _echo_client(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = f"{scope['client'][0]} {scope['scheme']}".encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize(("trusted", "expected"), [("", "127.0.0.1 http"), ("127.0.0.1/32", "198.51.100.1 https")])
async def test_serve_believes_forwarding_headers_only_from_configured_proxies(trusted: str, expected: str) -> None:
    """serve(), as every service runs: uvicorn's own proxy handling (which trusts loopback) is off."""
    import asyncio
    import os
    import signal

    import httpx

    from acs.infra import free_port
    from services.common.service import serve

    port = free_port()
    settings = Settings(trusted_proxies=trusted)
    server = asyncio.create_task(serve([(_echo_client, port)], settings))
    loop = asyncio.get_running_loop()
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(100):
                try:
                    answer = await client.get(f"http://127.0.0.1:{port}/", headers={
                        "X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https"})
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
        assert answer.text == expected
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # serve()'s own handler stops its servers
        await asyncio.wait_for(server, 30)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
