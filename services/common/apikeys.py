"""Northbound API authentication: API keys with roles, stored hashed.

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Only its SHA-256 is
stored (collection ``api_keys``), so a database dump reveals no usable key. Keys are random
32-byte tokens, so a fast hash is enough (no password stretching needed). Roles are ordered:
``read-only`` < ``operator`` < ``admin``. The bootstrap admin key comes from ACS_ADMIN_API_KEY.

Names are unique (an index): creating a key under a name that exists is refused
(:class:`NameTaken`), so a client retrying a create whose answer it lost cannot store a second
key silently; it lists the keys, revokes the name and creates it again. ``last_used_at`` is
written when a service looks a key up in MongoDB, which it does at most once per
``KEY_CACHE_SECONDS`` per key: it is exact to that much.

Revocation takes effect everywhere within ``REVOCATION_CHECK_SECONDS``, although every service
(orchestrator, inventory, fileserver) caches the keys it saw for ``KEY_CACHE_SECONDS``: a revoke
also counts up a generation number (collection ``api_key_revocations``), and before a service
answers from its cache it reads that number (at most once per ``REVOCATION_CHECK_SECONDS``, one
small read for all keys); when it moved, the service drops its whole cache. Should that read fail,
the cache is dropped too: a key is never trusted on a cache that could not be checked.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import HTTPException, Request, status
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

log = logging.getLogger(__name__)

Role = Literal["read-only", "operator", "admin"]
ROLE_RANK: dict[str, int] = {"read-only": 0, "operator": 1, "admin": 2}
KEY_CACHE_SECONDS = 30.0
REVOCATION_CHECK_SECONDS = 1.0
COLLECTION = "api_keys"
REVOCATIONS = "api_key_revocations"
_GENERATION_ID = "generation"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "acs_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who makes a request. ``scope``: an inventory query (canonical JSON) the principal's every
    answer and action is limited to, None for everything (services.common.scopes). ``user``: the
    account (services.common.accounts) the key or session belongs to, None for a service key."""

    name: str
    role: Role
    scope: str | None = None
    user: str | None = None


# Users (services.common.accounts): read here too, because a key or a session of a user takes the
# user's scope and is refused once the user is disabled.
USERS = "users"
# Where a request's principal is noted for the audit trail (services.common.audit): a dict the
# audit middleware puts in the ASGI scope.
AUDIT_SLOT = "acs.audit"


class NameTaken(Exception):
    """An API key with this name exists already."""


