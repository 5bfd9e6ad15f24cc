"""Console sessions: the decisions (tokens, CSRF, cookie attributes) and their MongoDB documents.

A session is opened with an API key (checked against the API-key store, services.common.apikeys)
or with a username and password (services.common.accounts), and lives server-side in
``console_sessions``; the browser holds only a random token in an HttpOnly cookie. The CSRF
token is derived from the session token with ``ACS_SECRET_KEY``, so the console can hand it to
a reloaded page again without storing it; only its hash is stored, and that is what the API
services compare the X-CSRF-Token header with.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from services.common.apikeys import SESSION_COOKIE, SESSIONS, Principal, hash_key

__all__ = ["SESSION_COOKIE", "Session", "cookie_attributes", "csrf_token", "new_session"]


@dataclass(frozen=True)
class Session:
    token: str  # goes into the cookie only; never stored
    csrf: str  # given to the page; only its hash is stored
    document: dict[str, Any]


def csrf_token(secret: str, token: str) -> str:
    return hmac.new(secret.encode(), b"console-csrf:" + token.encode(), hashlib.sha256).hexdigest()


def new_session(principal: Principal, key_id: str | None, secret: str, hours: float, now: datetime | None = None,
                address: str | None = None) -> Session:
    """A session opened with an API key (``key_id``: the key's hash) or, ``key_id`` None, with the
    password of the user ``principal.user``. ``sid`` names it in the sessions API (listing and
    revoking); it is not the token and opens nothing."""
    now = now or datetime.now(UTC)
    token = secrets.token_urlsafe(32)
    csrf = csrf_token(secret, token)
    document = {"_id": hash_key(token), "sid": secrets.token_hex(12), "principal": principal.name,
                "role": principal.role, "scope": principal.scope, "user": principal.user, "key_id": key_id,
                "via": "api-key" if key_id is not None else "password", "address": address,
                "csrf_hash": hash_key(csrf), "created_at": now, "expires_at": now + timedelta(hours=hours)}
    return Session(token, csrf, document)


def cookie_attributes(secure: bool, max_age: int) -> dict[str, Any]:
    """Starlette ``set_cookie`` keywords: HttpOnly, SameSite=Strict, Secure behind TLS."""
    return {"key": SESSION_COOKIE, "httponly": True, "samesite": "strict", "secure": secure, "path": "/",
            "max_age": max_age}


def came_over_tls(scheme: str, forwarded_proto: str | None) -> bool:
    """TLS seen by this service, or by the proxy in front of it (Ingress: X-Forwarded-Proto)."""
    proto = (forwarded_proto or "").split(",")[0].strip().lower()
    return scheme == "https" or proto == "https"


async def ensure_indexes(db: AsyncDatabase) -> None:
    # MongoDB deletes expired sessions itself (the API services check expires_at too).
    await db[SESSIONS].create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)
    await db[SESSIONS].create_index([("sid", ASCENDING)])
    await db[SESSIONS].create_index([("user", ASCENDING)])


async def store(db: AsyncDatabase, session: Session) -> None:
    await db[SESSIONS].insert_one(session.document)


async def find(db: AsyncDatabase, token: str) -> dict[str, Any] | None:
    found = await db[SESSIONS].find_one({"_id": hash_key(token)})
    if found is None:
        return None
    expires = found.get("expires_at")
    if not isinstance(expires, datetime):
        return None
    return found if (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) > datetime.now(UTC) else None


async def delete(db: AsyncDatabase, token: str) -> bool:
    return (await db[SESSIONS].delete_one({"_id": hash_key(token)})).deleted_count > 0
