"""STUN Binding messages for TR-069 Annex G (RFC 5389 framing, RFC 3489 servers understood).

A CPE behind NAT learns the public address of its UDP connection-request socket by sending a
Binding request from that very socket to the operator's STUN server; the answer's
XOR-MAPPED-ADDRESS (RFC 5389) or MAPPED-ADDRESS (classic RFC 3489 servers) is the NAT mapping,
which the CPE reports as ``ManagementServer.UDPConnectionRequestAddress``. Annex G adds two
comprehension-optional attributes to the CPE's Binding requests: CONNECTION-REQUEST-BINDING
(the fixed text ``"dslforum.org/TR-111 "``, telling the server this binding is for connection
requests) and BINDING-CHANGE (sent once after the mapping changed). With a STUNUsername the
request carries USERNAME and MESSAGE-INTEGRITY (HMAC-SHA1 keyed with STUNPassword, RFC 5389
15.4 short-term credentials); with an empty one it carries neither (checklist S5).

Pure: bytes in, bytes out; the sockets are the simulator's (simulator/stunmode.py).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import struct
import zlib
from dataclasses import dataclass, field

__all__ = [
    "BINDING_ERROR",
    "BINDING_REQUEST",
    "BINDING_SUCCESS",
    "MAGIC_COOKIE",
    "StunError",
    "StunMessage",
    "build_binding_request",
    "build_binding_response",
    "check_integrity",
    "is_stun",
    "mapped_address",
    "new_transaction_id",
    "parse_message",
]

MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct("!HHI12s")
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
XOR_MAPPED_ADDRESS = 0x0020
SOFTWARE = 0x8022
FINGERPRINT = 0x8028
CONNECTION_REQUEST_BINDING = 0xC001  # TR-069 Annex G
BINDING_CHANGE = 0xC002  # TR-069 Annex G
TR111_BINDING = b"dslforum.org/TR-111 "
FINGERPRINT_XOR = 0x5354554E
_FAMILY_V4, _FAMILY_V6 = 0x01, 0x02


class StunError(ValueError):
    """Bytes that are not a well-formed STUN message, or an answer without a mapped address."""


@dataclass(frozen=True, slots=True)
class StunMessage:
    """A decoded message: its type, transaction id and attributes in their order (type, value)."""

    type: int
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...] = field(default=())
    classic: bool = False  # no magic cookie: an RFC 3489 message, its id the whole 16 bytes

    def get(self, attribute: int) -> bytes | None:
        for kind, value in self.attributes:
            if kind == attribute:
                return value
        return None

    @property
    def error(self) -> tuple[int, str] | None:
        """ERROR-CODE as (code, reason) when present."""
        value = self.get(ERROR_CODE)
        if value is None or len(value) < 4:
            return None
        return (value[2] & 0x07) * 100 + value[3], value[4:].decode("utf-8", errors="replace")


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\x00" * (-len(value) % 4)


def _message(kind: int, transaction_id: bytes, attributes: bytes) -> bytes:
    return HEADER.pack(kind, len(attributes), MAGIC_COOKIE, transaction_id) + attributes


def _with_integrity(kind: int, transaction_id: bytes, attributes: bytes, key: bytes) -> bytes:
    # The HMAC covers the header with a length that already counts MESSAGE-INTEGRITY (RFC 5389 15.4).
    covered = HEADER.pack(kind, len(attributes) + 24, MAGIC_COOKIE, transaction_id) + attributes
    return attributes + _attribute(MESSAGE_INTEGRITY, hmac.new(key, covered, hashlib.sha1).digest())


def _with_fingerprint(kind: int, transaction_id: bytes, attributes: bytes) -> bytes:
    covered = HEADER.pack(kind, len(attributes) + 8, MAGIC_COOKIE, transaction_id) + attributes
    return attributes + _attribute(FINGERPRINT, struct.pack("!I", (zlib.crc32(covered) ^ FINGERPRINT_XOR) & 0xFFFFFFFF))


def new_transaction_id() -> bytes:
    return secrets.token_bytes(12)


def build_binding_request(transaction_id: bytes | None = None, *, username: str = "", password: str = "",
                          connection_request_binding: bool = True, binding_change: bool = False,
                          fingerprint: bool = True) -> bytes:
    """A Binding request. Annex G's attributes by default; USERNAME and MESSAGE-INTEGRITY only with
    a ``username`` (the CPE's STUNUsername, ``password`` its STUNPassword)."""
    tid = transaction_id if transaction_id is not None else new_transaction_id()
    if len(tid) != 12:
        raise StunError("a transaction id is 12 bytes")
    attributes = b""
    if connection_request_binding:
        attributes += _attribute(CONNECTION_REQUEST_BINDING, TR111_BINDING)
    if binding_change:
        attributes += _attribute(BINDING_CHANGE, b"")
    if username:
        attributes += _attribute(USERNAME, username.encode("utf-8"))
        attributes = _with_integrity(BINDING_REQUEST, tid, attributes, password.encode("utf-8"))
    if fingerprint:
        attributes = _with_fingerprint(BINDING_REQUEST, tid, attributes)
    return _message(BINDING_REQUEST, tid, attributes)


def _encode_address(host: str, port: int, transaction_id: bytes, *, xor: bool) -> bytes:
    address = ipaddress.ip_address(host)
    raw = address.packed
    family = _FAMILY_V4 if address.version == 4 else _FAMILY_V6
    if xor:
        port ^= MAGIC_COOKIE >> 16
        mask = struct.pack("!I", MAGIC_COOKIE) + transaction_id
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=False))
    return struct.pack("!BBH", 0, family, port) + raw


