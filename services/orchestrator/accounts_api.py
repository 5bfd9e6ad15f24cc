"""Operator accounts, console sessions and the audit trail under /api/v1 (on the orchestrator).

- ``/api/v1/users``: an (unscoped) admin creates, lists, changes (role, scope, disabled, unlock)
  accounts; a user reads itself, changes its own password (with the current one) and enrols or
  removes its second factor (TOTP). services.common.accounts holds the rules.
- ``/api/v1/sessions``: the console sessions; an admin lists and revokes any, anyone else their own.
- ``/api/v1/audit``: the audit trail (services.common.audit), admin only, newest first.

Disabling a user, changing its role or scope, or its password, takes effect at once on every
instance: sessions read the user on every request, and the key caches are dropped everywhere
(the revocation generation of services.common.apikeys).
"""

# No "from __future__ import annotations": FastAPI resolves the dependency aliases defined in
# add_routes.
import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from services.common import audit, scopes
from services.common.accounts import AccountError, Accounts, password_matches, view
from services.common.apikeys import SESSION_COOKIE, SESSIONS, ApiKeyAuth, Principal, Role, hash_key

log = logging.getLogger(__name__)

ScopeIn = dict[str, Any] | str | None
SCOPE_DESCRIPTION = ('an inventory query the user is limited to, e.g. {"tags": "partner-a"} or {"oui": "00259E"}; '
                     "null or absent: every device")


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024, description="12 characters at least")
    role: Role
    scope: ScopeIn = Field(None, description=SCOPE_DESCRIPTION)


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    scope: ScopeIn = Field(None, description=SCOPE_DESCRIPTION + " (send null to clear)")
    disabled: bool | None = Field(None, description="a disabled user cannot sign in; its sessions and keys stop")
    locked: bool | None = Field(None, description="false: unlock after failed sign-ins (the count is reset)")


class UserOut(BaseModel):
    username: str
    role: Role
    scope: str | None
    disabled: bool
    locked: bool
    failures: int = Field(description="wrong passwords or codes in a row")
    totp: bool = Field(description="a second factor is enabled")
    created_at: datetime | None
    created_by: str | None
    password_changed_at: datetime | None
    last_sign_in_at: datetime | None


class UserList(BaseModel):
    users: list[UserOut]


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str | None = Field(None, max_length=1024, description="needed to change one's own password")
    new_password: str = Field(min_length=1, max_length=1024)


class TotpStart(BaseModel):
    secret: str = Field(description="shown once: put it in the authenticator app (or use the URI)")
    uri: str = Field(description="otpauth:// URI, for a QR code")


class TotpCode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=6, max_length=6, description="the app's current six-digit code")


class SessionInfo(BaseModel):
    id: str = Field(description="names the session here; it is not its token")
    principal: str
    user: str | None
    role: str
    scope: str | None
    via: str = Field(description="password or api-key")
    address: str | None
    created_at: datetime
    expires_at: datetime


class SessionList(BaseModel):
    sessions: list[SessionInfo]


class AuditRecord(BaseModel):
    id: str
    time: datetime
    service: str
    principal: str | None
    role: str | None
    user: str | None
    scope: str | None
    address: str | None
    method: str
    path: str
    query: dict[str, str]
    body: Any
    body_bytes: int
    status: int
    outcome: str
    before: Any = Field(None, description="a changed setting as it was (secrets redacted); null for a creation")
    after: Any = Field(None, description="the setting as it is after the write; null for a deletion")


class AuditList(BaseModel):
    records: list[AuditRecord]
    next_before: str | None = Field(description="pass as ?before= for older records; null at the end")


