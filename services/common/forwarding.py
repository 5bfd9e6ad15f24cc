"""Who the client is behind a reverse proxy: ``X-Forwarded-For`` / ``Forwarded`` from trusted
proxies only (ACS_TRUSTED_PROXIES).

A forwarding header is a claim made by whoever sent the request. From a CPE or an attacker it is
worth nothing (rotating it would defeat every per-address limit); from a proxy the operator runs
it is the only way to know the client. So the headers count only when the TCP peer is in
ACS_TRUSTED_PROXIES (default: none, not even loopback), and then the chain is read from the right:
each hop that is itself a trusted proxy is skipped, the first one that is not is the client. An
entry that is not an IP address (``unknown``, an obfuscated identifier, garbage) ends the walk at
the last trusted hop, which is then taken as the client: a proxy's word is trusted, not the text
its client put before it.

uvicorn's own proxy handling is switched off everywhere (it trusts 127.0.0.1 by default and reads
no ``Forwarded``); :class:`TrustedProxies` takes its place as the outermost ASGI layer, so every
service (the gateway's plain ASGI app, the FastAPI apps) sees the same ``scope["client"]``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Scope = MutableMapping[str, Any]
ASGIApp = Callable[..., Awaitable[None]]

# A proxy chain longer than this is not a deployment, it is someone filling a header.
MAX_HOPS = 32


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) separated by commas or spaces; ValueError for a bad one."""
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())


def _address(text: str) -> Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # Forwarded: for="[2001:db8::1]:4711"
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # 192.0.2.1:4711
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address, networks: tuple[Network, ...]) -> bool:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return any(address in net or (mapped is not None and mapped in net) for net in networks)


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` of each element of a Forwarded header (RFC 7239), left to right."""
    hops = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, sep, param = pair.partition("=")
            if sep and name.strip().lower() == "for":
                hops.append(param)
                break
        else:
            hops.append("")  # an element without for=: an unknown hop
    return hops


def _forwarded_proto(value: str) -> str | None:
    """The ``proto=`` of the last (nearest) element of a Forwarded header."""
    last = value.rsplit(",", 1)[-1]
    for pair in last.split(";"):
        name, sep, param = pair.partition("=")
        if sep and name.strip().lower() == "proto":
            return param.strip().strip('"').lower()
    return None


def client_address(peer: str, headers: Mapping[str, str], networks: tuple[Network, ...]) -> str:
    """The client's address: ``peer`` itself unless ``peer`` is a trusted proxy.

    ``headers`` has lower-case names, repeated headers joined with ", ". ``Forwarded`` is read
    when present, else ``X-Forwarded-For``.
    """
    address = _address(peer)
    if not networks or address is None or not _trusted(address, networks):
        return peer
    if (forwarded := headers.get("forwarded")) is not None:
        hops = _forwarded_for(forwarded)
    elif (xff := headers.get("x-forwarded-for")) is not None:
        hops = xff.split(",")
    else:
        return peer
    client = peer
    for hop in reversed(hops[-MAX_HOPS:]):
        hop_address = _address(hop)
        if hop_address is None:
            break  # not an address: the last trusted hop is all we know
        client = str(hop_address)
        if not _trusted(hop_address, networks):
            break
    return client


def forwarded_scheme(peer: str, headers: Mapping[str, str], networks: tuple[Network, ...]) -> str | None:
    """``https``/``http`` as a trusted proxy says the client spoke to it, else None."""
    address = _address(peer)
    if not networks or address is None or not _trusted(address, networks):
        return None
    if (forwarded := headers.get("forwarded")) is not None:
        proto = _forwarded_proto(forwarded)
    else:
        proto = headers.get("x-forwarded-proto", "").rsplit(",", 1)[-1].strip().lower() or None
    return proto if proto in ("http", "https") else None


class TrustedProxies:
    """ASGI middleware: ``scope["client"]`` (and ``scheme``) as trusted proxies report them."""

    def __init__(self, app: ASGIApp, networks: tuple[Network, ...]) -> None:
        self.app = app
        self.networks = networks

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("client"):
            peer, port = scope["client"]
            headers: dict[str, str] = {}
            for raw_name, raw_value in scope["headers"]:
                name = raw_name.decode("latin-1").lower()
                if name in ("forwarded", "x-forwarded-for", "x-forwarded-proto"):
                    value = raw_value.decode("latin-1")
                    headers[name] = f"{headers[name]}, {value}" if name in headers else value
            client = client_address(peer, headers, self.networks)
            scheme = forwarded_scheme(peer, headers, self.networks)
            if client != peer or scheme is not None:
                scope = dict(scope)
                if client != peer:
                    # The port stays the proxy connection's: it keeps telling connections apart
                    # (the gateway follows cookie-less CPEs by their connection).
                    scope["client"] = (client, port)
                if scheme is not None:
                    scope["scheme"] = scheme if scope["type"] == "http" else ("wss" if scheme == "https" else "ws")
        await self.app(scope, receive, send)
