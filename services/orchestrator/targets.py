"""Which addresses the orchestrator may send connection requests to (an allow-list of networks).

A CPE reports its ConnectionRequestURL (and UDPConnectionRequestAddress) itself, so without a
check any CPE could make the orchestrator send requests to any address it can reach: its own
admin ports, MongoDB, cloud metadata at 169.254.169.254. The rules (docs/security.md):

- the address must lie in one of ACS_CONNECTION_REQUEST_ALLOWED_NETWORKS (default: any);
- never in one of ACS_CONNECTION_REQUEST_REFUSED_NETWORKS (the ACS's own networks: pod,
  service, management; the operator names them);
- loopback, link-local, unspecified, multicast and broadcast addresses and the orchestrator
  host's own addresses are refused unless an allowed network lies *within* the refused range
  (``127.0.0.0/8`` admits simulated CPEs on this machine; ``0.0.0.0/0`` admits none of them).

A host name is resolved once, every address it resolves to must pass, and the request goes to
the checked address (the name stays in Host and TLS SNI), so a name that resolves differently a
moment later (DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from services.common.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# host name -> its addresses
Resolver = Callable[[str], Awaitable[list[str]]]

SPECIAL: tuple[tuple[str, str], ...] = (
    ("127.0.0.0/8", "loopback"), ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local"), ("fe80::/10", "link-local"),
    ("0.0.0.0/8", "unspecified"), ("::/128", "unspecified"),
    ("224.0.0.0/4", "multicast"), ("ff00::/8", "multicast"),
    ("255.255.255.255/32", "broadcast"),
)


def parse_networks(text: str, setting: str) -> list[Network]:
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{setting}: {item!r} is not a network ({exc})") from None
    return networks


def own_addresses() -> list[Address]:
    """This host's addresses (other than loopback, refused anyway): its name's and its default route's."""
    found: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]))
    except OSError:
        pass
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((probe, 9))  # UDP: no packet is sent, the kernel only picks a route
                found.add(str(sock.getsockname()[0]))
        except OSError:
            pass
    addresses = []
    for text in found:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        if not address.is_loopback:
            addresses.append(address)
    return addresses


async def _system_resolve(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send a checked connection request: the URL with the checked address in it."""

    url: str
    host_header: str | None = None
    sni_hostname: str | None = None


class TargetRefused(Exception):
    """The reported address is not one the orchestrator may call."""


class TargetPolicy:
    def __init__(self, allowed: Iterable[Network] = (ipaddress.ip_network("0.0.0.0/0"),
                                                     ipaddress.ip_network("::/0")),
                 refused: Iterable[Network] = (), own: Iterable[Address] = (),
                 resolve: Resolver | None = None) -> None:
        self.allowed = list(allowed)
        self.refused = list(refused)
        self.special: list[tuple[Network, str]] = [(ipaddress.ip_network(n), why) for n, why in SPECIAL]
        self.special += [(ipaddress.ip_network(a), "an address of the ACS itself") for a in own]
        self.resolve = resolve or _system_resolve

    @classmethod
    def from_settings(cls, settings: Settings, resolve: Resolver | None = None) -> TargetPolicy:
        return cls(parse_networks(settings.connection_request_allowed_networks,
                                  "ACS_CONNECTION_REQUEST_ALLOWED_NETWORKS"),
                   parse_networks(settings.connection_request_refused_networks,
                                  "ACS_CONNECTION_REQUEST_REFUSED_NETWORKS"),
                   own_addresses(), resolve)

    def refusal(self, address: Address) -> str | None:
        """Why ``address`` may not be called, or None when it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for network in self.refused:
            if address.version == network.version and address in network:
                return f"{address} is in a refused network ({network})"
        within = [n for n in self.allowed if n.version == address.version and address in n]
        if not within:
            return f"{address} is in none of the allowed networks"
        for special, why in self.special:
            if special.version != address.version or address not in special:
                continue
            if not any(n.subnet_of(special) for n in within):  # type: ignore[arg-type]
                return f"{address} is {why}; allow it with a network within {special}"
        return None

    async def addresses(self, host: str) -> list[Address]:
        """The checked addresses of ``host`` (an IP literal or a name); TargetRefused if any fails."""
        literal = _literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                resolved = await self.resolve(host)
            except OSError as exc:
                raise TargetRefused(f"cannot resolve {host!r}: {exc}") from None
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
        if not addresses:
            raise TargetRefused(f"{host!r} resolves to no address")
        for address in addresses:
            if (why := self.refusal(address)) is not None:
                raise TargetRefused(why)
        return addresses

    async def http_target(self, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetRefused("not an http(s) URL")
        host = parts.hostname
        address = (await self.addresses(host))[0]
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = literal + (f":{parts.port}" if parts.port else "")
        if _literal(host) is not None:
            return Target(url)  # already an address: nothing to pin
        host_header = parts.netloc.rsplit("@", 1)[-1]
        return Target(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), host_header,
                      host if parts.scheme == "https" else None)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
