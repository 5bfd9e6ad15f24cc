"""Connection requests: asking a CPE to open a session now (TR-069 3.2.2, Annex G; checklist A5, A6).

HTTP: a GET to the ConnectionRequestURL the device last reported, Digest-authenticated with the
credentials set at bootstrap. The CPE answers 200/204 (it will Inform with "6 CONNECTION
REQUEST"), 401 with a challenge (we answer it once, never falling back to Basic), or 503 when it
is busy or rate-limiting (not an authentication failure: back off). A 401 without ``qop`` (RFC
2069) is answered too.

UDP (Annex G): for a CPE behind NAT that reports UDPConnectionRequestAddress (learned from its
STUN server), one signed datagram, sent three times since UDP may drop it; there is no reply.

Both are rate-limited per device and globally with token buckets, because CPEs rate-limit
themselves and an ACS that hammers a fleet after an outage only makes it worse (checklist S4).
Credentials never reach a log line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Literal, Protocol
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter

from cwmp.digest import DigestClient, DigestError
from cwmp.udp import UdpRequestError, build_udp_connection_request, parse_udp_address
from services.orchestrator.state import DeviceState
from services.orchestrator.targets import Target, TargetPolicy, TargetRefused

log = logging.getLogger(__name__)

CONNECTION_REQUESTS = Counter("acs_orchestrator_connection_requests_total",
                              "Connection requests by transport and outcome", ["transport", "outcome"])

Outcome = Literal["ok", "sent", "auth_failed", "busy", "timeout", "unreachable", "error", "rate_limited",
                  "no_address", "refused_address"]
UDP_COPIES = 3


@dataclass(frozen=True, slots=True)
class ConnectionRequestResult:
    outcome: Outcome
    transport: Literal["xmpp", "http", "udp", "none"]
    detail: str = ""
    http_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "sent")


class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; pure apart from the clock passed in."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.updated = capacity, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    """A global bucket plus one per device (the per-device ones kept in a bounded LRU)."""

    def __init__(self, *, global_rate: float = 50.0, global_burst: float = 100.0,
                 device_rate: float = 1 / 30, device_burst: float = 2.0, max_devices: int = 100_000) -> None:
        self._global = TokenBucket(global_rate, global_burst, time.monotonic())
        self._device_rate, self._device_burst = device_rate, device_burst
        self._devices: OrderedDict[str, TokenBucket] = OrderedDict()
        self._max_devices = max_devices

    def allow(self, device_id: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        bucket = self._devices.pop(device_id, None) or TokenBucket(self._device_rate, self._device_burst, now)
        self._devices[device_id] = bucket
        while len(self._devices) > self._max_devices:
            self._devices.popitem(last=False)
        # The device's own budget first: a device over its limit must not drain the global one.
        return bucket.take(now) and self._global.take(now)


def _target(url: str) -> str:
    """The request target for the Digest ``uri``: path and query, "/" when empty."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def http_connection_request(client: httpx.AsyncClient, url: str, username: str | None,
                                  password: str | None, within: float = 5.0,
                                  target: Target | None = None) -> ConnectionRequestResult:
    """``target``: the checked address to send it to (targets.py); the Digest uri stays ``url``'s."""
    def result(outcome: Outcome, detail: str = "", status: int | None = None) -> ConnectionRequestResult:
        return ConnectionRequestResult(outcome, "http", detail, status)

    send_to = target.url if target is not None else url
    headers = {"Host": target.host_header} if target is not None and target.host_header else {}
    extensions = {"sni_hostname": target.sni_hostname} if target is not None and target.sni_hostname else None

    async def get(extra: dict[str, str]) -> httpx.Response:
        return await client.get(send_to, headers={**headers, **extra}, timeout=within, extensions=extensions)

    try:
        response = await get({})
        if response.status_code == 401:
            if not username or password is None:
                return result("auth_failed", "the CPE wants credentials and none were provisioned yet", 401)
            challenge = response.headers.get_list("www-authenticate")
            try:
                authorization = DigestClient(username, password).authorization("GET", _target(url), challenge)
            except DigestError as exc:
                return result("auth_failed", f"cannot answer the CPE's challenge: {exc}", 401)
            # At most one authenticated retry (A5): a second 401 means wrong credentials.
            response = await get({"Authorization": authorization})
    except httpx.TimeoutException:
        return result("timeout", f"no answer within {within:g} s")
    except httpx.HTTPError as exc:
        return result("unreachable", type(exc).__name__)
    status = response.status_code
    if status in (200, 204):
        return result("ok", "", status)
    if status == 401:
        return result("auth_failed", "the CPE rejected the connection request credentials", status)
    if status == 503:
        # The CPE is busy or limiting us (A5): not an authentication failure; just wait.
        return result("busy", response.headers.get("retry-after", ""), status)
    return result("error", f"unexpected HTTP {status}", status)


