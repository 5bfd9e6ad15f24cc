"""Which gateway instance holds a session, carried in the session cookie itself.

Sessions live in the memory of the instance that took the Inform. Behind a load balancer a
CPE's next connection may reach another instance; that instance reads the owner's address from
the cookie and forwards the request there, so a session survives a dropped TCP connection on
any instance, without a database write per message. The address is signed with the
deployment's secret: a CPE cannot make a gateway forward requests anywhere else. The same secret
signs the notice with which one instance tells another that a newer session of a device took
over a session the other holds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

# Marks a request that one gateway forwarded to another; never forwarded again (no loops).
FORWARDED_HEADER = "x-acs-forwarded"
# Tells the instance holding a session that a newer session of its device took the lock:
# "<session id> <mark>", the mark binding the session id to the deployment's secret.
TAKEN_OVER_HEADER = "x-acs-taken-over"


@dataclass(frozen=True)
class SessionCookie:
    session_id: str
    owner_url: str | None  # None: no (valid) owner, look the session up locally only


def _mac(secret: str, *parts: str) -> str:
    digest = hmac.new(secret.encode(), "\x00".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode().rstrip("=")


def make_cookie_value(session_id: str, owner_url: str, secret: str) -> str:
    owner = base64.urlsafe_b64encode(owner_url.encode()).decode().rstrip("=")
    return f"{session_id}.{owner}.{_mac(secret, session_id, owner_url)}"


def parse_cookie_value(value: str, secret: str) -> SessionCookie:
    parts = value.split(".")
    if len(parts) != 3:
        return SessionCookie(value, None)
    session_id, owner, mac = parts
    try:
        owner_url = base64.urlsafe_b64decode(owner + "=" * (-len(owner) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return SessionCookie(session_id, None)
    if not hmac.compare_digest(mac, _mac(secret, session_id, owner_url)):
        return SessionCookie(session_id, None)
    return SessionCookie(session_id, owner_url)


def forward_mark(session_id: str, secret: str) -> str:
    return _mac(secret, "forwarded", session_id)


def is_forwarded(mark: str | None, session_id: str, secret: str) -> bool:
    return mark is not None and hmac.compare_digest(mark, forward_mark(session_id, secret))


def taken_over_value(session_id: str, secret: str) -> str:
    return f"{session_id} {_mac(secret, 'taken-over', session_id)}"


def parse_taken_over(value: str, secret: str) -> str | None:
    """The session id a genuine take-over notice names, else None."""
    session_id, _, mark = value.partition(" ")
    if not session_id or not hmac.compare_digest(mark.encode(), _mac(secret, "taken-over", session_id).encode()):
        return None
    return session_id
