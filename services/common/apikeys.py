"""Northbound API authentication: API keys with roles, stored hashed.

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Only its SHA-256 is
stored (collection ``api_keys``), so a database dump reveals no usable key. Keys are random
32-byte tokens, so a fast hash is enough (no password stretching needed). Roles are ordered:
``read-only`` < ``operator`` < ``admin``. The bootstrap admin key comes from ACS_ADMIN_API_KEY.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException, Request, status
from pymongo.asynchronous.database import AsyncDatabase

Role = Literal["read-only", "operator", "admin"]
ROLE_RANK: dict[str, int] = {"read-only": 0, "operator": 1, "admin": 2}
KEY_CACHE_SECONDS = 30.0


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "acs_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


class ApiKeyAuth:
    """Looks keys up (with a short cache, so a busy API does not query MongoDB per request)."""

    def __init__(self, db: AsyncDatabase | None, admin_key: str | None) -> None:
        self.db = db
        self.admin_hash = hash_key(admin_key) if admin_key else None
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def create(self, name: str, role: Role) -> str:
        if self.db is None:
            raise RuntimeError("API keys need a database")
        key = new_key()
        await self.db["api_keys"].insert_one({"_id": hash_key(key), "name": name, "role": role,
                                              "created_at": time.time()})
        return key

    async def revoke(self, name: str) -> bool:
        if self.db is None:
            return False
        result = await self.db["api_keys"].delete_many({"name": name})
        self._cache.clear()
        return result.deleted_count > 0

    async def lookup(self, key: str) -> Principal | None:
        digest = hash_key(key)
        if self.admin_hash and hmac.compare_digest(digest, self.admin_hash):
            return Principal("bootstrap-admin", "admin")
        cached = self._cache.get(digest)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        principal = None
        if self.db is not None:
            found = await self.db["api_keys"].find_one({"_id": digest})
            if found:
                principal = Principal(found["name"], found["role"])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + KEY_CACHE_SECONDS, principal)
        return principal

    def require(self, role: Role) -> Callable[[Request], Awaitable[Principal]]:
        """A FastAPI dependency admitting keys of ``role`` or a higher one."""

        async def dependency(request: Request) -> Principal:
            key = _key_from(request)
            if not key:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key",
                                    headers={"WWW-Authenticate": "Bearer"})
            principal = await self.lookup(key)
            if principal is None:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key",
                                    headers={"WWW-Authenticate": "Bearer"})
            if ROLE_RANK[principal.role] < ROLE_RANK[role]:
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role} role")
            return principal

        return dependency


def _key_from(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None