async def udp_connection_request(address: str, username: str, password: str,
                                 copies: int = UDP_COPIES) -> ConnectionRequestResult:
    try:
        host, port = parse_udp_address(address)
    except UdpRequestError as exc:
        return ConnectionRequestResult("error", "udp", str(exc))
    datagram = build_udp_connection_request(host, port, username, password)
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=(host, port))
    except OSError as exc:
        return ConnectionRequestResult("unreachable", "udp", type(exc).__name__)
    try:
        for _ in range(copies):  # same id in every copy: the CPE ignores the duplicates
            transport.sendto(datagram)
            await asyncio.sleep(0.01)
    finally:
        transport.close()
    return ConnectionRequestResult("sent", "udp")


class XmppSender(Protocol):
    async def request(self, jid: str, username: str, password: str) -> ConnectionRequestResult: ...


def behind_nat(device: DeviceState) -> str:
    """Why the device counts as behind NAT (Annex G), or "" when it does not: it said so
    (NATDetected), or the public UDP address its STUN server saw differs from the host of its
    ConnectionRequestURL (the CPE's own WAN address; address literals only), or it reported no
    ConnectionRequestURL."""
    if not device.udp_connection_request_address:
        return ""
    if device.nat_detected:
        return "NATDetected"
    if not device.connection_request_url:
        return "no ConnectionRequestURL"
    try:
        udp_host, _port = parse_udp_address(device.udp_connection_request_address)
    except UdpRequestError:
        return ""
    http_host = urlsplit(device.connection_request_url).hostname or ""
    try:
        # Only address literals compare: a host name would need DNS, and may well be the same place.
        http_ip, udp_ip = ipaddress.ip_address(http_host), ipaddress.ip_address(udp_host)
    except ValueError:
        return ""
    if http_ip != udp_ip:
        return f"its STUN address {udp_ip} differs from its ConnectionRequestURL host {http_ip}"
    return ""