class ApiKeyAuth:
    """Looks keys up (with a short cache, so a busy API does not query MongoDB per request)."""

    def __init__(self, db: AsyncDatabase | None, admin_key: str | None) -> None:
        self.db = db
        self.admin_hash = hash_key(admin_key) if admin_key else None
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        # The revocation generation the cache was filled under, and when it was last read.
        self._generation: int | None = None
        self._generation_read_at = -REVOCATION_CHECK_SECONDS

    async def ensure_indexes(self) -> None:
        if self.db is None:
            return
        try:
            await self.db[COLLECTION].create_index([("name", ASCENDING)], unique=True)
        except OperationFailure as exc:
            # Duplicates stored before names were unique: keep serving, and say how to clean up.
            log.warning("API key names are not unique yet; revoke the duplicated names",
                        extra={"error": str(exc.details.get("errmsg") if exc.details else exc)})

    async def create(self, name: str, role: Role, *, user: str | None = None, scope: str | None = None) -> str:
        """A new key; ``user``: the account it belongs to (it then has that user's scope, at most
        the user's role, and stops working when the user is disabled); ``scope`` (a service key's
        own scope, canonical JSON)."""
        if self.db is None:
            raise RuntimeError("API keys need a database")
        key = new_key()
        if await self.db[COLLECTION].find_one({"name": name}, {"_id": 1}) is not None:
            raise NameTaken(name)  # also without the unique index (see ensure_indexes)
        try:
            await self.db[COLLECTION].insert_one({"_id": hash_key(key), "name": name, "role": role, "user": user,
                                                  "scope": scope, "created_at": datetime.now(UTC),
                                                  "last_used_at": None})
        except DuplicateKeyError:
            raise NameTaken(name) from None
        return key

    async def list_keys(self) -> list[dict[str, Any]]:
        """Name, role, created and last used of every stored key; never the hash."""
        if self.db is None:
            return []
        found = self.db[COLLECTION].find({}, {"_id": 0, "name": 1, "role": 1, "created_at": 1, "user": 1, "scope": 1,
                                               "last_used_at": 1}).sort("name", ASCENDING)
        return [{"name": d["name"], "role": d["role"], "user": d.get("user"), "scope": d.get("scope"),
                 "created_at": _when(d.get("created_at")), "last_used_at": _when(d.get("last_used_at"))}
                async for d in found]

    async def revoke(self, name: str) -> bool:
        if self.db is None:
            return False
        result = await self.db[COLLECTION].delete_many({"name": name})
        await self.invalidate_everywhere()
        return result.deleted_count > 0

    async def invalidate_everywhere(self) -> None:
        """Make every service drop its key cache (a key revoked, a user disabled or changed)."""
        if self.db is None:
            return
        # Tell every other service's cache (they read the generation before trusting it).
        await self.db[REVOCATIONS].update_one({"_id": _GENERATION_ID}, {"$inc": {"value": 1}}, upsert=True)
        self._cache.clear()

    async def _check_revocations(self) -> None:
        """Drop the cache when a key was revoked anywhere since it was filled (or if unsure)."""
        if self.db is None:
            return
        now = time.monotonic()
        if now - self._generation_read_at < REVOCATION_CHECK_SECONDS:
            return
        self._generation_read_at = now  # one read per interval, however many requests wait
        try:
            found = await self.db[REVOCATIONS].find_one({"_id": _GENERATION_ID}, {"value": 1})
        except Exception:
            self._cache.clear()
            self._generation_read_at = -REVOCATION_CHECK_SECONDS
            raise
        generation = int(found["value"]) if found else 0
        if generation != self._generation:
            self._cache.clear()
            self._generation = generation

    async def lookup(self, key: str) -> Principal | None:
        digest = hash_key(key)
        if self.admin_hash and hmac.compare_digest(digest, self.admin_hash):
            return Principal("bootstrap-admin", "admin")
        await self._check_revocations()
        cached = self._cache.get(digest)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        principal = None
        if self.db is not None:
            # Looking it up and noting its use is one round trip.
            found = await self.db[COLLECTION].find_one_and_update(
                {"_id": digest}, {"$set": {"last_used_at": datetime.now(UTC)}},
                projection={"name": 1, "role": 1, "user": 1, "scope": 1}, return_document=ReturnDocument.AFTER)
            if found:
                principal = await self._of_user(Principal(found["name"], found["role"], found.get("scope"),
                                                          found.get("user")))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + KEY_CACHE_SECONDS, principal)
        return principal

    async def _of_user(self, principal: Principal) -> Principal | None:
        """A user's key: None once the user is gone or disabled; else the user's scope, and at
        most the user's role."""
        if principal.user is None or self.db is None:
            return principal
        user = await self.db[USERS].find_one({"_id": principal.user}, {"role": 1, "scope": 1, "disabled": 1})
        if user is None or user.get("disabled"):
            return None
        role = min(principal.role, user["role"], key=lambda r: ROLE_RANK[r])
        return Principal(principal.name, role, user.get("scope"), principal.user)

    def require(self, role: Role, *, scoped: bool = False) -> Callable[[Request], Awaitable[Principal]]:
        """A FastAPI dependency admitting keys of ``role`` or a higher one.

        A principal with a scope is refused (403) unless the route says it limits its answer to
        the scope (``scoped=True``): a route that knows nothing of scopes never serves one."""

        async def dependency(request: Request) -> Principal:
            principal = await self._principal(request)
            slot = request.scope.get(AUDIT_SLOT)
            if isinstance(slot, dict):
                slot["principal"] = principal
            if ROLE_RANK[principal.role] < ROLE_RANK[role]:
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role} role")
            if principal.scope is not None and not scoped:
                raise HTTPException(status.HTTP_403_FORBIDDEN, "this is not open to a principal limited to a "
                                                               "scope of devices")
            return principal

        return dependency

    async def _principal(self, request: Request) -> Principal:
        key = _key_from(request)
        if not key and request.cookies.get(SESSION_COOKIE):
            # The operator console's session: see console_session_principal.
            return await console_session_principal(self, request)
        if not key:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key",
                                headers={"WWW-Authenticate": "Bearer"})
        principal = await self.lookup(key)
        if principal is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key",
                                headers={"WWW-Authenticate": "Bearer"})
        return principal