def add_routes(app: FastAPI, db: Any, auth: ApiKeyAuth, accounts: Accounts) -> None:
    Admin = Annotated[Principal, Depends(auth.require("admin"))]
    # Routes about oneself: open to a scoped principal (they reach no device).
    Anyone = Annotated[Principal, Depends(auth.require("read-only", scoped=True))]

    def is_admin(principal: Principal) -> bool:
        return principal.role == "admin" and principal.scope is None

    def self_or_admin(principal: Principal, username: str) -> None:
        if principal.user != username and not is_admin(principal):
            # Not 403: another user's existence is not told.
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {username!r}")

    async def user_or_404(username: str) -> dict[str, Any]:
        user = await accounts.get(username)
        if user is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {username!r}")
        return user

    def scope_of(value: ScopeIn) -> str | None:
        try:
            return scopes.canonical(value)
        except scopes.ScopeError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None

    async def end_sessions(username: str, keep_token: str | None = None) -> int:
        query: dict[str, Any] = {"user": username}
        if keep_token:
            query["_id"] = {"$ne": hash_key(keep_token)}
        return (await db[SESSIONS].delete_many(query)).deleted_count

    @app.post("/api/v1/users", status_code=201, response_model=UserOut, tags=["users"],
              summary="Create an operator account", responses={409: {"description": "username taken"}})
    async def create_user(body: UserIn, principal: Admin) -> dict[str, Any]:
        try:
            user = await accounts.create(body.username, body.password, body.role, scope_of(body.scope),
                                         principal.name)
        except AccountError as exc:
            raise HTTPException(exc.status, exc.detail) from None
        log.info("user created", extra={"username": body.username, "role": body.role, "by": principal.name})
        audit.note_change(None, view(user))
        return view(user)

    @app.get("/api/v1/users", response_model=UserList, tags=["users"], summary="The operator accounts")
    async def list_users(_: Admin) -> dict[str, Any]:
        return {"users": [view(u) for u in await accounts.list()]}

    @app.get("/api/v1/users/{username}", response_model=UserOut, tags=["users"],
             summary="An account (an admin reads any, a user itself)", responses={404: {"description": "no user"}})
    async def get_user(username: str, principal: Anyone) -> dict[str, Any]:
        self_or_admin(principal, username)
        return view(await user_or_404(username))

    @app.patch("/api/v1/users/{username}", response_model=UserOut, tags=["users"],
               summary="Change an account's role or scope, disable or enable it, unlock it",
               responses={404: {"description": "no user"}})
    async def change_user(username: str, body: UserPatch, principal: Admin) -> dict[str, Any]:
        before = view(await user_or_404(username))
        changes: dict[str, Any] = {}
        if body.role is not None:
            changes["role"] = body.role
        if "scope" in body.model_fields_set:
            changes["scope"] = scope_of(body.scope)
        if body.disabled is not None:
            changes["disabled"] = body.disabled
        if body.locked is not None:
            changes["locked"] = body.locked
            if not body.locked:
                changes["failures"] = 0
        user = await accounts.update(username, changes) if changes else await user_or_404(username)
        if user is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {username!r}")
        if body.disabled:
            await end_sessions(username)
        await auth.invalidate_everywhere()  # the user's keys take the change at once
        log.info("user changed", extra={"username": username, "changes": sorted(changes), "by": principal.name})
        audit.note_change(before, view(user))
        return view(user)

    @app.post("/api/v1/users/{username}/password", status_code=204, tags=["users"],
              summary="Change a password: one's own (with the current one), or anyone's as an admin",
              description="The user's other console sessions end.",
              responses={403: {"description": "wrong current password"}, 404: {"description": "no user"}})
    async def change_password(username: str, body: PasswordChange, request: Request, principal: Anyone) -> Response:
        self_or_admin(principal, username)
        user = await user_or_404(username)
        if principal.user == username and not password_matches(user.get("password_hash"), body.current_password or ""):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "the current password is wrong")
        try:
            await accounts.change_password(username, body.new_password)
        except AccountError as exc:
            raise HTTPException(exc.status, exc.detail) from None
        await end_sessions(username, keep_token=request.cookies.get(SESSION_COOKIE))
        log.info("password changed", extra={"username": username, "by": principal.name})
        audit.note_change(view(user), view(await user_or_404(username)))
        return Response(status_code=204)

    @app.post("/api/v1/users/{username}/totp", response_model=TotpStart, tags=["users"],
              summary="Start enrolling a second factor (TOTP): a new secret, shown once",
              description="The factor is enabled once a code of it is confirmed (POST .../totp/confirm).",
              responses={409: {"description": "a second factor is enabled already"}})
    async def start_totp(username: str, principal: Anyone) -> dict[str, Any]:
        if principal.user != username:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {username!r}")
        if (await user_or_404(username)).get("totp_enabled"):
            # A new secret would switch the factor off until confirmed: remove it first, knowingly.
            raise HTTPException(status.HTTP_409_CONFLICT, "a second factor is enabled; remove it first "
                                                          "(DELETE /api/v1/users/{name}/totp)")
        started = await accounts.start_totp(username)
        if started is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {username!r}")
        return {"secret": started[0], "uri": started[1]}

    @app.post("/api/v1/users/{username}/totp/confirm", response_model=UserOut, tags=["users"],
              summary="Enable the second factor with a current code of it",
              responses={422: {"description": "wrong code"}})
    async def confirm_totp(username: str, body: TotpCode, principal: Anyone) -> dict[str, Any]:
        if principal.user != username:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {username!r}")
        before = view(await user_or_404(username))
        if not await accounts.confirm_totp(username, body.code):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "wrong code, or no enrolment started")
        after = view(await user_or_404(username))
        audit.note_change(before, after)
        return after

    @app.delete("/api/v1/users/{username}/totp", status_code=204, tags=["users"],
                summary="Remove the second factor (oneself, or an admin for a user who lost it)")
    async def remove_totp(username: str, principal: Anyone) -> Response:
        self_or_admin(principal, username)
        before = view(await user_or_404(username))
        if not await accounts.remove_totp(username):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {username!r}")
        audit.note_change(before, view(await user_or_404(username)))
        return Response(status_code=204)

    # --- console sessions -----------------------------------------------------------------------

    def own_sessions(principal: Principal) -> dict[str, Any]:
        if principal.user is not None:
            return {"user": principal.user}
        return {"principal": principal.name, "user": None}

    def session_view(document: dict[str, Any]) -> dict[str, Any]:
        return {"id": document.get("sid") or "", "principal": document["principal"], "user": document.get("user"),
                "role": document["role"], "scope": document.get("scope"), "via": document.get("via", "api-key"),
                "address": document.get("address"), "created_at": document["created_at"],
                "expires_at": document["expires_at"]}

    @app.get("/api/v1/sessions", response_model=SessionList, tags=["users"],
             summary="Console sessions: all for an admin, one's own for anyone else")
    async def list_sessions(principal: Anyone, username: str | None = None) -> dict[str, Any]:
        query: dict[str, Any] = {} if is_admin(principal) else own_sessions(principal)
        if username is not None:
            query = {"$and": [query, {"user": username}]} if query else {"user": username}
        found = db[SESSIONS].find(query).sort("created_at", -1).limit(1000)
        return {"sessions": [session_view(d) async for d in found]}

    @app.delete("/api/v1/sessions/{session_id}", status_code=204, tags=["users"],
                summary="End a console session (an admin any, anyone else their own)",
                responses={404: {"description": "no such session"}})
    async def revoke_session(session_id: str, principal: Anyone) -> Response:
        query: dict[str, Any] = {"sid": session_id}
        if not is_admin(principal):
            query.update(own_sessions(principal))
        if (await db[SESSIONS].delete_one(query)).deleted_count == 0:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no session {session_id!r}")
        log.info("session revoked", extra={"session": session_id, "by": principal.name})
        return Response(status_code=204)

    # --- audit trail ----------------------------------------------------------------------------

    @app.get("/api/v1/audit", response_model=AuditList, tags=["audit"],
             summary="The audit trail: every write through the API and the console's sign-ins, newest first")
    async def read_audit(_: Admin,
                         principal: Annotated[str | None, Query(description="a key's or user's name")] = None,
                         user: str | None = None,
                         method: str | None = None,
                         path_prefix: Annotated[str | None, Query(description="e.g. /api/v1/jobs")] = None,
                         outcome: Annotated[str | None, Query(pattern="^(ok|refused|failed)$")] = None,
                         service: str | None = None,
                         since: datetime | None = None, until: datetime | None = None,
                         before: Annotated[str | None, Query(description="next_before of the previous page")] = None,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        found = await audit.find(db, principal=principal, user=user, method=method, path_prefix=path_prefix,
                                 outcome=outcome, service=service, since=since, until=until, before_id=before,
                                 limit=limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return {"records": found, "next_before": found[-1]["id"] if more and found else None}
