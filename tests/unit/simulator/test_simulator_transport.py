"""The session's HTTP channel (auth, cookies, redirects) against an in-memory httpx transport."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from http.cookiejar import CookieJar

import httpx
import pytest

from cwmp.digest import DigestServer, parse_authorization, parse_basic
from simulator.config import AuthMode
from simulator.session import Outgoing, OutKind, SessionFailed
from simulator.transport import AcsChannel, _NoCookies, version_from_name

URL = "http://acs.test/cwmp"
INFORM = Outgoing(OutKind.REQUEST, b"<soap/>", "Inform")
EMPTY = Outgoing(OutKind.EMPTY, b"")


def channel(handler: Callable[[httpx.Request], httpx.Response], auth: AuthMode = AuthMode.DIGEST,
            password: str = "pw", ignore_cookies: bool = False) -> AcsChannel:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), cookies=CookieJar(policy=_NoCookies()))
    return AcsChannel(client, URL, auth=auth, username="cpe-1", password=password,
                      ignore_cookies=ignore_cookies)


class DigestAcs:
    """Challenges unauthenticated requests, verifies the others, records what came."""

    def __init__(self, password: str = "pw") -> None:
        self.server = DigestServer("acs", secrets.token_bytes(32))
        self.password = password
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        header = request.headers.get("authorization")
        result = self.server.verify("POST", request.url.raw_path.decode(), header,
                                    lambda user: self.password if user == "cpe-1" else None)
        if not result.ok:
            return httpx.Response(401, headers={"www-authenticate": self.server.challenge()})
        return httpx.Response(204)


async def test_digest_challenge_answered_and_nonce_count_increments() -> None:
    acs = DigestAcs()
    ch = channel(acs)
    for _ in range(3):
        reply = await ch.exchange(EMPTY)
        assert reply.status == 204
    assert acs.requests[0].headers.get("authorization") is None  # waits for the challenge
    creds = [parse_authorization(r.headers["authorization"]) for r in acs.requests[1:]]
    assert [c.nc for c in creds] == ["00000001", "00000002", "00000003"]
    assert {c.uri for c in creds} == {"/cwmp"} and {c.username for c in creds} == {"cpe-1"}
    assert ch.requests == 4  # one 401 leg, then one request per message


async def test_wrong_password_fails_after_one_answer() -> None:
    acs = DigestAcs(password="other")
    with pytest.raises(SessionFailed, match="credentials refused"):
        await channel(acs).exchange(INFORM)
    assert len(acs.requests) == 2


async def test_basic_is_sent_pre_emptively() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(204)

    await channel(handler, auth=AuthMode.BASIC).exchange(INFORM)
    assert parse_basic(seen[0]) == ("cpe-1", "pw")


async def test_no_credentials_and_a_challenge_fails() -> None:
    with pytest.raises(SessionFailed, match="no credentials"):
        await channel(DigestAcs(), auth=AuthMode.NONE).exchange(INFORM)


async def test_headers_of_requests_and_of_the_empty_post() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"<x/>", headers={"content-type": "text/xml"})

    ch = channel(handler, auth=AuthMode.NONE)
    reply = await ch.exchange(INFORM)
    assert (reply.status, reply.body, reply.content_type) == (200, b"<x/>", "text/xml")
    await ch.exchange(EMPTY)
    assert seen[0].headers["content-type"].startswith("text/xml")
    assert seen[0].headers["soapaction"] == ""
    # T3: the empty POST carries neither Content-Type nor SOAPAction.
    assert "content-type" not in seen[1].headers and "soapaction" not in seen[1].headers
    assert seen[1].content == b""


@pytest.mark.parametrize("ignore", [False, True])
async def test_cookies_are_kept_for_the_session_unless_ignored(ignore: bool) -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        if len(seen) == 1:
            return httpx.Response(200, headers=[("set-cookie", "sid=abc; Path=/; HttpOnly"),
                                                ("set-cookie", "lb=7")])
        if len(seen) == 2:
            return httpx.Response(200, headers={"set-cookie": "lb=; Max-Age=0"})
        return httpx.Response(204)

    ch = channel(handler, auth=AuthMode.NONE, ignore_cookies=ignore)
    for _ in range(3):
        await ch.exchange(EMPTY)
    if ignore:
        assert seen == [None, None, None]
    else:
        assert seen == [None, "sid=abc; lb=7", "sid=abc"]


async def test_redirect_is_followed_for_the_rest_of_the_session() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/cwmp":
            return httpx.Response(307, headers={"location": "/moved"})
        return httpx.Response(204)

    ch = channel(handler, auth=AuthMode.NONE)
    await ch.exchange(INFORM)
    await ch.exchange(EMPTY)
    assert paths == ["/cwmp", "/moved", "/moved"]


async def test_overloaded_acs_gives_a_failure_with_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"retry-after": "42"})

    with pytest.raises(SessionFailed) as excinfo:
        await channel(handler, auth=AuthMode.NONE).exchange(INFORM)
    assert excinfo.value.reason == "HTTP 503" and excinfo.value.retry_after == 42.0


async def test_transport_errors_become_session_failures() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(SessionFailed, match="connection error"):
        await channel(handler, auth=AuthMode.NONE).exchange(INFORM)


@pytest.mark.parametrize(("name", "version"), [
    ("fw-2.1.0.bin", "2.1.0"),
    ("/files/router_v3.4.5-beta.img", "3.4.5-beta"),
    ("SIM-GW%201.9.82.342.17.bin", "1.9.82.342.17"),
    ("firmware.bin", None),
    ("", None),
])
def test_version_from_file_name(name: str, version: str | None) -> None:
    assert version_from_name(name) == version