def build_binding_response(transaction_id: bytes, host: str, port: int, *, classic: bool = False) -> bytes:
    """A Binding success response reporting ``host:port`` (what a server sends; for tests)."""
    attributes = _attribute(MAPPED_ADDRESS, _encode_address(host, port, transaction_id, xor=False))
    if not classic:
        attributes += _attribute(XOR_MAPPED_ADDRESS, _encode_address(host, port, transaction_id, xor=True))
    return _message(BINDING_SUCCESS, transaction_id, attributes)


def is_stun(data: bytes) -> bool:
    """Whether a datagram looks like STUN (RFC 5389 header with its cookie) rather than the UDP
    connection request's HTTP text, so that one socket can take both (Annex G)."""
    return len(data) >= 20 and data[0] & 0xC0 == 0 and data[4:8] == struct.pack("!I", MAGIC_COOKIE)


def parse_message(data: bytes) -> StunMessage:
    if len(data) < 20:
        raise StunError("shorter than a STUN header")
    kind, length, cookie, tid = HEADER.unpack_from(data)
    if kind & 0xC000:
        raise StunError("the first two bits of a STUN message are zero")
    if length % 4 or 20 + length > len(data):
        raise StunError("the header's length does not fit the datagram")
    attributes: list[tuple[int, bytes]] = []
    offset, end = 20, 20 + length
    while offset < end:
        if offset + 4 > end:
            raise StunError("truncated attribute header")
        attr_type, attr_len = struct.unpack_from("!HH", data, offset)
        start = offset + 4
        if start + attr_len > end:
            raise StunError("attribute longer than the message")
        attributes.append((attr_type, bytes(data[start:start + attr_len])))
        offset = start + attr_len + (-attr_len % 4)
    classic = cookie != MAGIC_COOKIE
    return StunMessage(kind, tid if not classic else struct.pack("!I", cookie) + tid, tuple(attributes), classic)


def _decode_address(value: bytes, transaction_id: bytes, *, xor: bool) -> tuple[str, int]:
    if len(value) < 4:
        raise StunError("address attribute too short")
    _zero, family, port = struct.unpack_from("!BBH", value)
    size = {_FAMILY_V4: 4, _FAMILY_V6: 16}.get(family)
    if size is None or len(value) < 4 + size:
        raise StunError(f"address family {family} or length {len(value)} is not valid")
    raw = value[4:4 + size]
    if xor:
        port ^= MAGIC_COOKIE >> 16
        mask = struct.pack("!I", MAGIC_COOKIE) + transaction_id[-12:]
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=False))
    return str(ipaddress.ip_address(raw)), port


def mapped_address(message: StunMessage, transaction_id: bytes | None = None) -> tuple[str, int]:
    """The NAT mapping a Binding success response reports: XOR-MAPPED-ADDRESS when there is one,
    else MAPPED-ADDRESS. ``transaction_id``: the request's, to reject a stray answer."""
    if message.type == BINDING_ERROR:
        code, reason = message.error or (0, "")
        raise StunError(f"the STUN server refused the Binding request: {code} {reason}".strip())
    if message.type != BINDING_SUCCESS:
        raise StunError(f"not a Binding success response (type 0x{message.type:04x})")
    if transaction_id is not None and message.transaction_id[-12:] != transaction_id:
        raise StunError("the answer is for another transaction")
    xored = None if message.classic else message.get(XOR_MAPPED_ADDRESS)
    if xored is not None:
        return _decode_address(xored, message.transaction_id, xor=True)
    plain = message.get(MAPPED_ADDRESS)
    if plain is None:
        raise StunError("the answer has no mapped address")
    return _decode_address(plain, message.transaction_id, xor=False)


def check_integrity(data: bytes, password: str) -> bool:
    """Whether a message's MESSAGE-INTEGRITY matches ``password`` (short-term credentials)."""
    message = parse_message(data)
    offset = 20
    for kind, value in message.attributes:
        if kind == MESSAGE_INTEGRITY:
            covered = bytearray(data[:offset])
            struct.pack_into("!H", covered, 2, offset - 20 + 24)
            expected = hmac.new(password.encode("utf-8"), bytes(covered), hashlib.sha1).digest()
            return hmac.compare_digest(expected, value)
        offset += 4 + len(value) + (-len(value) % 4)
    return False
