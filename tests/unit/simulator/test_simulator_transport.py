"""The session's HTTP channel (auth, cookies, redirects) against an in-memory connection."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from cwmp.digest import DigestServer, parse_authorization, parse_basic
from simulator.config import AuthMode
from simulator.http11 import HttpError, Origin, Response, origin_of
from simulator.session import Outgoing, OutKind, SessionFailed
from simulator.transport import AcsChannel, credentials_through_url, version_from_name

URL = "http://acs.test/cwmp"
INFORM = Outgoing(OutKind.REQUEST, b"<soap/>", "Inform")
EMPTY = Outgoing(OutKind.EMPTY, b"")


class Sent:
    def __init__(self, target: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.target = target
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body


Handler = Callable[[Sent], Response]


class FakeConnection:
    """Stands in for simulator.http11.Connection: hands each request to ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.origin = origin_of(URL)[0]
        self.handler = handler
        self.sent: list[Sent] = []

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
                      answer_within: float) -> Response:
        assert method == "POST"
        sent = Sent(target, headers, body)
        self.sent.append(sent)
        return self.handler(sent)

    async def close(self) -> None:
        return None


def respond(status: int, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> Response:
    return Response(status, headers or [], body)


def channel(handler: Handler, auth: AuthMode = AuthMode.DIGEST, password: str = "pw",
            ignore_cookies: bool = False) -> tuple[AcsChannel, FakeConnection]:
    connection = FakeConnection(handler)
    return AcsChannel(connection, URL, auth=auth, username="cpe-1", password=password,
                      ignore_cookies=ignore_cookies), connection


class DigestAcs:
    """Challenges unauthenticated requests and verifies the others."""

    def __init__(self, password: str = "pw") -> None:
        self.server = DigestServer("acs", secrets.token_bytes(32))
        self.password = password

    def __call__(self, sent: Sent) -> Response:
        result = self.server.verify("POST", sent.target, sent.headers.get("authorization"),
                                    lambda user: self.password if user == "cpe-1" else None)
        if not result.ok:
            return respond(401, [("www-authenticate", self.server.challenge())])
        return respond(204)


async def test_digest_challenge_answered_and_nonce_count_increments() -> None:
    ch, conn = channel(DigestAcs())
    for _ in range(3):
        reply = await ch.exchange(EMPTY)
        assert reply.status == 204
    assert "authorization" not in conn.sent[0].headers  # waits for the challenge
    creds = [parse_authorization(s.headers["authorization"]) for s in conn.sent[1:]]
    assert [c.nc for c in creds] == ["00000001", "00000002", "00000003"]
    assert {c.uri for c in creds} == {"/cwmp"} and {c.username for c in creds} == {"cpe-1"}
    assert ch.requests == 4  # one 401 leg, then one request per message


class LenientAcs(DigestAcs):
    """Accepts a replayed nonce count, as the gateway does inside a session."""

    def __call__(self, sent: Sent) -> Response:
        header = sent.headers.get("authorization")
        result = self.server.verify("POST", sent.target, header, lambda user: self.password)
        return respond(204) if result.ok or result.replayed else respond(401, [("www-authenticate",
                                                                                  self.server.challenge())])


async def test_a_sloppy_digest_client_resends_its_first_answer_and_carries_it_on() -> None:
    connection = FakeConnection(LenientAcs())
    ch = AcsChannel(connection, URL, auth=AuthMode.DIGEST, username="cpe-1", password="pw", reuse_nc=True)
    for _ in range(3):
        assert (await ch.exchange(EMPTY)).status == 204
    headers = [s.headers["authorization"] for s in connection.sent[1:]]
    assert len(set(headers)) == 1 and parse_authorization(headers[0]).nc == "00000001"
    assert ch.reused == ("/cwmp", headers[0])
    # The next session sends it before any challenge; a server refusing it gets a new answer.
    strict = FakeConnection(DigestAcs())
    later = AcsChannel(strict, URL, auth=AuthMode.DIGEST, username="cpe-1", password="pw", reuse_nc=True,
                       reused=ch.reused)
    assert (await later.exchange(INFORM)).status == 204
    sent = [s.headers["authorization"] for s in strict.sent]
    assert sent[0] == headers[0] and sent[1] != headers[0]
    assert parse_authorization(sent[1]).nc == "00000001" and later.reused == ("/cwmp", sent[1])


async def test_cookies_given_to_a_channel_are_sent() -> None:
    connection = FakeConnection(lambda sent: respond(204))
    ch = AcsChannel(connection, URL, auth=AuthMode.NONE, username="", password="", cookies={"acs_session": "old"})
    await ch.exchange(INFORM)
    assert connection.sent[0].headers["cookie"] == "acs_session=old"


def test_credentials_through_a_url_survive_only_if_unreserved() -> None:
    url = "http://files.test:7567/download/fw.bin"
    assert credentials_through_url(url, "dl2.x.y.00D09E-easy~2520cwmp-SN1", "a-b_c") == (
        url, "dl2.x.y.00D09E-easy~2520cwmp-SN1", "a-b_c")
    # What curl and wget make of a username with %25 in it: decoded once, hence wrong.
    assert credentials_through_url(url, "dl1.x.y.00D09E-easy%2520cwmp-SN1", "p")[1] == "dl1.x.y.00D09E-easy%20cwmp-SN1"
    assert credentials_through_url(url, "", "") == (url, "", "")


async def test_wrong_password_fails_after_one_answer() -> None:
    ch, conn = channel(DigestAcs(password="other"))
    with pytest.raises(SessionFailed, match="credentials refused"):
        await ch.exchange(INFORM)
    assert len(conn.sent) == 2


async def test_basic_is_sent_pre_emptively() -> None:
    ch, conn = channel(lambda sent: respond(204), auth=AuthMode.BASIC)
    await ch.exchange(INFORM)
    assert parse_basic(conn.sent[0].headers["authorization"]) == ("cpe-1", "pw")


async def test_pre_emptive_basic_then_a_digest_challenge_switches_to_digest() -> None:
    ch, conn = channel(DigestAcs(), auth=AuthMode.BASIC)
    await ch.exchange(INFORM)
    await ch.exchange(EMPTY)
    schemes = [s.headers["authorization"].split()[0] for s in conn.sent]
    assert schemes == ["Basic", "Digest", "Digest"]


async def test_no_credentials_and_a_challenge_fails() -> None:
    ch, _conn = channel(DigestAcs(), auth=AuthMode.NONE)
    with pytest.raises(SessionFailed, match="no credentials"):
        await ch.exchange(INFORM)


async def test_headers_of_requests_and_of_the_empty_post() -> None:
    ch, conn = channel(lambda sent: respond(200, [("content-type", "text/xml")], b"<x/>"), auth=AuthMode.NONE)
    reply = await ch.exchange(INFORM)
    assert (reply.status, reply.body, reply.content_type) == (200, b"<x/>", "text/xml")
    await ch.exchange(EMPTY)
    assert conn.sent[0].headers["content-type"].startswith("text/xml")
    assert conn.sent[0].headers["soapaction"] == ""
    # T3: the empty POST carries neither Content-Type nor SOAPAction.
    assert "content-type" not in conn.sent[1].headers and "soapaction" not in conn.sent[1].headers
    assert conn.sent[1].body == b""


@pytest.mark.parametrize("ignore", [False, True])
async def test_cookies_are_kept_for_the_session_unless_ignored(ignore: bool) -> None:
    replies = iter([
        respond(200, [("set-cookie", "sid=abc; Path=/; HttpOnly"), ("set-cookie", "lb=7")]),
        respond(200, [("set-cookie", "lb=; Max-Age=0")]),
        respond(204),
    ])
    ch, conn = channel(lambda sent: next(replies), auth=AuthMode.NONE, ignore_cookies=ignore)
    for _ in range(3):
        await ch.exchange(EMPTY)
    seen = [s.headers.get("cookie") for s in conn.sent]
    assert seen == ([None, None, None] if ignore else [None, "sid=abc; lb=7", "sid=abc"])


async def test_redirect_is_followed_for_the_rest_of_the_session() -> None:
    def handler(sent: Sent) -> Response:
        if sent.target == "/cwmp":
            return respond(307, [("location", "/moved")])
        return respond(204)

    ch, conn = channel(handler, auth=AuthMode.NONE)
    await ch.exchange(INFORM)
    await ch.exchange(EMPTY)
    assert [s.target for s in conn.sent] == ["/cwmp", "/moved", "/moved"]


async def test_too_many_redirects_fail() -> None:
    ch, _conn = channel(lambda sent: respond(302, [("location", "/again")]), auth=AuthMode.NONE)
    with pytest.raises(SessionFailed, match="more than 5 redirects"):
        await ch.exchange(INFORM)


async def test_overloaded_acs_gives_a_failure_with_retry_after() -> None:
    ch, _conn = channel(lambda sent: respond(503, [("retry-after", "42")]), auth=AuthMode.NONE)
    with pytest.raises(SessionFailed) as excinfo:
        await ch.exchange(INFORM)
    assert excinfo.value.reason == "HTTP 503" and excinfo.value.retry_after == 42.0


async def test_transport_errors_become_session_failures() -> None:
    def handler(sent: Sent) -> Response:
        raise HttpError("connect to acs.test:80 failed: refused")

    ch, _conn = channel(handler, auth=AuthMode.NONE)
    with pytest.raises(SessionFailed, match="connection error: connect"):
        await ch.exchange(INFORM)


def test_origins_and_host_headers() -> None:
    assert origin_of("http://acs:7547/cwmp?x=1") == (Origin("http", "acs", 7547), "/cwmp?x=1")
    assert origin_of("https://acs.example") == (Origin("https", "acs.example", 443), "/")
    assert Origin("http", "acs", 80).host_header == "acs"
    assert Origin("http", "::1", 7547).host_header == "[::1]:7547"
    with pytest.raises(HttpError):
        origin_of("ftp://acs/")


@pytest.mark.parametrize(("name", "version"), [
    ("fw-2.1.0.bin", "2.1.0"),
    ("/files/router_v3.4.5-beta.img", "3.4.5-beta"),
    ("SIM-GW%201.9.82.342.17.bin", "1.9.82.342.17"),
    ("firmware.bin", None),
    ("", None),
])
def test_version_from_file_name(name: str, version: str | None) -> None:
    assert version_from_name(name) == version


async def test_a_kept_nonce_is_signed_with_the_credentials_the_device_has_now() -> None:
    """digest_keep_nonce across a bootstrap that gave the device its own pair: the next session's
    first request carries the kept nonce, answered with the new pair (not the one of the challenge)."""
    server = DigestServer("acs", secrets.token_bytes(32))
    passwords = {"cpe-1": "pw", "dev-own": "own-pw"}

    def acs(sent: Sent) -> Response:
        result = server.verify("POST", sent.target, sent.headers.get("authorization"), passwords.get)
        return respond(204) if result.ok else respond(401, [("www-authenticate", server.challenge())])

    first = FakeConnection(acs)
    ch = AcsChannel(first, URL, auth=AuthMode.DIGEST, username="cpe-1", password="pw")
    assert (await ch.exchange(INFORM)).status == 204
    kept = ch.digest
    nonce = parse_authorization(first.sent[1].headers["authorization"]).nonce
    second = FakeConnection(acs)
    later = AcsChannel(second, URL, auth=AuthMode.DIGEST, username="dev-own", password="own-pw", digest=kept)
    assert (await later.exchange(INFORM)).status == 204
    assert len(second.sent) == 1  # no 401 leg
    sent = parse_authorization(second.sent[0].headers["authorization"])
    assert (sent.username, sent.nonce, sent.nc) == ("dev-own", nonce, "00000002")
