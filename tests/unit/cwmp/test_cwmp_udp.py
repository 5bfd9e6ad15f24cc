"""Annex G UDP connection request: datagram format, signature, CPE-side anti-replay rules."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwmp.udp import (
    UdpConnectionRequest,
    UdpConnectionRequestVerifier,
    UdpRequestError,
    build_udp_connection_request,
    format_host_port,
    parse_udp_address,
    parse_udp_connection_request,
    udp_signature,
)

TS = 1_120_673_700


def test_signature_is_hmac_sha1_over_concatenated_fields() -> None:
    expected = hmac.new(b"pw", b"1120673700" + b"1234" + b"CPE57689" + b"XTGRWIPC6D3IPXS3", hashlib.sha1)
    assert udp_signature("pw", TS, 1234, "CPE57689", "XTGRWIPC6D3IPXS3") == expected.hexdigest()
    assert udp_signature("pw", "1120673700", "1234", "CPE57689", "XTGRWIPC6D3IPXS3") == expected.hexdigest()


def test_datagram_format() -> None:
    datagram = build_udp_connection_request(
        "203.0.113.7", 5060, "CPE57689", "pw", ts=TS, message_id=1234, cnonce="XTGRWIPC6D3IPXS3"
    )
    sig = udp_signature("pw", TS, 1234, "CPE57689", "XTGRWIPC6D3IPXS3")
    expected = (
        f"GET http://203.0.113.7:5060?ts={TS}&id=1234&un=CPE57689&cn=XTGRWIPC6D3IPXS3"
        f"&sig={sig} HTTP/1.1\r\nHost: 203.0.113.7:5060\r\n\r\n"
    )
    assert datagram == expected.encode()


def test_datagram_ipv6_host_is_bracketed() -> None:
    datagram = build_udp_connection_request("2001:db8::1", 7547, "u", "p", ts=TS, message_id=1, cnonce="c")
    assert datagram.startswith(b"GET http://[2001:db8::1]:7547?ts=")
    assert b"\r\nHost: [2001:db8::1]:7547\r\n\r\n" in datagram
    assert parse_udp_connection_request(datagram).username == "u"


def test_defaults_fill_ts_id_and_cnonce() -> None:
    request = UdpConnectionRequest.create("u", "p")
    assert request.ts.isdigit() and request.message_id.isdigit()
    assert 0 <= int(request.message_id) < 2**32
    assert len(request.cnonce) == 16
    assert request.verify_signature("p")
    assert UdpConnectionRequest.create("u", "p").cnonce != request.cnonce


def test_special_characters_in_username_survive() -> None:
    datagram = build_udp_connection_request("h", 1, "a&b=c d+é", "p", ts=TS, message_id=1, cnonce="x&y")
    request = parse_udp_connection_request(datagram)
    assert (request.username, request.cnonce) == ("a&b=c d+é", "x&y")
    assert request.verify_signature("p")


@settings(max_examples=200, deadline=None)
@given(
    username=st.text(min_size=0, max_size=40),
    password=st.text(max_size=40),
    ts=st.integers(min_value=0, max_value=2**40),
    message_id=st.integers(min_value=0, max_value=2**32 - 1),
    cnonce=st.text(alphabet="abcdefABCDEF0123456789", min_size=1, max_size=32),
)
def test_build_parse_verify_round_trip(
    username: str, password: str, ts: int, message_id: int, cnonce: str
) -> None:
    datagram = build_udp_connection_request(
        "192.0.2.1", 40000, username, password, ts=ts, message_id=message_id, cnonce=cnonce
    )
    request = parse_udp_connection_request(datagram)
    assert (request.timestamp, int(request.message_id), request.username, request.cnonce) == (
        ts,
        message_id,
        username,
        cnonce,
    )
    assert request.verify_signature(password)
    verifier = UdpConnectionRequestVerifier(username, password)
    assert verifier.verify(datagram).accepted


def genieacs_style(username: str, password: str, ts: int, message_id: int, cnonce: str) -> bytes:
    # What GenieACS sends: raw values in the query, lower-case hex, no path.
    sig = hmac.new(
        password.encode(), f"{ts}{message_id}{username}{cnonce}".encode(), hashlib.sha1
    ).hexdigest()
    uri = f"http://10.0.0.2:5000?ts={ts}&id={message_id}&un={username}&cn={cnonce}&sig={sig}"
    return f"GET {uri} HTTP/1.1\r\nHost: 10.0.0.2:5000\r\n\r\n".encode()


def test_accepts_genieacs_style_datagram() -> None:
    verifier = UdpConnectionRequestVerifier("cruser", "crpass")
    result = verifier.verify(genieacs_style("cruser", "crpass", TS, 99, "0a1b2c3d4e5f6a7b"), now=TS)
    assert result.accepted, result.reason


def test_lenient_parsing_variants() -> None:
    sig = udp_signature("p", TS, 5, "u", "c").upper()
    for datagram in [
        f"GET http://h:1/?ts={TS}&id=5&un=u&cn=c&sig={sig} HTTP/1.1\r\n\r\n",  # path, no Host, upper hex
        f"GET /?ts={TS}&id=5&un=u&cn=c&sig={sig} HTTP/1.1\n",  # origin form, LF only
        f"get http://h:1?sig={sig}&cn=c&un=u&id=5&ts={TS}&extra=1 HTTP/1.0\r\n",  # any order, extras
    ]:
        result = UdpConnectionRequestVerifier("u", "p").verify(datagram.encode())
        assert result.accepted, (datagram, result.reason)


# ---------------------------------------------------------------------------------------------
# CPE-side checks
# ---------------------------------------------------------------------------------------------


def make(ts: int = TS, message_id: int = 1, *, username: str = "u", password: str = "p") -> bytes:
    return build_udp_connection_request("h", 1, username, password, ts=ts, message_id=message_id, cnonce="cn")


def test_valid_request_accepted() -> None:
    verifier = UdpConnectionRequestVerifier("u", "p")
    result = verifier.verify(make())
    assert result.accepted and result.request is not None and result.request.message_id == "1"
    assert verifier.last_ts == TS


def test_wrong_password_rejected() -> None:
    result = UdpConnectionRequestVerifier("u", "p").verify(make(password="wrong"))
    assert not result.accepted and result.reason == "bad signature"


def test_wrong_username_rejected() -> None:
    result = UdpConnectionRequestVerifier("u", "p").verify(make(username="other"))
    assert not result.accepted and result.reason == "username mismatch"


def test_tampered_fields_rejected() -> None:
    datagram = make(ts=TS, message_id=7)
    for old, new in [
        (f"ts={TS}".encode(), f"ts={TS + 1}".encode()),
        (b"id=7", b"id=8"),
        (b"cn=cn", b"cn=cx"),
    ]:
        result = UdpConnectionRequestVerifier("u", "p").verify(datagram.replace(old, new))
        assert not result.accepted and result.reason == "bad signature"


def test_duplicate_copies_ignored() -> None:
    verifier = UdpConnectionRequestVerifier("u", "p")
    datagram = make(message_id=42)
    results = [verifier.verify(datagram) for _ in range(3)]  # the ACS sends three copies
    assert [r.accepted for r in results] == [True, False, False]
    assert all(r.duplicate for r in results[1:])


def test_zero_padded_id_is_the_same_message() -> None:
    verifier = UdpConnectionRequestVerifier("u", "p")
    assert verifier.verify(make(message_id=42)).accepted
    sig = udp_signature("p", TS + 1, "0042", "u", "cn")
    padded = f"GET http://h:1?ts={TS + 1}&id=0042&un=u&cn=cn&sig={sig} HTTP/1.1\r\n\r\n".encode()
    assert verifier.verify(padded).duplicate


def test_older_timestamp_rejected_as_replay() -> None:
    verifier = UdpConnectionRequestVerifier("u", "p")
    old = make(ts=TS, message_id=1)
    assert verifier.verify(make(ts=TS + 60, message_id=2)).accepted
    result = verifier.verify(old)
    assert not result.accepted and not result.duplicate and "older" in result.reason


def test_same_second_new_id_and_newer_timestamps_accepted() -> None:
    verifier = UdpConnectionRequestVerifier("u", "p")
    assert verifier.verify(make(ts=TS, message_id=1)).accepted
    assert verifier.verify(make(ts=TS, message_id=2)).accepted
    assert verifier.verify(make(ts=TS + 1, message_id=3)).accepted
    assert verifier.last_ts == TS + 1


def test_forged_request_does_not_advance_state() -> None:
    verifier = UdpConnectionRequestVerifier("u", "p")
    assert not verifier.verify(make(ts=TS + 10_000, message_id=5, password="x")).accepted
    assert verifier.last_ts is None
    assert verifier.verify(make(ts=TS, message_id=5)).accepted


def test_clock_window_when_enabled() -> None:
    verifier = UdpConnectionRequestVerifier("u", "p", max_clock_skew=300)
    assert not verifier.verify(make(ts=TS), now=TS + 301).accepted
    assert verifier.verify(make(ts=TS), now=TS + 299).accepted
    # Off by default: a CPE without NTP must still accept requests.
    assert UdpConnectionRequestVerifier("u", "p").verify(make(ts=0)).accepted


def test_remembered_ids_bounded() -> None:
    verifier = UdpConnectionRequestVerifier("u", "p", remembered_ids=2)
    for message_id in (1, 2, 3):
        assert verifier.verify(make(message_id=message_id)).accepted
    # id 1 fell out of the window; with the same ts it is accepted again, 3 is still a duplicate.
    assert verifier.verify(make(message_id=1)).accepted
    assert verifier.verify(make(message_id=3)).duplicate


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\r\n",
        b"POST http://h:1?ts=1&id=1&un=u&cn=c&sig=" + b"0" * 40 + b" HTTP/1.1\r\n",
        b"GET http://h:1?ts=1&id=1&un=u&cn=c HTTP/1.1\r\n",
        b"GET http://h:1?ts=x&id=1&un=u&cn=c&sig=" + b"0" * 40 + b" HTTP/1.1\r\n",
        b"GET http://h:1?ts=1&id=-1&un=u&cn=c&sig=" + b"0" * 40 + b" HTTP/1.1\r\n",
        b"GET http://h:1?ts=1&id=1&un=u&cn=c&sig=zz HTTP/1.1\r\n",
        b"GET http://h:1?ts=1&id=1&un=u&cn=c&sig=" + b"0" * 40 + b" FTP/1.1\r\n",
        b"GET http://[::1?ts=1&id=1&un=u&cn=c&sig=" + b"0" * 40 + b" HTTP/1.1\r\n",
        b"GET  HTTP/1.1",
        b"\xff\xfe\x00garbage",
        b"GET http://h:1?" + b"a=b&" * 1000 + b" HTTP/1.1\r\n",
        b"POST /HTTPS/1.1\r\nContent-Lenght: 3\r\n\r\nabc",  # icwmp's broken lightweight notification
    ],
)
def test_malformed_datagrams(datagram: bytes) -> None:
    with pytest.raises(UdpRequestError):
        parse_udp_connection_request(datagram)
    result = UdpConnectionRequestVerifier("u", "p").verify(datagram)
    assert not result.accepted and result.reason.startswith("malformed")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_verifier_never_raises(datagram: bytes) -> None:
    assert not UdpConnectionRequestVerifier("u", "p").verify(datagram).accepted


# ---------------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("203.0.113.7:5060", ("203.0.113.7", 5060)),
        (" cpe.example.net:1 ", ("cpe.example.net", 1)),
        ("[2001:db8::1]:7547", ("2001:db8::1", 7547)),
    ],
)
def test_parse_udp_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_udp_address(address) == expected
    assert parse_udp_address(format_host_port(*expected)) == expected


@pytest.mark.parametrize(
    "address",
    ["", "host", "host:", ":80", "host:0", "host:65536", "host:x", "2001:db8::1", "[2001:db8::1]", "[::1]80"],
)
def test_parse_udp_address_rejects(address: str) -> None:
    with pytest.raises(UdpRequestError):
        parse_udp_address(address)
