"""Provisioned CPE credentials in the authenticator: shared pair, own pair (confirmed or pending),
Basic over TLS, and the pair a session started with."""

from __future__ import annotations

from cwmp.digest import DigestClient, basic_authorization, compute_ha1
from services.common.settings import Settings
from services.gateway.auth import AuthOutcome, CpeAuthenticator

DEVICE = "00259E-Box-SN1"
SETTINGS = Settings(cpe_auth="basic", cpe_username="testcpe", cpe_password="shared-pw", secret_key="k" * 20)


def authenticator(store: dict[str, list[str]], owners: set[str], settings: Settings = SETTINGS) -> CpeAuthenticator:
    async def candidates(username: str, algorithm: str) -> tuple[str | None, list[str]]:
        return (DEVICE if username in store else None), store.get(username, [])

    async def has_own(device_id: str) -> bool:
        return device_id in owners

    return CpeAuthenticator(settings, candidates=candidates, has_own_credentials=has_own)


def ha1(password: str) -> str:
    return compute_ha1("MD5", DEVICE, "acs", password)


async def test_basic_shared_pair_only_for_a_device_without_its_own() -> None:
    auth = authenticator({}, set())
    outcome = await auth.authenticate("POST", "/", basic_authorization("testcpe", "shared-pw"), tls=True)
    assert outcome.ok and outcome.shared
    assert await auth.admits(outcome, DEVICE, "00259E", "Box", "SN1") is None
    owned = authenticator({DEVICE: [ha1("own")]}, {DEVICE})
    outcome = await owned.authenticate("POST", "/", basic_authorization("testcpe", "shared-pw"), tls=True)
    refusal = await owned.admits(outcome, DEVICE, "00259E", "Box", "SN1")
    assert refusal is not None and refusal.status == 401
    wrong = await owned.authenticate("POST", "/", basic_authorization("testcpe", "guess"), tls=True)
    assert not wrong.ok and wrong.wrong_credentials


async def test_basic_own_pair_confirmed_or_pending_and_only_for_its_device() -> None:
    auth = authenticator({DEVICE: [ha1("old"), ha1("new")]}, {DEVICE})
    for password in ("old", "new"):
        outcome = await auth.authenticate("POST", "/", basic_authorization(DEVICE, password), tls=True)
        assert outcome.ok and not outcome.shared and outcome.matched_ha1 == ("MD5", ha1(password))
        assert await auth.admits(outcome, DEVICE, "00259E", "Box", "SN1") is None
        other = await auth.admits(outcome, "00259E-Box-SN2", "00259E", "Box", "SN2")
        assert other is not None and other.status == 403
    assert not (await auth.authenticate("POST", "/", basic_authorization(DEVICE, "x"), tls=True)).ok


async def test_digest_own_pair_and_the_pair_the_session_started_with() -> None:
    settings = SETTINGS.model_copy(update={"cpe_auth": "digest"})
    auth = authenticator({DEVICE: [ha1("new")]}, {DEVICE}, settings)
    client = DigestClient(DEVICE, "old")
    header = client.authorization("POST", "/", auth.challenge())
    refused = await auth.authenticate("POST", "/", header, tls=False)
    assert not refused.ok and refused.wrong_credentials
    header = client.authorization("POST", "/", auth.challenge())
    kept: AuthOutcome = await auth.authenticate("POST", "/", header, tls=False, session_ha1=("MD5", ha1("old")))
    assert kept.ok and kept.matched_ha1 == ("MD5", ha1("old"))
    fresh = DigestClient(DEVICE, "new")
    assert (await auth.authenticate("POST", "/", fresh.authorization("POST", "/", auth.challenge()),
                                    tls=False)).ok


def counting_authenticator(store: dict[str, list[str]], settings: Settings) -> tuple[CpeAuthenticator, list[str]]:
    reads: list[str] = []

    async def candidates(username: str, algorithm: str) -> tuple[str | None, list[str]]:
        reads.append(username)
        return (DEVICE if username in store else None), store.get(username, [])

    async def has_own(device_id: str) -> bool:
        return True

    return CpeAuthenticator(settings, candidates=candidates, has_own_credentials=has_own), reads


async def test_inside_a_session_the_proven_ha1_needs_no_store_read() -> None:
    settings = SETTINGS.model_copy(update={"cpe_auth": "digest"})
    auth, reads = counting_authenticator({DEVICE: [ha1("own")]}, settings)
    client = DigestClient(DEVICE, "own")
    challenge = auth.challenge()
    inform = await auth.authenticate("POST", "/", client.authorization("POST", "/", challenge), tls=False)
    assert inform.ok and reads == [DEVICE]
    follow = await auth.authenticate("POST", "/", client.authorization("POST", "/", challenge), tls=False,
                                     session_ha1=inform.matched_ha1)
    assert follow.ok and reads == [DEVICE]  # the session's HA1 matched: the store was not asked
    # A wrong password inside the session still goes to the store, and is still wrong.
    wrong = await auth.authenticate("POST", "/", DigestClient(DEVICE, "guess").authorization("POST", "/", challenge),
                                    tls=False, session_ha1=inform.matched_ha1)
    assert not wrong.ok and wrong.wrong_credentials and reads == [DEVICE, DEVICE]
    # A reused nonce count is stale, not wrong, whichever HA1 is tried.
    header = DigestClient(DEVICE, "own").authorization("POST", "/", auth.challenge())
    assert (await auth.authenticate("POST", "/", header, tls=False, session_ha1=inform.matched_ha1)).ok
    again = await auth.authenticate("POST", "/", header, tls=False, session_ha1=inform.matched_ha1)
    assert not again.ok and not again.wrong_credentials


async def test_basic_inside_a_session_needs_no_store_read() -> None:
    auth, reads = counting_authenticator({DEVICE: [ha1("own")]}, SETTINGS)
    header = basic_authorization(DEVICE, "own")
    inform = await auth.authenticate("POST", "/", header, tls=True)
    assert inform.ok and reads == [DEVICE]
    assert (await auth.authenticate("POST", "/", header, tls=True, session_ha1=inform.matched_ha1)).ok
    assert reads == [DEVICE]
    wrong = await auth.authenticate("POST", "/", basic_authorization(DEVICE, "x"), tls=True,
                                    session_ha1=inform.matched_ha1)
    assert not wrong.ok and reads == [DEVICE, DEVICE]