def _when(value: Any) -> datetime | None:
    """Stored times as aware datetimes (keys created before were stored as epoch seconds)."""
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _key_from(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


# --- operator console sessions (services/console) --------------------------------------------------
# The console signs an operator in with an API key and keeps a server-side session instead of the
# key: collection ``console_sessions``, ``_id`` = SHA-256 of the cookie's token, with the key's
# name, role and id (the key's own hash, so a revoked key ends its sessions), the SHA-256 of the
# session's CSRF token, and ``expires_at`` (a TTL index deletes it). Every API service accepts
# the cookie as an alternative to the key headers; a write made with it must carry the CSRF token
# in ``X-CSRF-Token`` (the cookie is SameSite=Strict as well). No cache: a signed-out or revoked
# session is refused at once, at the price of one indexed read (two for a stored key) per request.

SESSION_COOKIE = "acs_session"
SESSIONS = "console_sessions"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def console_session_principal(auth: ApiKeyAuth, request: Request) -> Principal:
    """The principal of the request's console session cookie; 401 when it names no live session,
    403 for a write without the session's CSRF token."""
    token = request.cookies.get(SESSION_COOKIE, "")
    unauthorized = HTTPException(status.HTTP_401_UNAUTHORIZED, "no console session (signed out or expired)",
                                 headers={"WWW-Authenticate": "Bearer"})
    if auth.db is None or not token:
        raise unauthorized
    session = await auth.db[SESSIONS].find_one({"_id": hash_key(token)})
    expires = _when(session.get("expires_at")) if session is not None else None
    if session is None or expires is None or expires <= datetime.now(UTC):
        raise unauthorized
    principal = Principal(str(session["principal"]), session["role"], session.get("scope"), session.get("user"))
    if session.get("key_id") is None and not session.get("user"):
        raise unauthorized  # opened with neither a key nor an account: not one of ours
    if session.get("key_id") is not None:
        key_id = str(session.get("key_id", ""))
        if not (auth.admin_hash and hmac.compare_digest(key_id, auth.admin_hash)):
            if await auth.db[COLLECTION].find_one({"_id": key_id}, {"_id": 1}) is None:
                raise unauthorized  # the key it was opened with has been revoked
    if session.get("user"):
        # A user's session (opened with its password or one of its keys): the user's current
        # scope, and at most its current role, while it is enabled.
        user = await auth.db[USERS].find_one({"_id": session["user"]}, {"role": 1, "scope": 1, "disabled": 1})
        if user is None or user.get("disabled"):
            raise unauthorized
        role = user["role"] if session.get("key_id") is None else min(
            principal.role, user["role"], key=lambda r: ROLE_RANK[r])
        principal = Principal(principal.name, role, user.get("scope"), principal.user)
    if request.method.upper() not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(hash_key(sent), str(session.get("csrf_hash", ""))):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "a write with a console session needs its "
                                "CSRF token in the X-CSRF-Token header")
    return principal
