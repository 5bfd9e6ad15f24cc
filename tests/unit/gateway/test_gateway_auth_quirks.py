"""RFC 2069 Digest in the authenticator: verified like any Digest answer and flagged, so that the
gateway lets it in only for devices whose quirks allow it (tests/integration/test_gateway_quirks.py)."""

from __future__ import annotations

from cwmp.digest import DigestClient
from services.common.settings import Settings
from services.gateway.auth import CpeAuthenticator

SETTINGS = Settings(cpe_auth="digest", cpe_credentials="shared", cpe_username="testcpe", cpe_password="pw",
                    secret_key="k" * 20)


def rfc2069(challenge: str) -> str:
    return challenge.replace('qop="auth", ', "")


async def test_an_answer_without_qop_is_verified_and_flagged() -> None:
    auth = CpeAuthenticator(SETTINGS)
    header = DigestClient("testcpe", "pw").authorization("POST", "/", rfc2069(auth.challenge()))
    assert "qop=" not in header
    outcome = await auth.authenticate("POST", "/", header, tls=False)
    assert outcome.ok and outcome.without_qop
    wrong = DigestClient("testcpe", "guess").authorization("POST", "/", rfc2069(auth.challenge()))
    refused = await auth.authenticate("POST", "/", wrong, tls=False)
    assert not refused.ok and refused.wrong_credentials and refused.without_qop


async def test_an_answer_with_qop_is_not_flagged() -> None:
    auth = CpeAuthenticator(SETTINGS)
    header = DigestClient("testcpe", "pw").authorization("POST", "/", auth.challenge())
    outcome = await auth.authenticate("POST", "/", header, tls=False)
    assert outcome.ok and not outcome.without_qop
