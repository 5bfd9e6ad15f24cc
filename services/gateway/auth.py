"""CPE authentication for the gateway: Digest, Basic (TLS only unless allowed) or none.

Credentials (ACS_CPE_CREDENTIALS, docs/security.md#cpe-credentials) are

- ``provisioned`` (the default): the shared pair from the settings for the first contact of a
  device, and the device's own pair (set by the ACS at bootstrap, stored as HA1s in MongoDB)
  afterwards. Which one a device may use is known only once the Inform names the device, so
  :meth:`CpeAuthenticator.admits` decides after the envelope is read: the shared pair is refused
  for a device that has its own credentials, and own credentials must be the device's.
- ``per-device``: only HA1 values imported through the inventory API.
- ``shared``: one pair for every CPE (any CPE can then speak for any other).

With per-device credentials the username must name the device of the Inform (TR-069 3.4.4:
"OUI-ProductClass-Serial" or "OUI-Serial"), so one CPE cannot speak for another.

Only a password that was tested and found wrong counts as a failure (``wrong_credentials``, the
one the throttle counts): a stale nonce, a replayed nonce count, an unsupported scheme or a
malformed header teach a password guesser nothing, and counting them would throttle CPEs whose
only fault is a sloppy Digest client.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cwmp.digest import DigestError, DigestResult, DigestServer, compute_ha1, parse_authorization, parse_basic
from cwmp.httputil import username_matches_device
from services.common.settings import Settings

# (username, algorithm "MD5" | "SHA-256") -> stored HA1 hex, or None for an unknown username.
HA1Source = Callable[[str, str], Awaitable[str | None]]
# (username, algorithm) -> (device id the credentials are for, HA1s to try: confirmed, pending).
CandidateSource = Callable[[str, str], Awaitable[tuple[str | None, list[str]]]]
# device id -> whether it has confirmed credentials of its own.
OwnCredentialsCheck = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True)
class AuthOutcome:
    ok: bool
    username: str | None = None
    # Headers for the 401 answer when not ok.
    challenge: str | None = None
    # True when the client presented a password and it was wrong (counts for throttling).
    wrong_credentials: bool = False
    reason: str = ""
    # Authenticated with the shared pair (provisioned mode): good only for a device without its own.
    shared: bool = False
    # The device the (own) credentials were stored for, when the store says.
    device_id: str | None = None
    # (algorithm "MD5" | "SHA-256", HA1) that matched, for own credentials.
    matched_ha1: tuple[str, str] | None = None
    # RFC 2069 Digest (no qop): verified, but accepted only for devices whose quirks allow it
    # (the gateway decides once the Inform names the device).
    without_qop: bool = False


@dataclass(frozen=True)
class Refusal:
    """An authenticated Inform that may not speak for the device it names."""

    status: int
    reason: str


class CpeAuthenticator:
    def __init__(self, settings: Settings, ha1_source: HA1Source | None = None, *,
                 candidates: CandidateSource | None = None,
                 has_own_credentials: OwnCredentialsCheck | None = None) -> None:
        self.settings = settings
        self.mode = settings.cpe_auth
        self.per_device = settings.cpe_credentials == "per-device"
        self.provisioned = settings.cpe_credentials == "provisioned"
        if self.per_device and ha1_source is None:
            raise ValueError("per-device CPE credentials need an HA1 source")
        if self.provisioned and (candidates is None or has_own_credentials is None):
            raise ValueError("provisioned CPE credentials need a credential store")
        self.ha1_source = ha1_source
        self.candidates = candidates
        self.has_own_credentials = has_own_credentials
        # RFC 2069 answers are verified too; the gateway refuses them for a device whose quirks do
        # not allow them (AuthOutcome.without_qop).
        self.digest = DigestServer(settings.cpe_realm, settings.secret_key, nonce_ttl=300.0,
                                   allow_missing_qop=True)

    @staticmethod
    def claimed_username(authorization: str | None) -> str | None:
        """The username an ``Authorization`` header claims, before anything is verified (the
        throttle's key); None when there is none or the header does not parse."""
        if not authorization:
            return None
        scheme = authorization.split(None, 1)[0].lower()
        if scheme == "basic":
            pair = parse_basic(authorization)
            return pair[0] if pair is not None else None
        if scheme == "digest":
            try:
                return parse_authorization(authorization).username
            except DigestError:
                return None
        return None

    async def admits(self, outcome: AuthOutcome, device_id: str, oui: str, product_class: str,
                     serial_number: str) -> Refusal | None:
        """Whether an authenticated Inform may speak for the device it names (None: it may).

        Shared pair (provisioned mode): only while the device has no credentials of its own, so
        a DeviceId that has its own cannot be taken with it (401, a wrong password as far as the
        throttle is concerned). Own credentials: only for their device (403).
        """
        if self.mode == "none" or outcome.username is None:
            return None
        if outcome.shared:
            assert self.has_own_credentials is not None
            if await self.has_own_credentials(device_id):
                return Refusal(401, "the shared credentials are not accepted for a device that has its own")
            return None
        if not (self.per_device or self.provisioned):
            return None
        if outcome.device_id is not None:
            if outcome.device_id != device_id:
                return Refusal(403, "the authenticated username does not belong to this device")
            return None
        if not username_matches_device(outcome.username, oui, product_class, serial_number):
            return Refusal(403, "the authenticated username does not belong to this device")
        return None

    def _is_shared_username(self, username: str) -> bool:
        return hmac.compare_digest(username.encode(), self.settings.cpe_username.encode())

    def challenge(self, stale: bool = False) -> str:
        if self.mode == "basic":
            return f'Basic realm="{self.settings.cpe_realm}"'
        return self.digest.challenge(stale=stale)

    async def authenticate(self, method: str, uri: str, authorization: str | None,
                           tls: bool, session_ha1: tuple[str, str] | None = None) -> AuthOutcome:
        """``session_ha1``: inside a session, the HA1 its Inform authenticated with (see GatewaySession)."""
        if self.mode == "none":
            return AuthOutcome(ok=True)
        if not authorization:
            return AuthOutcome(ok=False, challenge=self.challenge(), reason="no credentials")
        scheme = authorization.split(None, 1)[0].lower()
        if scheme == "basic":
            return await self._basic(authorization, tls, session_ha1)
        if scheme == "digest" and self.mode == "digest":
            outcome = await self._digest(method, uri, authorization, session_ha1)
            try:
                without_qop = parse_authorization(authorization).qop is None
            except DigestError:
                return outcome
            return dataclasses.replace(outcome, without_qop=True) if without_qop else outcome
        return AuthOutcome(ok=False, challenge=self.challenge(), reason=f"{scheme} authentication not accepted")

    async def _basic(self, authorization: str, tls: bool, session_ha1: tuple[str, str] | None = None,
                     ) -> AuthOutcome:
        # Basic sends the password in clear: only over TLS, unless the operator allowed it.
        if self.mode != "basic" or not (tls or self.settings.cpe_allow_basic_without_tls):
            return AuthOutcome(ok=False, challenge=self.challenge(), reason="Basic not accepted here")
        pair = parse_basic(authorization)
        if pair is None:
            return AuthOutcome(ok=False, challenge=self.challenge(), reason="malformed Basic credentials")
        username, password = pair
        device_id = None
        shared = False
        if self.provisioned and self._is_shared_username(username):
            shared = True
            ok = hmac.compare_digest(password.encode(), self.settings.cpe_password.encode())
        elif self.provisioned:
            given = compute_ha1("MD5", username, self.settings.cpe_realm, password)
            if session_ha1 is not None and session_ha1[0] == "MD5" and hmac.compare_digest(session_ha1[1], given):
                # Inside a session, the HA1 its Inform proved: no store read (see _digest_provisioned).
                return AuthOutcome(ok=True, username=username, matched_ha1=session_ha1)
            assert self.candidates is not None
            device_id, stored_ha1s = await self.candidates(username, "MD5")
            stored_ha1s = _with_session_ha1(stored_ha1s, "MD5", session_ha1)
            ok = any(hmac.compare_digest(stored, given) for stored in stored_ha1s)
            matched = ("MD5", given) if ok else None
        elif self.per_device:
            assert self.ha1_source is not None
            stored = await self.ha1_source(username, "MD5")
            given = compute_ha1("MD5", username, self.settings.cpe_realm, password)
            ok = stored is not None and hmac.compare_digest(stored, given)
        else:
            ok = hmac.compare_digest(username.encode(), self.settings.cpe_username.encode()) and \
                hmac.compare_digest(password.encode(), self.settings.cpe_password.encode())
        if not ok:
            return AuthOutcome(ok=False, username=username, challenge=self.challenge(),
                               wrong_credentials=True, reason="wrong Basic credentials")
        return AuthOutcome(ok=True, username=username, shared=shared, device_id=device_id,
                           matched_ha1=matched if self.provisioned and not shared else None)

    async def _digest(self, method: str, uri: str, authorization: str,
                      session_ha1: tuple[str, str] | None = None) -> AuthOutcome:
        if self.provisioned:
            return await self._digest_provisioned(method, uri, authorization, session_ha1)
        if self.per_device:
            assert self.ha1_source is not None
            try:
                credentials = parse_authorization(authorization)
            except DigestError as exc:
                return AuthOutcome(ok=False, challenge=self.challenge(),
                                   reason=f"malformed Digest credentials: {exc}")
            algorithm = (credentials.algorithm or "MD5").upper().removesuffix("-SESS")
            stored = await self.ha1_source(credentials.username, algorithm)
            result = self.digest.verify(method, uri, credentials,
                                        lookup_ha1=lambda _user, _alg: stored)
        else:
            result = self.digest.verify(method, uri, authorization, self._shared_password)
        return self._digest_outcome(result)

    async def _digest_provisioned(self, method: str, uri: str, authorization: str,
                                  session_ha1: tuple[str, str] | None) -> AuthOutcome:
        try:
            credentials = parse_authorization(authorization)
        except DigestError as exc:
            return AuthOutcome(ok=False, challenge=self.challenge(), reason=f"malformed Digest credentials: {exc}")
        if self._is_shared_username(credentials.username):
            result = self.digest.verify(method, uri, credentials, self._shared_password)
            return self._digest_outcome(result, shared=True)
        algorithm = (credentials.algorithm or "MD5").upper().removesuffix("-SESS")
        if session_ha1 is not None and session_ha1[0] == algorithm:
            # Inside a session, the HA1 its Inform authenticated with is tried first, without a
            # store read: a CPE that sends credentials on every request costs one MongoDB find per
            # session, not one per request. The session accepts that HA1 to its end anyway
            # (_with_session_ha1), so nothing is accepted that was not before.
            proven = session_ha1[1]
            result = self.digest.verify(method, uri, credentials, lookup_ha1=lambda _user, _alg: proven)
            if not result.wrong_password:
                return self._digest_outcome(result, matched_ha1=session_ha1 if result.ok else None)
        assert self.candidates is not None
        device_id, stored_ha1s = await self.candidates(credentials.username, algorithm)
        stored_ha1s = _with_session_ha1(stored_ha1s, algorithm, session_ha1)
        # The confirmed pair first, then one the ACS is setting now. A mismatch records nothing
        # (the nonce count is taken only by a match), so trying the next HA1 is safe.
        matched = None
        for stored in stored_ha1s or [None]:
            result = self.digest.verify(method, uri, credentials, lookup_ha1=lambda _user, _alg, h=stored: h)
            if not result.wrong_password:
                matched = (algorithm, stored) if stored is not None else None
                break
        return self._digest_outcome(result, device_id=device_id, matched_ha1=matched)

    def _digest_outcome(self, result: DigestResult, *, shared: bool = False, device_id: str | None = None,
                        matched_ha1: tuple[str, str] | None = None) -> AuthOutcome:
        if result.ok:
            return AuthOutcome(ok=True, username=result.username, shared=shared, device_id=device_id,
                               matched_ha1=matched_ha1)
        if result.stale or result.replayed:
            # The password was right: a fresh nonce is all the CPE needs (RFC 7616 stale=true).
            return AuthOutcome(ok=False, username=result.username, challenge=self.challenge(stale=True),
                               reason=result.reason)
        return AuthOutcome(ok=False, username=result.username, challenge=self.challenge(),
                           wrong_credentials=result.wrong_password, reason=result.reason)

    def _shared_password(self, username: str) -> str | None:
        if self._is_shared_username(username):
            return self.settings.cpe_password
        return None


def _with_session_ha1(stored: list[str], algorithm: str, session_ha1: tuple[str, str] | None) -> list[str]:
    """The store's HA1s, and the one the session started with (replaced by a bootstrap since)."""
    if session_ha1 is None or session_ha1[0] != algorithm or session_ha1[1] in stored:
        return stored
    return [*stored, session_ha1[1]]
