"""HTTP Digest / Basic: RFC vectors, captured CPE traffic, attacks, malformed input, round trips."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwmp.digest import (
    ALGORITHMS,
    AuthHeaderError,
    Challenge,
    DigestClient,
    DigestError,
    DigestServer,
    HmacNonceIssuer,
    MemoryNonceCountStore,
    NonceCheck,
    NonceStatus,
    _parse_auth_list,
    _parse_auth_list_strict,
    basic_authorization,
    basic_challenge,
    canonical_algorithm,
    compute_ha1,
    compute_response,
    parse_authorization,
    parse_basic,
    parse_challenge,
    parse_challenges,
)

SECRET = b"unit-test-secret-0123456789abcdef"
T0 = 1_700_000_000.0


class FixedNonces:
    """A NonceIssuer that accepts a known set of nonces, to replay third-party captures."""

    def __init__(self, *nonces: str) -> None:
        self.nonces = nonces

    def issue(self, now: float) -> str:
        return self.nonces[0]

    def check(self, nonce: str, now: float) -> NonceCheck:
        if nonce in self.nonces:
            return NonceCheck(NonceStatus.VALID)
        return NonceCheck(NonceStatus.INVALID, "unknown")


def passwords(table: dict[str, str]) -> Callable[[str], str | None]:
    return table.get


def server(**kwargs: Any) -> DigestServer:
    kwargs.setdefault("realm", "acs")
    kwargs.setdefault("secret", SECRET)
    return DigestServer(**kwargs)


# ---------------------------------------------------------------------------------------------
# Published test vectors
# ---------------------------------------------------------------------------------------------

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, '
    'cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_CHALLENGES = [
    f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
    f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    for alg in ("SHA-256", "MD5")
]
RFC7616_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


def test_rfc2617_response() -> None:
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = compute_response(
        "MD5",
        ha1,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "GET",
        "/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc2617_client_produces_the_published_response() -> None:
    client = DigestClient("Mufasa", "Circle Of Life", cnonce_factory=lambda: "0a4f113b")
    header = client.authorization("GET", "/dir/index.html", RFC2617_CHALLENGE)
    creds = parse_authorization(header)
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert (creds.qop, creds.nc, creds.cnonce) == ("auth", "00000001", "0a4f113b")
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    assert creds.algorithm is None  # the challenge did not name one, so neither do we


def test_rfc2617_server_accepts_the_published_header() -> None:
    srv = DigestServer(
        "testrealm@host.com",
        SECRET,
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
        nonces=FixedNonces("dcd98b7102dd2f0e8b11d0f600bfb0c093"),
    )
    result = srv.verify(
        "GET", "/dir/index.html", RFC2617_AUTHORIZATION, passwords({"Mufasa": "Circle Of Life"})
    )
    assert result.ok, result.reason
    assert result.username == "Mufasa"
    assert result.nc == 1


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_vectors(algorithm: str) -> None:
    ha1 = compute_ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    response = compute_response(
        algorithm,
        ha1,
        RFC7616_NONCE,
        "GET",
        "/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce=RFC7616_CNONCE,
    )
    assert response == RFC7616_RESPONSES[algorithm]


def test_rfc7616_client_takes_the_first_supported_challenge() -> None:
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    creds = parse_authorization(client.authorization("GET", "/dir/index.html", RFC7616_CHALLENGES))
    assert creds.algorithm == "SHA-256"
    assert creds.response == RFC7616_RESPONSES["SHA-256"]


def test_rfc7616_client_md5_only() -> None:
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    creds = parse_authorization(client.authorization("GET", "/dir/index.html", RFC7616_CHALLENGES[1]))
    assert creds.algorithm == "MD5"
    assert creds.response == RFC7616_RESPONSES["MD5"]
    assert creds.opaque == RFC7616_OPAQUE


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_server_accepts_both_published_responses(algorithm: str) -> None:
    srv = DigestServer(
        "http-auth@example.org",
        SECRET,
        algorithms=("SHA-256", "MD5"),
        opaque=RFC7616_OPAQUE,
        nonces=FixedNonces(RFC7616_NONCE),
    )
    header = (
        f'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
        f'algorithm={algorithm}, nonce="{RFC7616_NONCE}", nc=00000001, cnonce="{RFC7616_CNONCE}", '
        f'qop=auth, response="{RFC7616_RESPONSES[algorithm]}", opaque="{RFC7616_OPAQUE}"'
    )
    result = srv.verify("GET", "/dir/index.html", header, passwords({"Mufasa": "Circle of Life"}))
    assert result.ok, result.reason
    assert result.algorithm == algorithm


def test_rfc7616_challenge_pair_parses_as_two_challenges() -> None:
    challenges = parse_challenges(", ".join(RFC7616_CHALLENGES))
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert challenges[0].qop_options == ("auth", "auth-int")
    assert challenges[0].nonce == RFC7616_NONCE


# ---------------------------------------------------------------------------------------------
# Captured CPE traffic
# ---------------------------------------------------------------------------------------------

# easycwmp 1.8.6 against a recording ACS; credentials acsuser/acspass, realm "acs", opaque "0123".
EASYCWMP_CHALLENGE = (
    'Digest realm="acs", qop="auth", nonce="00aa5e80fa97db7cbc6a49b46aaed1d5", opaque="0123", algorithm=MD5'
)
EASYCWMP_HEADERS = [
    'Digest username="acsuser", realm="acs", nonce="00aa5e80fa97db7cbc6a49b46aaed1d5", uri="/", '
    'cnonce="YjM4MWQ3MTU1Y2I0M2Y2ZGZiMmRjYzNiNjQ0NTExY2I=", nc=00000001, qop=auth, '
    'response="029561c22b85266dc63646c38f8ca034", opaque="0123", algorithm=MD5',
    'Digest username="acsuser", realm="acs", nonce="00aa5e80fa97db7cbc6a49b46aaed1d5", uri="/", '
    'cnonce="YjM4MWQ3MTU1Y2I0M2Y2ZGZiMmRjYzNiNjQ0NTExY2I=", nc=00000002, qop=auth, '
    'response="778899e63c566c308dc426bd53c1f9de", opaque="0123", algorithm=MD5',
    'Digest username="acsuser", realm="acs", nonce="00aa5e80fa97db7cbc6a49b46aaed1d5", uri="/", '
    'cnonce="YjM4MWQ3MTU1Y2I0M2Y2ZGZiMmRjYzNiNjQ0NTExY2I=", nc=00000003, qop=auth, '
    'response="b5bae4977420341a71164e0e5a031ea6", opaque="0123", algorithm=MD5',
]
EASYCWMP_SPV_FAULT = (
    'Digest username="acsuser", realm="acs", nonce="2faacb7c882498aca9916f93c170ad38", uri="/", '
    'cnonce="ZGNlYTU3YjVlMDk4YTlhNzhlNDgzMzIzNzYzZTQ5Mjc=", nc=0000000b, qop=auth, '
    'response="8c51b7070c36689fd806ff889de267c1", opaque="0123", algorithm=MD5'
)
INTEROP_DIR = Path(__file__).resolve().parents[4] / "shared" / "interop"


def easycwmp_server(*nonces: str) -> DigestServer:
    return DigestServer("acs", SECRET, opaque="0123", nonces=FixedNonces(*nonces))


ACS_USERS = passwords({"acsuser": "acspass"})


def test_easycwmp_session_headers_accepted_in_order() -> None:
    srv = easycwmp_server("00aa5e80fa97db7cbc6a49b46aaed1d5")
    for expected_nc, header in enumerate(EASYCWMP_HEADERS, start=1):
        result = srv.verify("POST", "/", header, ACS_USERS)
        assert result.ok, result.reason
        assert (result.username, result.nc) == ("acsuser", expected_nc)


def test_easycwmp_replayed_header_rejected() -> None:
    srv = easycwmp_server("00aa5e80fa97db7cbc6a49b46aaed1d5")
    assert srv.verify("POST", "/", EASYCWMP_HEADERS[1], ACS_USERS).ok
    replay = srv.verify("POST", "/", EASYCWMP_HEADERS[1], ACS_USERS)
    assert not replay.ok and "replayed" in replay.reason
    older = srv.verify("POST", "/", EASYCWMP_HEADERS[0], ACS_USERS)
    assert not older.ok and "replayed" in older.reason
    assert srv.verify("POST", "/", EASYCWMP_HEADERS[2], ACS_USERS).ok


def test_easycwmp_hex_nc_beyond_nine() -> None:
    result = easycwmp_server("2faacb7c882498aca9916f93c170ad38").verify(
        "POST", "/", EASYCWMP_SPV_FAULT, ACS_USERS
    )
    assert result.ok, result.reason
    assert result.nc == 11


def test_easycwmp_wrong_password_rejected() -> None:
    srv = easycwmp_server("00aa5e80fa97db7cbc6a49b46aaed1d5")
    result = srv.verify("POST", "/", EASYCWMP_HEADERS[0], passwords({"acsuser": "acspasS"}))
    assert not result.ok and "response mismatch" in result.reason


def test_easycwmp_captured_nonce_rejected_by_the_real_issuer() -> None:
    # The capture's nonces were not minted by us, so a normal server must refuse them.
    result = server(opaque="0123").verify("POST", "/", EASYCWMP_HEADERS[0], ACS_USERS)
    assert not result.ok and "invalid nonce" in result.reason
    assert not result.stale


def test_our_client_reproduces_easycwmp() -> None:
    client = DigestClient(
        "acsuser", "acspass", cnonce_factory=lambda: "YjM4MWQ3MTU1Y2I0M2Y2ZGZiMmRjYzNiNjQ0NTExY2I="
    )
    ours = [
        parse_authorization(client.authorization("POST", "/", EASYCWMP_CHALLENGE if i == 0 else None))
        for i in range(3)
    ]
    theirs = [parse_authorization(h) for h in EASYCWMP_HEADERS]
    assert [c.response for c in ours] == [c.response for c in theirs]
    assert [c.nc for c in ours] == ["00000001", "00000002", "00000003"]


def _interop_headers() -> Iterator[str]:
    if not INTEROP_DIR.is_dir():
        return
    for path in sorted(INTEROP_DIR.glob("*.http.txt")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Authorization: Digest "):
                yield line.split(": ", 1)[1]


def test_every_captured_interop_digest_header_verifies() -> None:
    headers = sorted(set(_interop_headers()))
    if not headers:
        pytest.skip(f"interop captures not found at {INTEROP_DIR}")
    nonces = {parse_authorization(h).nonce for h in headers}
    srv = easycwmp_server(*nonces)
    for header in sorted(
        headers, key=lambda h: (parse_authorization(h).nonce, parse_authorization(h).nc or "")
    ):
        result = srv.verify("POST", "/", header, ACS_USERS)
        assert result.ok, (header, result.reason)


SEED_CHALLENGE = (
    'Digest realm="TR069 Authenticate",qop="auth",'
    'nonce="69534964424e4c337141626c746d3269436f796b544b6a696b2f386f45527543336577652b426f496d48593d0d0a",'
    'opaque="0a16f1a64d91730c0f38c5d74f7b29cc"'
)
SEED_AUTHORIZATION = (
    'Digest username="testcpe", realm="TR069 Authenticate", algorithm="MD5", '
    'nonce="69534964424e4c337141626c746d3269436f796b544b6a696b2f386f45527543336577652b426f496d48593d0d0a", '
    'uri="/comserver/node1/tr069", cnonce="KmbUU0AkGGPOV0h+imrOEofMjXxW6irE", nc=00000001, qop="auth", '
    'opaque="0a16f1a64d91730c0f38c5d74f7b29cc", response="99734f7db5ab5110c57e545de096f3d6"'
)


def test_seed_challenge_without_spaces_parses() -> None:
    challenge = parse_challenge(SEED_CHALLENGE)
    assert challenge.realm == "TR069 Authenticate"
    assert challenge.qop_options == ("auth",)
    assert challenge.opaque == "0a16f1a64d91730c0f38c5d74f7b29cc"
    assert challenge.algorithm is None
    assert challenge.usable


def test_seed_authorization_with_quoted_qop_and_algorithm_parses() -> None:
    creds = parse_authorization(SEED_AUTHORIZATION)
    assert creds.username == "testcpe"
    assert creds.algorithm == "MD5"
    assert creds.qop == "auth"
    assert creds.nc_value == 1
    assert creds.uri == "/comserver/node1/tr069"
    # The password is unknown, so the most we can check is that a guess is refused cleanly.
    srv = DigestServer(
        "TR069 Authenticate",
        SECRET,
        opaque="0a16f1a64d91730c0f38c5d74f7b29cc",
        nonces=FixedNonces(creds.nonce),
    )
    result = srv.verify("POST", "/comserver/node1/tr069", SEED_AUTHORIZATION, passwords({"testcpe": "guess"}))
    assert not result.ok and "response mismatch" in result.reason


# ---------------------------------------------------------------------------------------------
# Server behaviour
# ---------------------------------------------------------------------------------------------


def answer(
    srv: DigestServer,
    *,
    user: str = "cpe",
    password: str = "secret",
    uri: str = "/",
    method: str = "POST",
    now: float = T0,
    client: DigestClient | None = None,
) -> str:
    client = client or DigestClient(user, password)
    return client.authorization(method, uri, srv.challenge(now=now))


USERS = passwords({"cpe": "secret", "other": "pw2"})


def test_round_trip_ok() -> None:
    srv = server()
    result = srv.verify("POST", "/", answer(srv), USERS, now=T0 + 1)
    assert result.ok and result.username == "cpe" and result.algorithm == "MD5" and result.nc == 1


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip_every_algorithm(algorithm: str) -> None:
    srv = server(algorithms=(algorithm,))
    client = DigestClient("cpe", "secret")
    challenge = srv.challenge(now=T0)
    assert f"algorithm={algorithm}" in challenge
    for nc in range(1, 4):
        header = client.authorization("POST", "/acs", challenge if nc == 1 else None)
        result = srv.verify("POST", "/acs", header, USERS, now=T0 + nc)
        assert result.ok, result.reason
        assert result.nc == nc and result.algorithm == algorithm


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_ha1_lookup_every_algorithm(algorithm: str) -> None:
    base = algorithm.removesuffix("-sess")
    stored = {base: compute_ha1(base, "cpe", "acs", "secret").upper()}  # stored case must not matter
    seen: list[tuple[str, str]] = []

    def lookup_ha1(username: str, alg: str) -> str | None:
        seen.append((username, alg))
        return stored.get(alg) if username == "cpe" else None

    srv = server(algorithms=(algorithm,))
    result = srv.verify("POST", "/", answer(srv), lookup_ha1=lookup_ha1, now=T0)
    assert result.ok, result.reason
    assert seen == [("cpe", base)]


def test_ha1_lookup_rejects_non_hex() -> None:
    srv = server()
    result = srv.verify("POST", "/", answer(srv), lookup_ha1=lambda u, a: "not-hex", now=T0)
    assert not result.ok and "HA1" in result.reason


def test_exactly_one_lookup_required() -> None:
    srv = server()
    with pytest.raises(TypeError):
        srv.verify("POST", "/", answer(srv))
    with pytest.raises(TypeError):
        srv.verify("POST", "/", answer(srv), USERS, lookup_ha1=lambda u, a: None)


def test_server_accepts_algorithm_preference_list() -> None:
    srv = server(algorithms=("SHA-256", "MD5"))
    values = srv.challenges(now=T0)
    assert len(values) == 2 and "SHA-256" in values[0] and "MD5" in values[1]
    # Both challenges share one nonce, so answering either works.
    assert len({parse_challenges(v)[0].nonce for v in values}) == 1
    for index in range(2):
        value = srv.challenges(now=T0)[index]
        header = DigestClient("cpe", "secret").authorization("POST", "/", value)
        assert srv.verify("POST", "/", header, USERS, now=T0).ok
    combined = srv.challenge(now=T0)
    assert [c.algorithm for c in parse_challenges(combined)] == ["SHA-256", "MD5"]


def test_wrong_password() -> None:
    srv = server()
    result = srv.verify("POST", "/", answer(srv, password="nope"), USERS, now=T0)
    assert not result.ok and not result.stale
    assert result.username == "cpe"
    assert "response mismatch" in result.reason


def test_unknown_user() -> None:
    srv = server()
    result = srv.verify("POST", "/", answer(srv, user="ghost"), USERS, now=T0)
    assert not result.ok and result.reason == "unknown user"


def test_wrong_realm() -> None:
    srv = server()
    header = answer(srv).replace('realm="acs"', 'realm="other"')
    result = srv.verify("POST", "/", header, USERS, now=T0)
    assert not result.ok and "realm" in result.reason


def test_wrong_uri() -> None:
    srv = server()
    result = srv.verify("POST", "/other", answer(srv, uri="/"), USERS, now=T0)
    assert not result.ok and "uri mismatch" in result.reason


def test_uri_query_must_match() -> None:
    srv = server()
    result = srv.verify("GET", "/f?x=2", answer(srv, uri="/f?x=1", method="GET"), USERS, now=T0)
    assert not result.ok and "uri mismatch" in result.reason


def test_absolute_uri_form_matches_path() -> None:
    srv = server()
    header = answer(srv, uri="http://acs.example:7547/cwmp?a=1")
    assert srv.verify("POST", "/cwmp?a=1", header, USERS, now=T0).ok


def test_wrong_method() -> None:
    srv = server()
    result = srv.verify("GET", "/", answer(srv, method="POST"), USERS, now=T0)
    assert not result.ok and "response mismatch" in result.reason


def test_expired_nonce_with_right_password_is_stale() -> None:
    srv = server(nonce_ttl=300)
    header = answer(srv, now=T0)
    result = srv.verify("POST", "/", header, USERS, now=T0 + 301)
    assert not result.ok and result.stale
    assert "stale" in result.reason
    assert "stale=true" in srv.challenge(stale=True, now=T0 + 301)
    # Within the lifetime the same header is fine.
    assert srv.verify("POST", "/", header, USERS, now=T0 + 299).ok


def test_expired_nonce_with_wrong_password_is_not_stale() -> None:
    srv = server(nonce_ttl=300)
    result = srv.verify("POST", "/", answer(srv, password="bad", now=T0), USERS, now=T0 + 301)
    assert not result.ok and not result.stale


def test_stale_challenge_lets_client_recover() -> None:
    srv = server(nonce_ttl=10)
    client = DigestClient("cpe", "secret")
    assert srv.verify("POST", "/", client.authorization("POST", "/", srv.challenge(now=T0)), USERS, now=T0).ok
    stale = srv.verify("POST", "/", client.authorization("POST", "/"), USERS, now=T0 + 60)
    assert stale.stale
    fresh = srv.challenge(stale=True, now=T0 + 60)
    assert parse_challenge(fresh).stale
    result = srv.verify("POST", "/", client.authorization("POST", "/", fresh), USERS, now=T0 + 61)
    assert result.ok and result.nc == 1  # new nonce, count restarts


def test_increasing_nc_accepted_and_gaps_allowed() -> None:
    srv = server()
    nonce = parse_challenge(srv.challenge(now=T0)).nonce
    assert nonce is not None
    ha1 = compute_ha1("MD5", "cpe", "acs", "secret")

    def header(nc: int) -> str:
        nc_text = f"{nc:08x}"
        response = compute_response("MD5", ha1, nonce, "POST", "/", qop="auth", nc=nc_text, cnonce="abc")
        return (
            f'Digest username="cpe", realm="acs", nonce="{nonce}", uri="/", qop=auth, nc={nc_text}, '
            f'cnonce="abc", response="{response}", opaque="{srv.opaque}", algorithm=MD5'
        )

    assert [srv.verify("POST", "/", header(nc), USERS, now=T0).ok for nc in (1, 2, 5, 5, 4, 6)] == [
        True,
        True,
        True,
        False,
        False,
        True,
    ]


def test_replay_rejected_after_success_only() -> None:
    srv = server()
    client = DigestClient("cpe", "secret")
    challenge = srv.challenge(now=T0)
    good = client.authorization("POST", "/", challenge)
    # A forged request with the same nonce and nc must not burn the count for the real client.
    forged = re.sub(r'response="[0-9a-f]+"', 'response="' + "0" * 32 + '"', good)
    assert not srv.verify("POST", "/", forged, USERS, now=T0).ok
    assert srv.verify("POST", "/", good, USERS, now=T0).ok
    again = srv.verify("POST", "/", good, USERS, now=T0)
    assert not again.ok and "replayed" in again.reason


def test_failures_say_whether_the_password_was_wrong_or_the_request_replayed() -> None:
    """What a caller needs to throttle password guessing and nothing else: a replayed nonce count
    or a stale nonce has the right password; only a tested, wrong password is wrong_password."""
    srv = server(nonce_ttl=300)
    good = answer(srv, now=T0)
    assert srv.verify("POST", "/", good, USERS, now=T0).ok
    replayed = srv.verify("POST", "/", good, USERS, now=T0)
    assert (replayed.replayed, replayed.wrong_password, replayed.stale) == (True, False, False)
    stale = srv.verify("POST", "/", answer(srv, now=T0), USERS, now=T0 + 301)
    assert (stale.stale, stale.wrong_password, stale.replayed) == (True, False, False)
    for header in (answer(srv, password="nope", now=T0), answer(srv, user="ghost", now=T0)):
        wrong = srv.verify("POST", "/", header, USERS, now=T0)
        assert (wrong.wrong_password, wrong.replayed, wrong.stale) == (True, False, False)
    # Refused before any password is tested: nothing a guesser learns from.
    foreign_realm = srv.verify("POST", "/", answer(srv, now=T0).replace('realm="acs"', 'realm="x"'),
                               USERS, now=T0)
    assert not foreign_realm.ok and not foreign_realm.wrong_password


def test_nonce_verified_by_other_instance_with_same_secret() -> None:
    first, second = server(), server()
    result = second.verify("POST", "/", answer(first), USERS, now=T0)
    assert result.ok, result.reason
    assert first.opaque == second.opaque


def test_nonce_forged_with_other_secret_rejected() -> None:
    attacker = server(secret=b"some-other-secret-of-enough-size")
    result = server().verify("POST", "/", answer(attacker, now=T0), USERS, now=T0)
    assert not result.ok and "invalid nonce" in result.reason and "signature" in result.reason


def test_nonce_from_other_realm_rejected() -> None:
    other = server(realm="files", opaque="o")
    header = answer(other).replace('realm="files"', 'realm="acs"')
    result = server(opaque="o").verify("POST", "/", header, USERS, now=T0)
    assert not result.ok and "invalid nonce" in result.reason


def test_tampered_nonce_rejected() -> None:
    srv = server()
    header = answer(srv)
    nonce = parse_authorization(header).nonce
    # Move the issue time forward by flipping a character of the timestamp, keeping the MAC.
    flipped = nonce[:5] + ("A" if nonce[5] != "A" else "B") + nonce[6:]
    result = srv.verify("POST", "/", header.replace(nonce, flipped), USERS, now=T0)
    assert not result.ok and "invalid nonce" in result.reason


@pytest.mark.parametrize(
    "bad_nonce",
    ["", "short", "A" * 50, "!!!!", "00aa5e80fa97db7cbc6a49b46aaed1d5", "A" * 500, "AQ==" * 13],
)
def test_malformed_nonces_rejected(bad_nonce: str) -> None:
    check = HmacNonceIssuer(SECRET, realm="acs").check(bad_nonce, T0)
    assert check.status is NonceStatus.INVALID


def test_nonce_from_the_future_rejected() -> None:
    issuer = HmacNonceIssuer(SECRET, realm="acs", clock_skew=30)
    nonce = issuer.issue(T0 + 3600)
    assert issuer.check(nonce, T0).status is NonceStatus.INVALID
    assert issuer.check(issuer.issue(T0 + 10), T0).status is NonceStatus.VALID  # within skew


def test_secret_rotation_accepts_old_nonces() -> None:
    old = server(secret=b"the-previous-secret-0123456789")
    rotated = server(old_secrets=[b"the-previous-secret-0123456789"])
    assert rotated.verify("POST", "/", answer(old), USERS, now=T0).ok
    # New nonces use the new secret only.
    assert not old.verify("POST", "/", answer(rotated), USERS, now=T0).ok


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        DigestServer("acs", "short")


def test_unsupported_server_algorithm_refused() -> None:
    with pytest.raises(ValueError):
        DigestServer("acs", SECRET, algorithms=("SHA-1",))


def test_algorithm_not_offered() -> None:
    srv = server()
    sha = server(algorithms=("SHA-256",))
    header = DigestClient("cpe", "secret").authorization("POST", "/", sha.challenge(now=T0))
    result = srv.verify("POST", "/", header, USERS, now=T0)
    assert not result.ok and "algorithm" in result.reason


def test_qop_auth_int_not_offered() -> None:
    srv = server()
    header = answer(srv).replace("qop=auth", "qop=auth-int")
    result = srv.verify("POST", "/", header, USERS, now=T0)
    assert not result.ok and "qop" in result.reason


def rfc2069_header(srv: DigestServer, *, password: str = "secret", algorithm: str = "MD5") -> str:
    nonce = parse_challenge(srv.challenge(now=T0)).nonce
    assert nonce is not None
    challenge = f'Digest realm="acs", nonce="{nonce}", opaque="{srv.opaque}", algorithm={algorithm}'
    return DigestClient("cpe", password).authorization("POST", "/", challenge)


def test_missing_qop_refused_by_default() -> None:
    srv = server()
    result = srv.verify("POST", "/", rfc2069_header(srv), USERS, now=T0)
    assert not result.ok and "qop missing" in result.reason


def test_missing_qop_accepted_when_allowed() -> None:
    srv = server(allow_missing_qop=True)
    result = srv.verify("POST", "/", rfc2069_header(srv), USERS, now=T0)
    assert result.ok, result.reason
    assert result.nc is None
    assert not srv.verify("POST", "/", rfc2069_header(srv, password="x"), USERS, now=T0).ok


def test_opaque_mismatch_rejected_and_absent_tolerated() -> None:
    srv = server()
    header = answer(srv)
    wrong = header.replace(f'opaque="{srv.opaque}"', 'opaque="deadbeef"')
    assert "opaque" in srv.verify("POST", "/", wrong, USERS, now=T0).reason
    absent = header.replace(f', opaque="{srv.opaque}"', "")
    assert "opaque" not in absent
    assert srv.verify("POST", "/", absent, USERS, now=T0).ok


def test_userhash_refused() -> None:
    srv = server()
    result = srv.verify("POST", "/", answer(srv) + ", userhash=true", USERS, now=T0)
    assert not result.ok and "userhash" in result.reason


def test_verify_accepts_pre_parsed_credentials() -> None:
    srv = server()
    creds = parse_authorization(answer(srv))
    # This is the asynchronous flow: parse, look the user up elsewhere, then verify.
    assert srv.verify("POST", "/", creds, lambda _user: "secret", now=T0).ok


def test_challenge_format() -> None:
    srv = server(opaque="0123")
    challenge = srv.challenge(now=T0)
    assert challenge.startswith('Digest realm="acs", qop="auth", nonce="')
    assert challenge.endswith('opaque="0123", algorithm=MD5')
    # A fresh nonce each time: one per TCP connection (checklist A3/S3).
    assert parse_challenge(srv.challenge(now=T0)).nonce != parse_challenge(challenge).nonce
    nonce = parse_challenge(challenge).nonce
    assert nonce is not None and re.fullmatch(r"[A-Za-z0-9_-]+", nonce)


# ---------------------------------------------------------------------------------------------
# Tolerant and malformed headers
# ---------------------------------------------------------------------------------------------


def test_tolerant_spacing_quoting_and_case() -> None:
    srv = server()
    creds = parse_authorization(answer(srv))
    response = creds.response
    variants = [
        # no spaces at all, everything quoted
        f'Digest username="cpe",realm="acs",nonce="{creds.nonce}",uri="/",qop="auth",nc="00000001",'
        f'cnonce="{creds.cnonce}",response="{response}",algorithm="MD5"',
        # lots of spaces, upper-case names and scheme, unquoted where possible
        f'DIGEST   USERNAME = "cpe" ,  Realm= acs ,NONCE={creds.nonce} , uri = "/", QOP=auth, nc=00000001 ,'
        f"  cnonce={creds.cnonce},  response={response.upper()} , algorithm=md5 ,",
        # missing commas between parameters
        f'Digest username="cpe" realm="acs" nonce="{creds.nonce}" uri="/" qop=auth nc=00000001 '
        f'cnonce="{creds.cnonce}" response="{response}"',
    ]
    for nc, header in enumerate(variants, start=1):
        fixed = header.replace("00000001", f"{nc:08x}")
        # Re-sign with the new nc so only the syntax varies.
        ha1 = compute_ha1("MD5", "cpe", "acs", "secret")
        new_response = compute_response(
            "MD5", ha1, creds.nonce, "POST", "/", qop="auth", nc=f"{nc:08x}", cnonce=creds.cnonce
        )
        fixed = fixed.replace(response.upper(), new_response).replace(response, new_response)
        result = srv.verify("POST", "/", fixed, USERS, now=T0)
        assert result.ok, (fixed, result.reason)


def test_commas_and_escapes_inside_quoted_strings() -> None:
    header = (
        'Digest username="a\\"b,c", realm="r, with comma", nonce="n", uri="/x,y?q=1,2", '
        'response="00", qop=auth, nc=1, cnonce="c,d"'
    )
    creds = parse_authorization(header)
    assert creds.username == 'a"b,c'
    assert creds.realm == "r, with comma"
    assert creds.uri == "/x,y?q=1,2"
    assert creds.cnonce == "c,d"
    assert creds.nc_value == 1


# Headers at the edge of the regex fast path in _parse_auth_list: each must come out exactly as
# the character-by-character parser reads it, whichever of the two ends up handling it.
EDGE_HEADERS = [
    # empty elements, a trailing comma, empty bare and quoted values, "=" inside a bare value
    ('Digest a=1,, b="2" ,\t,c=,d= "",e=x==,', ("Digest", {"a": "1", "b": "2", "c": "", "d": "", "e": "x=="}, None)),
    # any character may be escaped in a quoted-string, not just the quote, even a line break
    ('Digest a="x\\\\y\\"z\\,\\\n", b=1', ("Digest", {"a": 'x\\y"z,\n', "b": "1"}, None)),
    # a backslash in a bare value is kept as it is
    ("Digest a=x\\y", ("Digest", {"a": "x\\y"}, None)),
    # a quote inside a bare value belongs to the value
    ('Digest a=b"c, d=e', ("Digest", {"a": 'b"c', "d": "e"}, None)),
    # line breaks around "=" and after commas (folded headers)
    ('digest a\r\n=\r\n"1",\r\n b=2', ("digest", {"a": "1", "b": "2"}, None)),
    # only ASCII case folding makes a scheme Digest: this one may carry a token68
    ("Dige\u017ft a=, b=c", ("Dige\u017ft", {"b": "c"}, "a=")),
]


@pytest.mark.parametrize(("header", "expected"), EDGE_HEADERS)
def test_auth_list_edge_cases(header: str, expected: tuple[str, dict[str, str], str | None]) -> None:
    [challenge] = parse_challenges(header)
    assert (challenge.scheme, dict(challenge.params), challenge.token68) == expected


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ('Digest a="x\\", b=1', "unterminated"),  # the only quote after the opening one is escaped
        ("Digest a=1,\x0bb=2", "unexpected"),  # vertical tab is not a separator
        ("Digest a=1\xa0, b=2", "unexpected"),  # nor is a no-break space
    ],
)
def test_auth_list_edge_cases_rejected(header: str, error: str) -> None:
    with pytest.raises(AuthHeaderError, match=error):
        parse_challenges(header)


def _auth_list_outcome(parse: Callable[[str], object], header: str) -> object:
    try:
        return parse(header)
    except AuthHeaderError as exc:
        return str(exc)


@settings(max_examples=500, deadline=None)
@given(
    st.tuples(
        st.sampled_from(["Digest ", "digest\t", ", DIGEST  ", "Dige\u017ft ", "Basic ", "Digest,", ""]),
        st.lists(
            st.tuples(
                st.sampled_from(["username", "Nonce", "a\\b", "\u00e9", "x-y", ""]),
                st.sampled_from(["=", " = ", "\r\n=", " "]),
                st.sampled_from(
                    ['"v"', '""', "v", "", 'v"w', '"a\\"b"', '"a\\\\"', '"a\\', '"\\\n"', '"x,y=z"', "ab==", "a\\b"]
                ),
                st.sampled_from([", ", ",", " ,", ",,", ", ,\t", ",\r\n", " ", "", "\x0b,", ",\xa0", ";"]),
            ),
            max_size=6,
        ),
    ).map(lambda t: t[0] + "".join("".join(param) for param in t[1]))
)
def test_auth_list_fast_path_reads_like_the_strict_parser(header: str) -> None:
    assert _auth_list_outcome(_parse_auth_list, header) == _auth_list_outcome(_parse_auth_list_strict, header)


def test_round_trip_with_awkward_username_and_uri() -> None:
    srv = server()
    user = 'we"ird\\user, name'
    header = DigestClient(user, "p").authorization("GET", "/a,b?x=1", srv.challenge(now=T0))
    result = srv.verify("GET", "/a,b?x=1", header, passwords({user: "p"}), now=T0)
    assert result.ok and result.username == user


def test_non_ascii_username_uses_rfc8187_and_round_trips() -> None:
    srv = server()
    header = DigestClient("Jäsøn Doe", "pw").authorization("POST", "/", srv.challenge(now=T0))
    assert "username*=UTF-8''J%C3%A4s%C3%B8n%20Doe" in header
    assert parse_authorization(header).username == "Jäsøn Doe"
    assert srv.verify("POST", "/", header, passwords({"Jäsøn Doe": "pw"}), now=T0).ok


BAD_HEADERS = [
    None,
    "",
    "   ",
    "Digest",
    "Digest ",
    "Basic Og==",
    "Bearer abc",
    'Digest username="a',
    'Digest username="a", realm="acs"',
    'Digest realm="acs", nonce="n", uri="/", response="00"',
    'Digest username="a", username="b", realm="acs", nonce="n", uri="/", response="00"',
    'Digest username="a", realm="acs", nonce="n", uri="/", response="00", qop=auth',
    'Digest username="a", realm="acs", nonce="n", uri="/", response="00", qop=auth, nc=zz, cnonce=x',
    'Digest username="a", realm="acs", nonce="n", uri="/", response="00", qop=auth, nc=123456789, cnonce=x',
    'Digest username="a", realm="acs", nonce="n", uri="/", response="not hex"',
    'Digest username="a", realm="acs", nonce="", uri="/", response="00"',
    'Digest username*="x", realm="acs", nonce="n", uri="/", response="00"',
    "username=a, realm=acs",
    "=====",
    '"quoted"',
    "Digest ,,,,,,",
    "Digest a=b, Digest c=d",
    "Digest \x00\x01\x02",
    "Digest username=\u2603, realm=acs, nonce=n, uri=/, response=zz",
    "Digest " + "x=y, " * 5000,
]


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_malformed_headers_give_a_reason(header: str | None) -> None:
    result = server().verify("POST", "/", header, USERS, now=T0)
    assert not result.ok
    assert result.reason
    assert not result.stale


@pytest.mark.parametrize("header", [h for h in BAD_HEADERS if h and h.strip()])
def test_parse_authorization_raises_auth_header_error(header: str) -> None:
    with pytest.raises(AuthHeaderError):
        parse_authorization(header)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_verify_never_raises_on_arbitrary_text(header: str) -> None:
    result = server().verify("POST", "/", header, USERS, now=T0)
    assert not result.ok and result.reason


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from('Digest username realm nonce uri=",\\ \tqop auth nc 0a'), max_size=200)
)
def test_verify_never_raises_on_digest_like_text(header: str) -> None:
    result = server().verify("POST", "/", header, USERS, now=T0)
    assert not result.ok and result.reason


# ---------------------------------------------------------------------------------------------
# Client behaviour
# ---------------------------------------------------------------------------------------------


def test_client_no_qop_challenge_rfc2069() -> None:
    challenge = 'Digest realm="cpe", nonce="abc123"'
    header = DigestClient("acs", "pw").authorization("GET", "/cr", challenge)
    creds = parse_authorization(header)
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    assert "qop" not in header and "nc=" not in header and "cnonce" not in header
    ha1 = compute_ha1("MD5", "acs", "cpe", "pw")
    assert creds.response == compute_response("MD5", ha1, "abc123", "GET", "/cr")


def test_client_sess_without_qop_refused() -> None:
    with pytest.raises(DigestError):
        DigestClient("a", "b").authorization("GET", "/", 'Digest realm="r", nonce="n", algorithm=MD5-sess')


def test_client_prefers_digest_over_basic() -> None:
    header = DigestClient("a", "b").authorization("GET", "/", 'Basic realm="x", Digest realm="r", nonce="n"')
    assert header.startswith("Digest ")


def test_client_refuses_basic_unless_allowed() -> None:
    with pytest.raises(DigestError):
        DigestClient("a", "b").authorization("GET", "/", 'Basic realm="cpe"')
    header = DigestClient("a", "b", allow_basic=True).authorization("GET", "/", 'Basic realm="cpe"')
    assert parse_basic(header) == ("a", "b")


def test_client_skips_unsupported_algorithm() -> None:
    header = DigestClient("a", "b").authorization(
        "GET", "/", ['Digest realm="r", nonce="n1", algorithm=SHA-512-256', 'Digest realm="r", nonce="n2"']
    )
    assert parse_authorization(header).nonce == "n2"


def test_client_unsupported_only() -> None:
    with pytest.raises(DigestError, match="no usable challenge"):
        DigestClient("a", "b").authorization("GET", "/", 'Digest realm="r", nonce="n", algorithm=SHA-512-256')
    with pytest.raises(DigestError):
        DigestClient("a", "b").authorization("GET", "/", 'Digest realm="r", nonce="n", qop="auth-conf"')
    with pytest.raises(DigestError):
        DigestClient("a", "b").authorization("GET", "/", 'Digest realm="r"')


def test_client_explicit_unusable_challenge_object() -> None:
    with pytest.raises(DigestError, match="cannot answer"):
        DigestClient("a", "b").authorization("GET", "/", Challenge("Digest", {"realm": "r"}))


def test_client_without_challenge() -> None:
    with pytest.raises(DigestError, match="no challenge"):
        DigestClient("a", "b").authorization("GET", "/")


def test_client_nc_per_nonce_and_reset() -> None:
    client = DigestClient("a", "b")
    first = 'Digest realm="r", qop="auth", nonce="n1"'
    second = 'Digest realm="r", qop="auth", nonce="n2"'
    ncs = [parse_authorization(client.authorization("GET", "/", c)).nc for c in (first, None, second, first)]
    assert ncs == ["00000001", "00000002", "00000001", "00000003"]
    c1 = parse_authorization(client.authorization("GET", "/", first)).cnonce
    assert c1 == parse_authorization(client.authorization("GET", "/", first)).cnonce  # one cnonce per nonce
    client.reset()
    assert parse_authorization(client.authorization("GET", "/", first)).nc == "00000001"


def test_client_echoes_opaque_and_algorithm_spelling() -> None:
    header = DigestClient("a", "b").authorization(
        "GET", "/", 'Digest realm="r", qop="auth", nonce="n", opaque="o p", algorithm=md5'
    )
    creds = parse_authorization(header)
    assert creds.opaque == "o p"
    assert creds.algorithm == "md5"


def test_client_auth_int_with_body() -> None:
    body = b"<soap/>"
    header = DigestClient("a", "b", cnonce_factory=lambda: "cn").authorization(
        "POST", "/", 'Digest realm="r", qop="auth-int", nonce="n"', body=body
    )
    creds = parse_authorization(header)
    assert creds.qop == "auth-int"
    ha1 = compute_ha1("MD5", "a", "r", "b")
    expected = compute_response(
        "MD5", ha1, "n", "POST", "/", qop="auth-int", nc="00000001", cnonce="cn", body=body
    )
    assert creds.response == expected


def test_parse_challenges_mixed_schemes() -> None:
    header = 'Negotiate, Basic realm="b", charset="UTF-8", Digest realm="d", nonce="n", qop="auth"'
    challenges = parse_challenges(header)
    assert [c.scheme for c in challenges] == ["Negotiate", "Basic", "Digest"]
    assert challenges[1].params == {"realm": "b", "charset": "UTF-8"}
    assert parse_challenge(header).is_digest
    token = parse_challenges("Basic Og==, Digest realm=x, nonce=y")
    assert token[0].token68 == "Og==" and token[1].nonce == "y"


def test_parse_challenge_basic_fallback() -> None:
    assert parse_challenge('Basic realm="x"').is_basic
    with pytest.raises(DigestError):
        parse_challenge('Basic realm="x"', allow_basic=False)


def test_parse_challenges_malformed() -> None:
    with pytest.raises(AuthHeaderError):
        parse_challenges('Digest realm="unterminated')
    with pytest.raises(AuthHeaderError):
        parse_challenges("realm=x")


def test_canonical_algorithm() -> None:
    assert canonical_algorithm(None) == "MD5"
    assert canonical_algorithm("md5-SESS") == "MD5-sess"
    assert canonical_algorithm(" sha-256 ") == "SHA-256"
    assert canonical_algorithm("SHA-512-256") is None


def test_compute_response_errors() -> None:
    with pytest.raises(DigestError):
        compute_response("MD5-sess", "00", "n", "GET", "/")
    with pytest.raises(DigestError):
        compute_response("MD5", "00", "n", "GET", "/", qop="auth")
    with pytest.raises(DigestError):
        compute_ha1("SHA-1", "a", "b", "c")


# ---------------------------------------------------------------------------------------------
# Basic
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", ("Aladdin", "open sesame")),  # RFC 7617 section 2
        ("basic QWxhZGRpbjpvcGVuIHNlc2FtZQ", ("Aladdin", "open sesame")),  # lower case, no padding
        ("Basic Og==", ("", "")),  # cwmp-sim sends empty credentials up front
        ("Basic " + base64.b64encode(b"u:p:with:colons").decode(), ("u", "p:with:colons")),
        ("Basic " + base64.b64encode("é:ü".encode()).decode(), ("é", "ü")),
        ("Basic " + base64.b64encode("é:ü".encode("latin-1")).decode(), ("é", "ü")),
        ("  Basic   Og==  ", ("", "")),
    ],
)
def test_parse_basic(header: str, expected: tuple[str, str]) -> None:
    assert parse_basic(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Digest Og==",
        "Bearer Og==",
        "Basic " + "A" * 5000,
    ],
)
def test_parse_basic_rejects(header: str | None) -> None:
    assert parse_basic(header) is None


def test_basic_helpers_round_trip() -> None:
    assert parse_basic(basic_authorization("üser", "pa:ss")) == ("üser", "pa:ss")
    assert basic_challenge('a"b') == 'Basic realm="a\\"b"'


# ---------------------------------------------------------------------------------------------
# Nonce count store
# ---------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_memory_store_monotonic_per_nonce() -> None:
    store = MemoryNonceCountStore()
    assert store.check_and_record("a", 1)
    assert store.check_and_record("b", 1)
    assert not store.check_and_record("a", 1)
    assert store.check_and_record("a", 3)
    assert not store.check_and_record("a", 2)


def test_memory_store_bounded() -> None:
    store = MemoryNonceCountStore(max_entries=3)
    for i in range(10):
        assert store.check_and_record(f"n{i}", 1)
    assert len(store) == 3
    assert not store.check_and_record("n9", 1)  # the newest are kept


def test_memory_store_expiry() -> None:
    clock = FakeClock()
    store = MemoryNonceCountStore(ttl=10, clock=clock)
    assert store.check_and_record("a", 5)
    clock.now = 5
    assert store.check_and_record("b", 1)
    clock.now = 11
    assert store.check_and_record("c", 1)
    assert len(store) == 2  # "a" expired, "b" not yet
    clock.now = 100
    assert store.check_and_record("d", 1)
    assert len(store) == 1


def test_memory_store_invalid_size() -> None:
    with pytest.raises(ValueError):
        MemoryNonceCountStore(max_entries=0)


def test_custom_nonce_count_store_is_used() -> None:
    calls: list[tuple[str, int]] = []

    class Recorder:
        def check_and_record(self, nonce: str, nc: int) -> bool:
            calls.append((nonce, nc))
            return False

    srv = server(nonce_counts=Recorder())
    result = srv.verify("POST", "/", answer(srv), USERS, now=T0)
    assert not result.ok and "replayed" in result.reason
    assert len(calls) == 1 and calls[0][1] == 1