def _joined(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


class ConnectionRequester:
    """Wakes devices. The order (docs/orchestrator.md, "Connection requests"):

    1. XMPP when the device reported a ConnReqJabberID and the ACS has an XMPP login
       (services/orchestrator/xmppconnreq.py); the next steps when XMPP did not get the CPE's yes
       (its server down, no answer, the CPE not online on XMPP) or was not tried;
    2. UDP first for a device behind NAT (:func:`behind_nat`) with a UDPConnectionRequestAddress,
       then HTTP only if the datagram could not be sent (no reply ever comes to say it arrived);
    3. otherwise HTTP, then UDP when HTTP cannot reach the CPE and it reported a UDP address.

    The outcome's detail says why a transport was passed over, e.g. that STUN was turned on at
    bootstrap but the CPE never reported an address (its STUN server down or unreachable)."""

    def __init__(self, client: httpx.AsyncClient, limiter: RateLimiter | None = None,
                 answer_within: float = 5.0, targets: TargetPolicy | None = None,
                 xmpp: XmppSender | None = None) -> None:
        self.client = client
        self.limiter = limiter or RateLimiter()
        self.answer_within = answer_within
        # Which addresses may be called (the CPE reports them itself): strict unless configured.
        self.targets = targets or TargetPolicy()
        self.xmpp = xmpp

    async def wake(self, device: DeviceState | None) -> ConnectionRequestResult:
        outcome = await self._wake(device)
        CONNECTION_REQUESTS.labels(outcome.transport, outcome.outcome).inc()
        log.info("connection request", extra={"device_id": device.id if device else None,
                                               "transport": outcome.transport, "outcome": outcome.outcome,
                                               "detail": outcome.detail})
        return outcome

    async def _wake(self, device: DeviceState | None) -> ConnectionRequestResult:
        if device is None or not (device.connection_request_url or device.udp_connection_request_address
                                  or (device.xmpp_jid and self.xmpp)):
            return ConnectionRequestResult("no_address", "none", "the device never reported a ConnectionRequestURL")
        if not self.limiter.allow(device.id):
            return ConnectionRequestResult("rate_limited", "none", "too many connection requests; try later")
        username, password = device.cr_username, device.cr_password
        result: ConnectionRequestResult | None = None
        if device.xmpp_jid and self.xmpp is not None and username and password:
            result = await self.xmpp.request(device.xmpp_jid, username, password)
            if result.ok or result.outcome in ("auth_failed", "busy") or not (
                    device.connection_request_url or device.udp_connection_request_address):
                return result  # the CPE itself answered: asking again over HTTP would not change it
            fallback = await self._direct(device, username, password)
            return replace(fallback, detail=_joined(f"XMPP failed ({result.outcome}: {result.detail})",
                                                    fallback.detail))
        return await self._direct(device, username, password)

    async def _direct(self, device: DeviceState, username: str | None,
                      password: str | None) -> ConnectionRequestResult:
        """UDP first behind NAT, HTTP first otherwise (steps 2 and 3 of the class docstring)."""
        address = device.udp_connection_request_address
        nat = behind_nat(device)
        if not (nat and address and username and password):
            result = await self._http_then_udp(device, username, password)
            if result.transport != "http":
                return result
            return replace(result, detail=_joined(self._why_not_udp(device, username, password), result.detail))
        udp = await self._udp_refusal(address)
        if udp is None:
            udp = await udp_connection_request(address, username, password)
            if udp.ok:
                return replace(udp, detail=_joined(f"behind NAT ({nat}): UDP first", udp.detail))
        if not device.connection_request_url:
            return udp
        http = await self._http(device, username, password)
        return replace(http, detail=_joined(f"behind NAT ({nat}) but UDP failed ({udp.outcome}: {udp.detail})",
                                            http.detail))

    @staticmethod
    def _why_not_udp(device: DeviceState, username: str | None, password: str | None) -> str:
        if not device.udp_connection_request_address:
            if device.stun_enabled:
                return ("no UDPConnectionRequestAddress learned although STUN was turned on at bootstrap "
                        "(the CPE did not reach its STUN server?): HTTP")
            return "HTTP (no UDPConnectionRequestAddress)" if device.nat_detected else ""
        if not (username and password):
            return "UDP needs the connection request credentials, not provisioned yet: HTTP"
        return ""

    async def _http(self, device: DeviceState, username: str | None,
                    password: str | None) -> ConnectionRequestResult:
        assert device.connection_request_url
        try:
            target = await self.targets.http_target(device.connection_request_url)
        except TargetRefused as exc:
            return ConnectionRequestResult("refused_address", "http", f"not called: {exc}")
        return await http_connection_request(self.client, device.connection_request_url, username,
                                             password, self.answer_within, target)

    async def _http_then_udp(self, device: DeviceState, username: str | None,
                             password: str | None) -> ConnectionRequestResult:
        result: ConnectionRequestResult | None = None
        if device.connection_request_url:
            result = await self._http(device, username, password)
            if result.outcome not in ("timeout", "unreachable", "refused_address"):
                return result
        if device.udp_connection_request_address and username and password:
            udp = await self._udp_refusal(device.udp_connection_request_address)
            if udp is None:
                return await udp_connection_request(device.udp_connection_request_address, username, password)
            result = udp if result is None or result.outcome == "refused_address" else result
        assert result is not None
        return result

    async def _udp_refusal(self, address: str) -> ConnectionRequestResult | None:
        try:
            host, _port = parse_udp_address(address)
            await self.targets.addresses(host)
        except UdpRequestError as exc:
            return ConnectionRequestResult("error", "udp", str(exc))
        except TargetRefused as exc:
            return ConnectionRequestResult("refused_address", "udp", f"not called: {exc}")
        return None
