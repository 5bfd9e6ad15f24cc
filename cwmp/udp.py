"""TR-069 Annex G UDP Connection Request: building the datagram (ACS) and checking it (CPE).

A CPE behind NAT cannot receive the HTTP connection request, so the ACS sends one UDP datagram
holding an HTTP GET to the address the CPE learned through STUN (UDPConnectionRequestAddress)::

    GET http://host:port?ts=<unix secs>&id=<uint>&un=<CR username>&cn=<cnonce>&sig=<hex> HTTP/1.1
    Host: host:port

with ``sig = hex(HMAC-SHA1(key=ConnectionRequestPassword, msg=ts + id + un + cn))`` computed over
the literal values (checklist A6, S5). There is no reply; success shows as a session with
"6 CONNECTION REQUEST". The ACS should send a few copies with the same id, since UDP may drop
them; the CPE ignores the duplicates. Nothing here touches a socket.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = [
    "UdpConnectionRequest",
    "UdpConnectionRequestVerifier",
    "UdpRequestError",
    "UdpVerifyResult",
    "build_udp_connection_request",
    "format_host_port",
    "parse_udp_address",
    "parse_udp_connection_request",
    "udp_signature",
]

_DIGITS = re.compile(r"[0-9]{1,20}")
_SIG = re.compile(r"[0-9A-Fa-f]{40}")
_MAX_DATAGRAM = 2048


class UdpRequestError(ValueError):
    """A datagram is not a well-formed Annex G connection request, or an address is invalid."""


def udp_signature(password: str, ts: str | int, message_id: str | int, username: str, cnonce: str) -> str:
    """Lower-case hex HMAC-SHA1 over ``ts + id + un + cn`` keyed with the CR password."""
    message = f"{ts}{message_id}{username}{cnonce}".encode()
    return hmac.new(password.encode("utf-8"), message, hashlib.sha1).hexdigest()


def format_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def parse_udp_address(address: str) -> tuple[str, int]:
    """Split UDPConnectionRequestAddress (``host:port``, ``[v6]:port``) into host and port.

    The port is required: it is the NAT mapping the CPE discovered and no default would reach it.
    """
    text = address.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise UdpRequestError(f"invalid UDP connection request address {address!r}")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise UdpRequestError(f"UDP connection request address {address!r} needs host:port")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UdpRequestError(f"invalid UDP connection request address {address!r}")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class UdpConnectionRequest:
    """The signed fields of one request. ``ts`` and ``message_id`` are kept as the decimal text
    that was signed, since a re-formatted number ("007" vs "7") would change the signature.
    """

    ts: str
    message_id: str
    username: str
    cnonce: str
    signature: str

    @property
    def timestamp(self) -> int:
        return int(self.ts)

    @classmethod
    def create(
        cls,
        username: str,
        password: str,
        *,
        ts: int | None = None,
        message_id: int | None = None,
        cnonce: str | None = None,
    ) -> UdpConnectionRequest:
        """A freshly signed request: ``ts`` defaults to now, ``message_id`` to a random uint32."""
        ts_text = str(int(time.time()) if ts is None else ts)
        id_text = str(secrets.randbits(32) if message_id is None else message_id)
        cn = secrets.token_hex(8) if cnonce is None else cnonce
        return cls(ts_text, id_text, username, cn, udp_signature(password, ts_text, id_text, username, cn))

    def verify_signature(self, password: str) -> bool:
        expected = udp_signature(password, self.ts, self.message_id, self.username, self.cnonce)
        return hmac.compare_digest(expected.encode("ascii"), self.signature.lower().encode("ascii"))

    def to_datagram(self, host: str, port: int) -> bytes:
        """The datagram for ``host:port`` (the CPE's UDPConnectionRequestAddress)."""
        authority = format_host_port(host, port)
        # un and cn are percent-encoded so that "&" or "=" in a username cannot break the query;
        # the receiver decodes them before checking the signature, which covers the raw values.
        query = (
            f"ts={self.ts}&id={self.message_id}&un={quote(self.username, safe='')}"
            f"&cn={quote(self.cnonce, safe='')}&sig={self.signature}"
        )
        return f"GET http://{authority}?{query} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()


def build_udp_connection_request(
    host: str,
    port: int,
    username: str,
    password: str,
    *,
    ts: int | None = None,
    message_id: int | None = None,
    cnonce: str | None = None,
) -> bytes:
    """One signed Annex G datagram for ``host:port``. Send it a few times, unchanged."""
    request = UdpConnectionRequest.create(username, password, ts=ts, message_id=message_id, cnonce=cnonce)
    return request.to_datagram(host, port)


def parse_udp_connection_request(datagram: bytes) -> UdpConnectionRequest:
    """Parse a datagram leniently (absolute or origin-form target, any header set, LF or CRLF).

    Raises :class:`UdpRequestError` with the reason when it is not a connection request.
    """
    if len(datagram) > _MAX_DATAGRAM:
        raise UdpRequestError("datagram too large")
    text = datagram.decode("utf-8", errors="replace")
    request_line = text.split("\n", 1)[0].strip()
    parts = request_line.split()
    if len(parts) != 3:
        raise UdpRequestError("request line is not 'GET <url> HTTP/1.1'")
    method, target, version = parts
    if method.upper() != "GET":
        raise UdpRequestError(f"method {method!r} is not GET")
    if not version.upper().startswith("HTTP/"):
        raise UdpRequestError(f"bad HTTP version {version!r}")
    try:
        query = urlsplit(target).query
    except ValueError as exc:
        raise UdpRequestError(f"bad request target: {exc}") from exc
    fields: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        fields.setdefault(name, value)  # first occurrence wins, as for cookies
    missing = [name for name in ("ts", "id", "un", "cn", "sig") if name not in fields]
    if missing:
        raise UdpRequestError(f"missing query parameter(s): {', '.join(missing)}")
    if not _DIGITS.fullmatch(fields["ts"]):
        raise UdpRequestError("ts is not a decimal number")
    if not _DIGITS.fullmatch(fields["id"]):
        raise UdpRequestError("id is not a decimal number")
    if not _SIG.fullmatch(fields["sig"]):
        raise UdpRequestError("sig is not 40 hexadecimal digits")
    return UdpConnectionRequest(fields["ts"], fields["id"], fields["un"], fields["cn"], fields["sig"])


@dataclass(frozen=True, slots=True)
class UdpVerifyResult:
    """``accepted`` means: start a session with "6 CONNECTION REQUEST". ``duplicate`` marks a
    correctly signed copy of a request already accepted (expected: the ACS sends several).
    """

    accepted: bool
    reason: str = ""
    duplicate: bool = False
    request: UdpConnectionRequest | None = None


class UdpConnectionRequestVerifier:
    """CPE-side checks for incoming datagrams, keeping the state the anti-replay rules need.

    Checks, in order: the datagram parses; ``un`` is the configured username; the signature;
    optionally ``ts`` within ``max_clock_skew`` of the CPE clock (only meaningful when the CPE
    clock is synchronised, hence off by default); the id is not one already accepted (duplicate,
    ignored); ``ts`` is not older than the last accepted request (replay). Requests with the same
    ``ts`` but a new id are accepted: two genuine requests can fall in the same second.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        max_clock_skew: float | None = None,
        remembered_ids: int = 16,
    ) -> None:
        self.username = username
        self.password = password
        self.max_clock_skew = max_clock_skew
        self.last_ts: int | None = None
        self._recent_ids: deque[str] = deque(maxlen=max(1, remembered_ids))

    def verify(self, datagram: bytes, now: float | None = None) -> UdpVerifyResult:
        try:
            request = parse_udp_connection_request(datagram)
        except UdpRequestError as exc:
            return UdpVerifyResult(False, f"malformed: {exc}")
        if not hmac.compare_digest(request.username.encode("utf-8"), self.username.encode("utf-8")):
            return UdpVerifyResult(False, "username mismatch", request=request)
        if not request.verify_signature(self.password):
            return UdpVerifyResult(False, "bad signature", request=request)
        if self.max_clock_skew is not None:
            current = time.time() if now is None else now
            if abs(current - request.timestamp) > self.max_clock_skew:
                return UdpVerifyResult(False, "timestamp outside the accepted window", request=request)
        # Ids are compared as numbers so "0042" and "42" count as the same message.
        message_id = str(int(request.message_id))
        if message_id in self._recent_ids:
            return UdpVerifyResult(False, "duplicate id", duplicate=True, request=request)
        if self.last_ts is not None and request.timestamp < self.last_ts:
            return UdpVerifyResult(False, "timestamp older than the last accepted request", request=request)
        self.last_ts = request.timestamp
        self._recent_ids.append(message_id)
        return UdpVerifyResult(True, request=request)
