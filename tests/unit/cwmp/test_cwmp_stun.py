"""The STUN Binding codec of TR-069 Annex G (cwmp/stun.py): RFC 5389 framing, RFC 3489 answers."""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib

import pytest

from cwmp import stun

TID = bytes(range(1, 13))


def test_a_binding_request_has_the_rfc5389_header_and_annex_g_attribute() -> None:
    data = stun.build_binding_request(TID)
    kind, length, cookie, tid = struct.unpack_from("!HHI12s", data)
    assert (kind, cookie, tid) == (stun.BINDING_REQUEST, 0x2112A442, TID)
    assert length == len(data) - 20 and length % 4 == 0
    message = stun.parse_message(data)
    assert message.get(stun.CONNECTION_REQUEST_BINDING) == b"dslforum.org/TR-111 "
    assert message.get(stun.BINDING_CHANGE) is None
    assert message.get(stun.USERNAME) is None and message.get(stun.MESSAGE_INTEGRITY) is None


def test_the_fingerprint_is_crc32_of_the_message_before_it_xor_stun() -> None:
    data = stun.build_binding_request(TID)
    fingerprint = stun.parse_message(data).get(stun.FINGERPRINT)
    assert fingerprint is not None
    covered = data[:-8]
    assert struct.unpack("!I", fingerprint)[0] == zlib.crc32(covered) ^ 0x5354554E


def test_binding_change_is_sent_when_asked() -> None:
    message = stun.parse_message(stun.build_binding_request(TID, binding_change=True))
    assert message.get(stun.BINDING_CHANGE) == b""


def test_a_stun_username_brings_username_and_message_integrity() -> None:
    data = stun.build_binding_request(TID, username="cpe-1", password="s3cret", fingerprint=False)
    message = stun.parse_message(data)
    assert message.get(stun.USERNAME) == b"cpe-1"
    integrity = message.get(stun.MESSAGE_INTEGRITY)
    assert integrity is not None and len(integrity) == 20
    # RFC 5389 15.4: the HMAC covers the message up to the attribute, the length counting it.
    covered = bytearray(data[:-24])
    struct.pack_into("!H", covered, 2, len(data) - 20)
    assert integrity == hmac.new(b"s3cret", bytes(covered), hashlib.sha1).digest()
    assert stun.check_integrity(data, "s3cret")
    assert not stun.check_integrity(data, "wrong")


def test_integrity_still_checks_with_a_fingerprint_after_it() -> None:
    data = stun.build_binding_request(TID, username="u", password="p")
    assert stun.check_integrity(data, "p") and not stun.check_integrity(data, "q")


@pytest.mark.parametrize("host", ["192.0.2.7", "2001:db8::17"])
def test_xor_mapped_address_round_trips(host: str) -> None:
    answer = stun.parse_message(stun.build_binding_response(TID, host, 40123))
    assert stun.mapped_address(answer, TID) == (host, 40123)


def test_the_xor_value_differs_from_the_plain_one() -> None:
    answer = stun.parse_message(stun.build_binding_response(TID, "192.0.2.7", 40123))
    assert answer.get(stun.XOR_MAPPED_ADDRESS) != answer.get(stun.MAPPED_ADDRESS)
    # Port 40123 xor 0x2112, address 192.0.2.7 xor 0x2112A442.
    xored = answer.get(stun.XOR_MAPPED_ADDRESS)
    assert xored == struct.pack("!BBH", 0, 1, 40123 ^ 0x2112) + bytes([192 ^ 0x21, 0 ^ 0x12, 2 ^ 0xA4, 7 ^ 0x42])


def test_a_classic_rfc3489_answer_gives_mapped_address() -> None:
    classic_tid = b"\x99" * 16
    attributes = struct.pack("!HH", 0x0001, 8) + struct.pack("!BBH", 0, 1, 3478) + bytes([198, 51, 100, 4])
    data = struct.pack("!HH", 0x0101, len(attributes)) + classic_tid + attributes
    message = stun.parse_message(data)
    assert message.classic and message.transaction_id == classic_tid
    assert stun.mapped_address(message) == ("198.51.100.4", 3478)


def test_an_answer_for_another_transaction_is_refused() -> None:
    answer = stun.parse_message(stun.build_binding_response(TID, "192.0.2.7", 1))
    with pytest.raises(stun.StunError, match="another transaction"):
        stun.mapped_address(answer, b"\x00" * 12)


def test_an_error_response_says_its_code_and_reason() -> None:
    reason = b"Unauthorized"
    value = struct.pack("!HBB", 0, 4, 1) + reason
    attributes = struct.pack("!HH", 0x0009, len(value)) + value + b"\x00" * (-len(value) % 4)
    data = struct.pack("!HHI12s", stun.BINDING_ERROR, len(attributes), 0x2112A442, TID) + attributes
    message = stun.parse_message(data)
    assert message.error == (401, "Unauthorized")
    with pytest.raises(stun.StunError, match="401 Unauthorized"):
        stun.mapped_address(message, TID)


def test_stun_and_the_udp_connection_request_are_told_apart() -> None:
    assert stun.is_stun(stun.build_binding_response(TID, "192.0.2.7", 1))
    assert not stun.is_stun(b"GET http://192.0.2.7:1?ts=1&id=1&un=a&cn=b&sig=00 HTTP/1.1\r\n\r\n")
    assert not stun.is_stun(b"\x00\x01\x00\x00")


@pytest.mark.parametrize("data, reason", [
    (b"\x00\x01", "shorter"),
    (b"\xc0\x01\x00\x00" + struct.pack("!I", 0x2112A442) + TID, "first two bits"),
    (struct.pack("!HHI12s", 0x0101, 8, 0x2112A442, TID), "length"),
    (struct.pack("!HHI12s", 0x0101, 4, 0x2112A442, TID) + struct.pack("!HH", 1, 40), "longer than"),
])
def test_malformed_messages_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(stun.StunError, match=reason):
        stun.parse_message(data)


def test_an_answer_without_an_address_is_refused() -> None:
    data = struct.pack("!HHI12s", stun.BINDING_SUCCESS, 0, 0x2112A442, TID)
    with pytest.raises(stun.StunError, match="no mapped address"):
        stun.mapped_address(stun.parse_message(data), TID)


def test_a_transaction_id_must_be_12_bytes() -> None:
    with pytest.raises(stun.StunError):
        stun.build_binding_request(b"short")
