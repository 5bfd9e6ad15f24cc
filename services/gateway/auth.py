"""CPE authentication for the gateway: Digest, Basic (TLS only unless allowed) or none.

Credentials are either one shared pair from the settings or per device (HA1 values imported
through the inventory API and read from MongoDB). With per-device credentials the username
must name the device of the Inform (TR-069 3.4.4: "OUI-ProductClass-Serial" or "OUI-Serial"),
so one CPE cannot speak for another.

Only a password that was tested and found wrong counts as a failure (``wrong_credentials``, the
one the throttle counts): a stale nonce, a replayed nonce count, an unsupported scheme or a
malformed header teach a password guesser nothing, and counting them would throttle CPEs whose
only fault is a sloppy Digest client.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cwmp.digest import DigestError, DigestServer, compute_ha1, parse_authorization, parse_basic
from services.common.settings import Settings

# (username, algorithm "MD5" | "SHA-256") -> stored HA1 hex, or None for an unknown username.
HA1Source = Callable[[str, str], Awaitable[str | None]]


@dataclass(frozen=True)
class AuthOutcome:
    ok: bool
    username: str | None = None
    # Headers for the 401 answer when not ok.
    challenge: str | None = None
    # True when the client presented a password and it was wrong (counts for throttling).
    wrong_credentials: bool = False
    reason: str = ""


class CpeAuthenticator:
    def __init__(self, settings: Settings, ha1_source: HA1Source | None = None) -> None:
        self.settings = settings
        self.mode = settings.cpe_auth
        self.per_device = settings.cpe_credentials == "per-device"
        if self.per_device and ha1_source is None:
            raise ValueError("per-device CPE credentials need an HA1 source")
        self.ha1_source = ha1_source
        self.digest = DigestServer(settings.cpe_realm, settings.secret_key, nonce_ttl=300.0)

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

    def challenge(self, stale: bool = False) -> str:
        if self.mode == "basic":
            return f'Basic realm="{self.settings.cpe_realm}"'
        return self.digest.challenge(stale=stale)

    async def authenticate(self, method: str, uri: str, authorization: str | None,
                           tls: bool) -> AuthOutcome:
        if self.mode == "none":
            return AuthOutcome(ok=True)
        if not authorization:
            return AuthOutcome(ok=False, challenge=self.challenge(), reason="no credentials")
        scheme = authorization.split(None, 1)[0].lower()
        if scheme == "basic":
            return await self._basic(authorization, tls)
        if scheme == "digest" and self.mode == "digest":
            return await self._digest(method, uri, authorization)
        return AuthOutcome(ok=False, challenge=self.challenge(), reason=f"{scheme} authentication not accepted")

    async def _basic(self, authorization: str, tls: bool) -> AuthOutcome:
        # Basic sends the password in clear: only over TLS, unless the operator allowed it.
        if self.mode != "basic" or not (tls or self.settings.cpe_allow_basic_without_tls):
            return AuthOutcome(ok=False, challenge=self.challenge(), reason="Basic not accepted here")
        pair = parse_basic(authorization)
        if pair is None:
            return AuthOutcome(ok=False, challenge=self.challenge(), reason="malformed Basic credentials")
        username, password = pair
        if self.per_device:
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
        return AuthOutcome(ok=True, username=username)

    async def _digest(self, method: str, uri: str, authorization: str) -> AuthOutcome:
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
        if result.ok:
            return AuthOutcome(ok=True, username=result.username)
        if result.stale or result.replayed:
            # The password was right: a fresh nonce is all the CPE needs (RFC 7616 stale=true).
            return AuthOutcome(ok=False, username=result.username, challenge=self.challenge(stale=True),
                               reason=result.reason)
        return AuthOutcome(ok=False, username=result.username, challenge=self.challenge(),
                           wrong_credentials=result.wrong_password, reason=result.reason)

    def _shared_password(self, username: str) -> str | None:
        if hmac.compare_digest(username.encode(), self.settings.cpe_username.encode()):
            return self.settings.cpe_password
        return None
