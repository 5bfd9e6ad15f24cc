"""Per-Download file-server credentials: minted by the orchestrator, checked by the fileserver.

A Download RPC carries a URL plus a Username/Password for the file server (TR-069 A.3.2.8). We
mint a pair per Download that is good for one file, names the device it was minted for, and
expires. Nothing is stored: the username carries the facts and the password is an HMAC of the
username under ``ACS_SECRET_KEY``, so every fileserver instance can check any pair without a
database round trip, and the orchestrator needs no call to the fileserver to mint one.

Username layout::

    dl2.<expiry, unix seconds in base 36>.<file tag>.<device id, ~-escaped>

Usernames and passwords use RFC 3986 unreserved characters only (``A-Z a-z 0-9 - . _ ~``): CPE
agents that hand the Download to wget or curl paste them into the URL (``http://user:pass@host/``)
and the tool percent-decodes them, so a ``%`` would arrive changed and the download fail with 401.
They are also safe inside a Digest quoted-string and free of ``:`` for Basic.

The file tag is a truncated SHA-256 of the file name rather than the name itself, because file
names may be long or non-ASCII while TR-069 limits Username to 256 characters; the download URL
names the file, and the verifier checks that the tag matches it. The device id is kept readable so
that each download record says which CPE fetched what: its bytes outside ``A-Z a-z 0-9 - . _``
become ``~`` and two hex digits (the device id ``00D09E-easy%20cwmp-SN1`` gives
``00D09E-easy~2520cwmp-SN1``). ``dl1`` usernames (the device id percent-encoded, hence with
``%``), minted before, are still accepted until they expire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

from services.common.settings import Settings

USERNAME_VERSION = "dl2"
# The earlier layout, still verified: its device id was percent-encoded.
_PERCENT_ENCODED_VERSION = "dl1"
# TR-069 Download: Username and Password are string(256).
MAX_USERNAME_LENGTH = 256
# 24 base64url characters = 144 bits of HMAC: far beyond guessing within any TTL.
PASSWORD_LENGTH = 24
FILE_TAG_LENGTH = 16
# Used while ACS_DOWNLOAD_CREDENTIALS_TTL is not a setting yet. Long enough for a CPE that
# waits DelaySeconds, retries once and resumes with Range; the orchestrator mints afresh for
# every Download it sends, so a longer life buys nothing.
# Domain separation: ACS_SECRET_KEY also keys Digest nonces, and a value MACed for one purpose
# must never be accepted for the other.
_PURPOSE = b"acs-download-credentials\x00"


class InvalidDownloadCredentials(ValueError):
    """The username is not one we minted, is for another file, or has expired (reason in args)."""


@dataclass(frozen=True, slots=True)
class DownloadGrant:
    """What a verified username allows: downloading ``file_tag``'s file until ``expires_at``."""

    username: str
    file_tag: str
    device_id: str | None
    expires_at: int


def default_ttl(settings: Settings) -> float:
    return settings.download_credentials_ttl


def file_tag(file_name: str) -> str:
    digest = hashlib.sha256(file_name.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:FILE_TAG_LENGTH]


def download_password(settings: Settings, username: str) -> str:
    """The password that goes with ``username``; whoever holds the secret key can recompute it."""
    mac = hmac.new(settings.secret_key.encode("utf-8"), _PURPOSE + username.encode("utf-8"),
                   hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii")[:PASSWORD_LENGTH]


def mint_download_credentials(settings: Settings, file_name: str, device_id: str | None,
                              ttl: float | None = None, *, now: float | None = None) -> tuple[str, str]:
    """``(username, password)`` for one CPE to fetch ``file_name`` for the next ``ttl`` seconds.

    Put them in the Download RPC with :func:`download_url`. Raises ValueError when the device id
    is so long that the username would exceed TR-069's 256 characters (no real DeviceId is).
    """
    if not file_name:
        raise ValueError("file_name must not be empty")
    ttl = default_ttl(settings) if ttl is None else ttl
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    expires = int((time.time() if now is None else now) + ttl)
    username = f"{USERNAME_VERSION}.{_base36(expires)}.{file_tag(file_name)}.{escape_device_id(device_id or '')}"
    if len(username) > MAX_USERNAME_LENGTH:
        raise ValueError(f"device id too long for a {MAX_USERNAME_LENGTH}-character Download username")
    return username, download_password(settings, username)


def check_download_username(username: str, file_name: str, *, now: float | None = None) -> DownloadGrant:
    """Parse a minted username and check that it is for ``file_name`` and not expired.

    This checks the claims only; the password (Basic) or the Digest response proves that we
    minted the username, through :func:`download_password`.
    """
    parts = username.split(".", 3)
    if len(parts) != 4 or parts[0] not in (USERNAME_VERSION, _PERCENT_ENCODED_VERSION):
        raise InvalidDownloadCredentials("not a download username")
    version, expiry_text, tag, device = parts
    try:
        expires_at = int(expiry_text, 36)
    except ValueError:
        raise InvalidDownloadCredentials("malformed expiry") from None
    if not hmac.compare_digest(tag.encode(), file_tag(file_name).encode()):
        raise InvalidDownloadCredentials("credentials are for another file")
    if expires_at < (time.time() if now is None else now):
        raise InvalidDownloadCredentials("credentials expired")
    if version == USERNAME_VERSION:
        try:
            device_id = unescape_device_id(device)
        except ValueError:
            raise InvalidDownloadCredentials("malformed device id") from None
    else:
        device_id = unquote(device)
    return DownloadGrant(username=username, file_tag=tag, device_id=device_id or None,
                         expires_at=expires_at)


def check_download_password(settings: Settings, username: str, password: str) -> bool:
    """Constant-time check of a password presented with Basic authentication."""
    return hmac.compare_digest(download_password(settings, username).encode(), password.encode("utf-8"))


def download_url(settings: Settings, file_name: str) -> str:
    """The URL CPEs fetch ``file_name`` from (TR-069 forbids userinfo in it, so there is none)."""
    return f"{settings.files_public_url.rstrip('/')}/download/{quote(file_name, safe='')}"


_KEPT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._")
_ESCAPED_RE = re.compile(r"(?:[A-Za-z0-9._-]|~[0-9A-F]{2})*")


def escape_device_id(device_id: str) -> str:
    """``device_id`` in unreserved characters only: every UTF-8 byte outside ``A-Z a-z 0-9 - . _``
    becomes ``~`` and two upper-case hex digits (``~`` itself too, so the escape is reversible)."""
    return "".join(chr(b) if b in _KEPT else f"~{b:02X}" for b in device_id.encode("utf-8"))


def unescape_device_id(escaped: str) -> str:
    """The inverse of :func:`escape_device_id`; ValueError for anything it cannot have produced."""
    if not _ESCAPED_RE.fullmatch(escaped):
        raise ValueError("not an escaped device id")
    return unquote(escaped.replace("~", "%"), errors="strict")


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    if value <= 0:
        return "0"
    out = []
    while value:
        value, rest = divmod(value, 36)
        out.append(digits[rest])
    return "".join(reversed(out))
