"""What the CPE-facing handlers (downloads.py, uploads.py) share: who the CPE is, and answers.

A CPE proves it may transfer a file with the Username/Password that a Download or Upload RPC
gave it (credentials.py mints them per file and device). Both directions check them the same
way here, with one Digest nonce space per process.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging

from fastapi import Request
from fastapi.responses import PlainTextResponse, Response
from pymongo.asynchronous.database import AsyncDatabase

from cwmp.digest import DigestServer, basic_challenge, parse_basic
from services.common.settings import Settings
from services.fileserver.credentials import (
    DownloadGrant,
    InvalidDownloadCredentials,
    check_download_password,
    check_download_username,
    download_password,
)

log = logging.getLogger(__name__)

# The inventory's device documents (services.inventory.store.DEVICES): ``_id`` is the device id,
# ``remote_address`` the address of its last Inform. Read only, by name, as the gateway reads the
# inventory's per-device CPE credentials.
INVENTORY_DEVICES = "devices"

REALM = "ACS file server"


class CpeAuthenticator:
    """Checks the credentials a CPE got in a Download or Upload RPC, for the file in the URL.

    Downloads and uploads share one instance, hence one Digest nonce space: a CPE may fetch and
    put on the same connection with the same nonce and rising nonce counts.
    """

    def __init__(self, settings: Settings, *, allow_basic: bool | None = None) -> None:
        self.settings = settings
        self.allow_basic = settings.downloads_allow_basic if allow_basic is None else allow_basic
        self.digest = DigestServer(REALM, _digest_secret(settings.secret_key))

    def challenge(self, stale: bool = False) -> Response:
        headers = [("www-authenticate", self.digest.challenge(stale=stale))]
        if self.allow_basic:
            headers.append(("www-authenticate", basic_challenge(REALM)))
        response = PlainTextResponse("authentication required\n", status_code=401)
        response.raw_headers += [(k.encode(), v.encode()) for k, v in headers]
        return response

    def authenticate(self, request: Request, name: str, action: str = "download") -> DownloadGrant | Response:
        """The grant for ``name``, or the 401 to send; ``action`` only labels the log line."""
        header = request.headers.get("authorization")
        refusal = ""

        if header and header.lstrip()[:6].lower() == "basic ":
            if not self.allow_basic:
                refusal = "Basic authentication is not allowed"
            elif (pair := parse_basic(header)) is None:
                refusal = "malformed Basic credentials"
            else:
                username, password = pair
                try:
                    grant = check_download_username(username, name)
                except InvalidDownloadCredentials as exc:
                    refusal = str(exc)
                else:
                    if check_download_password(self.settings, username, password):
                        return grant
                    refusal = "wrong password"
            log.info("%s refused: %s", action, refusal, extra={"file_name": name})
            return self.challenge()

        grants: dict[str, DownloadGrant] = {}
        claim_errors: list[str] = []

        def lookup(username: str) -> str | None:
            try:
                grants[username] = check_download_username(username, name)
            except InvalidDownloadCredentials as exc:
                claim_errors.append(str(exc))
                return None
            return download_password(self.settings, username)

        result = self.digest.verify(request.method, request_target(request), header, lookup)
        if result.ok and result.username in grants:
            return grants[result.username]
        if header:
            # A missing header is the normal first leg of Digest; anything else is worth a line.
            refusal = claim_errors[0] if claim_errors else result.reason
            log.info("%s refused: %s", action, refusal, extra={"file_name": name})
        return self.challenge(stale=result.stale)


class DeviceBinding:
    """Minted credentials name the device they were minted for; only that device may use them.

    The fileserver cannot see which CPE sends a request, only where it comes from: so a grant is
    honoured only from the address the inventory last saw its device inform from (the
    ``remote_address`` of its document, kept by every Inform; behind ACS_TRUSTED_PROXIES both
    sides see the CPE's own address). Device B presenting device A's credentials from elsewhere is
    refused with 403. A device the inventory has no address for yet (its first Inform is still
    on the bus) is let through: refusing it would fail the very first download of a new device,
    and its credentials are seconds old. ACS_DOWNLOADS_CHECK_ADDRESS=false turns the check off
    where the two ports cannot see the same address (a NAT between them).
    """

    def __init__(self, settings: Settings, db: AsyncDatabase) -> None:
        self.enabled = settings.downloads_check_address
        self.devices = db[INVENTORY_DEVICES]

    async def refusal(self, request: Request, grant: DownloadGrant, name: str, action: str) -> Response | None:
        """None when ``grant`` may be used from this request's address, else the 403 to send."""
        if not self.enabled or grant.device_id is None:
            return None
        client = request.client.host if request.client else ""
        document = await self.devices.find_one({"_id": grant.device_id}, {"remote_address": 1})
        known = (document or {}).get("remote_address")
        if not isinstance(known, str) or not known or same_address(known, client):
            return None
        log.info("%s refused: credentials of another device", action,
                 extra={"file_name": name, "device_id": grant.device_id, "remote": client})
        return PlainTextResponse("these credentials were minted for another device\n", status_code=403)


def same_address(a: str, b: str) -> bool:
    """Equal addresses, IPv4-mapped IPv6 (``::ffff:192.0.2.1``) and plain IPv4 alike."""
    try:
        first, second = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return a == b
    first = getattr(first, "ipv4_mapped", None) or first
    second = getattr(second, "ipv4_mapped", None) or second
    return first == second


def request_target(request: Request) -> str:
    """The request target as the CPE sent it, which is what its Digest ``uri`` must name."""
    path = request.scope.get("raw_path") or request.scope["path"].encode()
    query = request.scope.get("query_string", b"")
    target = path + (b"?" + query if query else b"")
    return target.decode("latin-1")


def unavailable() -> Response:
    return PlainTextResponse("file storage unavailable, retry later\n", status_code=503,
                             headers={"Retry-After": "30"})


def _digest_secret(secret_key: str) -> str:
    """The key for our Digest nonces, derived from ACS_SECRET_KEY.

    Derived rather than used as is: the gateway keys its own nonces with ACS_SECRET_KEY, and a
    separate key keeps the two uses apart; it also always has the length DigestServer requires.
    """
    return hmac.new(secret_key.encode(), b"acs-download-digest-nonces", hashlib.sha256).hexdigest()
