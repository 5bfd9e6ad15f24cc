"""Operator accounts: username, argon2id password hash, optional TOTP, lock after failures.

Collection ``users``, ``_id`` = the username. A document holds the role and scope (see
services.common.scopes), ``password_hash`` (argon2id, argon2-cffi's defaults; re-hashed at sign-in
when those change), ``failures`` (wrong passwords or codes in a row) and ``locked`` (set at
``ACS_ACCOUNT_LOCK_FAILURES`` failures; only an admin unlocks), ``disabled``, and for the second
factor ``totp_secret`` with ``totp_enabled`` (false until the user confirmed a code of it) and
``totp_last_step`` (a code is accepted once: a replayed code is refused). Nothing of it is ever
shown by the API but the role, scope and states.

The sign-in decision (:func:`decide`) is pure; :class:`Accounts` does the reads and writes.
"""

from __future__ import annotations

import hmac
import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.common.apikeys import USERS, Principal, Role

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
TOTP_STEP = 30
ISSUER = "ACS"
_hasher = PasswordHasher()
# Compared against for an unknown username, so that it takes as long as a known one.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AccountError(Exception):
    """A refused account change; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class UserExists(AccountError):
    def __init__(self, username: str) -> None:
        super().__init__(409, f"a user named {username!r} exists")


def check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(422, f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def totp_step(code: str, secret: str, now: float, last_step: int | None) -> int | None:
    """The time step of ``code`` when it is a current code of ``secret`` (one step of clock skew
    either way) not used before (a step after ``last_step``); else None."""
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_STEP)
    current = int(now // TOTP_STEP)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code) and (last_step is None or step > last_step):
            return step
    return None


@dataclass(frozen=True)
class Decision:
    """What a sign-in attempt comes to: the principal, or why not, and what to store."""

    principal: Principal | None
    reason: str  # "ok", "unknown", "wrong-password", "wrong-code", "code-needed", "locked", "disabled"
    detail: str  # for the person signing in
    update: dict[str, Any]  # for the user's document ({} to leave it)


REFUSED = "wrong username or password"


def decide(user: dict[str, Any] | None, password_ok: bool, code: str | None, now: float,
           max_failures: int) -> Decision:
    """The sign-in decision for ``user`` (None: unknown) whose password was checked already."""
    if user is None:
        return Decision(None, "unknown", REFUSED, {})
    if user.get("disabled"):
        return Decision(None, "disabled", REFUSED, {})
    if user.get("locked"):
        return Decision(None, "locked", "this account is locked after too many failed sign-ins; an admin "
                                        "unlocks it", {})
    failures = int(user.get("failures", 0))

    def failed(reason: str, detail: str) -> Decision:
        count = failures + 1
        update: dict[str, Any] = {"failures": count}
        if count >= max_failures:
            update["locked"] = True
            detail += f"; the account is now locked after {count} failures"
        return Decision(None, reason, detail, update)

    if not password_ok:
        return failed("wrong-password", REFUSED)
    step: int | None = None
    if user.get("totp_enabled"):
        if not code:
            return Decision(None, "code-needed", "this account needs its one-time code (TOTP)", {})
        step = totp_step(code, str(user.get("totp_secret", "")), now, user.get("totp_last_step"))
        if step is None:
            return failed("wrong-code", "wrong or reused one-time code")
    update = {"failures": 0, "last_sign_in_at": datetime.fromtimestamp(now, UTC)}
    if step is not None:
        update["totp_last_step"] = step
    return Decision(Principal(user["_id"], user["role"], user.get("scope"), user["_id"]), "ok", "", update)


def view(user: dict[str, Any]) -> dict[str, Any]:
    """A user as the API shows it: never the hash, the TOTP secret or its steps."""
    return {"username": user["_id"], "role": user["role"], "scope": user.get("scope"),
            "disabled": bool(user.get("disabled")), "locked": bool(user.get("locked")),
            "failures": int(user.get("failures", 0)), "totp": bool(user.get("totp_enabled")),
            "created_at": user.get("created_at"), "created_by": user.get("created_by"),
            "password_changed_at": user.get("password_changed_at"), "last_sign_in_at": user.get("last_sign_in_at")}


class Accounts:
    def __init__(self, db: AsyncDatabase, max_failures: int = 5) -> None:
        self.db = db
        self.users = db[USERS]
        self.max_failures = max_failures

    async def create(self, username: str, password: str, role: Role, scope: str | None, by: str) -> dict[str, Any]:
        if not USERNAME.fullmatch(username):
            raise AccountError(422, "a username has 1 to 64 letters, digits or _ . @ + - and starts with a "
                                    "letter or digit")
        check_password(password)
        now = datetime.now(UTC)
        document = {"_id": username, "role": role, "scope": scope, "password_hash": hash_password(password),
                    "failures": 0, "locked": False, "disabled": False, "totp_enabled": False,
                    "created_at": now, "created_by": by, "password_changed_at": now, "last_sign_in_at": None}
        try:
            await self.users.insert_one(document)
        except DuplicateKeyError:
            raise UserExists(username) from None
        return document

    async def get(self, username: str) -> dict[str, Any] | None:
        return await self.users.find_one({"_id": username})

    async def list(self) -> list[dict[str, Any]]:
        return [u async for u in self.users.find({}).sort("_id", 1)]

    async def update(self, username: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        return await self.users.find_one_and_update({"_id": username}, {"$set": changes},
                                                    return_document=ReturnDocument.AFTER)

    async def sign_in(self, username: str, password: str, code: str | None) -> Decision:
        user = await self.get(username)
        stored = user.get("password_hash") if user is not None else None
        password_ok = password_matches(stored, password)  # the same work for an unknown username
        decision = decide(user, password_ok, code, time.time(), self.max_failures)
        if user is not None and decision.update:
            if decision.reason == "ok" and _hasher.check_needs_rehash(str(stored)):
                decision.update["password_hash"] = hash_password(password)
            if "failures" in decision.update and decision.reason != "ok":
                # Counted atomically: parallel guesses cannot each read the same count.
                counted = await self.users.find_one_and_update(
                    {"_id": username}, {"$inc": {"failures": 1}}, return_document=ReturnDocument.AFTER,
                    projection={"failures": 1})
                if counted is not None and int(counted["failures"]) >= self.max_failures:
                    await self.users.update_one({"_id": username}, {"$set": {"locked": True}})
                    if "locked" not in decision.update:
                        decision = replace(decision, detail=decision.detail + "; the account is now locked")
            else:
                guard: dict[str, Any] = {"_id": username}
                if "totp_last_step" in decision.update:
                    # A code is good once, also against a parallel sign-in with the same code.
                    guard["$or"] = [{"totp_last_step": None},
                                    {"totp_last_step": {"$lt": decision.update["totp_last_step"]}}]
                if (await self.users.update_one(guard, {"$set": decision.update})).matched_count == 0:
                    return Decision(None, "wrong-code", "wrong or reused one-time code", {})
        return decision

    async def change_password(self, username: str, new_password: str) -> bool:
        check_password(new_password)
        result = await self.users.update_one({"_id": username}, {"$set": {
            "password_hash": hash_password(new_password), "password_changed_at": datetime.now(UTC)}})
        return result.matched_count > 0

    async def start_totp(self, username: str) -> tuple[str, str] | None:
        """A new (not yet enabled) TOTP secret and its otpauth:// URI, shown once."""
        secret = pyotp.random_base32()
        result = await self.users.update_one({"_id": username}, {"$set": {
            "totp_secret": secret, "totp_enabled": False, "totp_last_step": None}})
        if result.matched_count == 0:
            return None
        return secret, pyotp.TOTP(secret, interval=TOTP_STEP).provisioning_uri(name=username, issuer_name=ISSUER)

    async def confirm_totp(self, username: str, code: str) -> bool:
        user = await self.get(username)
        if user is None or not user.get("totp_secret"):
            return False
        step = totp_step(code, str(user["totp_secret"]), time.time(), user.get("totp_last_step"))
        if step is None:
            return False
        await self.users.update_one({"_id": username}, {"$set": {"totp_enabled": True, "totp_last_step": step}})
        return True

    async def remove_totp(self, username: str) -> bool:
        result = await self.users.update_one({"_id": username}, {
            "$set": {"totp_enabled": False}, "$unset": {"totp_secret": "", "totp_last_step": ""}})
        return result.matched_count > 0
