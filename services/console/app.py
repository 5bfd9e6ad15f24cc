"""The console service: the page and its assets, and the sign-in/session API.

``/`` is the single page; ``/console/assets/*`` its scripts and styles (the project's own, no
CDN); ``/console/api/session`` signs in (POST, with an API key, or with a username and password
and, for an account with a second factor, its one-time code: services.common.accounts), tells the
page who is signed in and its CSRF token (GET), and signs out (DELETE). Sign-ins, failed ones too,
are in the audit trail (services.common.audit). Everything else the page does goes to the
public ``/api/v1`` through the router, with the session cookie.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common import audit
from services.common.accounts import Accounts
from services.common.api import create_api
from services.common.apikeys import (
    AUDIT_SLOT,
    SESSION_COOKIE,
    ApiKeyAuth,
    Principal,
    console_session_principal,
    hash_key,
)
from services.common.service import add_health_routes, mongo_check
from services.common.settings import Settings
from services.console import sessions

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
# The page and its modules change with the ACS's version: revalidate every time (304 when unchanged).
NO_CACHE = {"Cache-Control": "no-cache"}
SECURITY_HEADERS = {
    # Only this origin: no CDN, no inline script, no framing by another site.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str | None = Field(None, min_length=1, max_length=512, description="an API key (any role)")
    username: str | None = Field(None, min_length=1, max_length=64, description="or an operator account's name")
    password: str | None = Field(None, min_length=1, max_length=1024)
    totp_code: str | None = Field(None, max_length=16, description="the one-time code, for an account with TOTP")


class SessionOut(BaseModel):
    principal: str
    role: str
    user: str | None = None
    scope: str | None = Field(None, description="the inventory query the session is limited to; null: everything")
    csrf_token: str = Field(description="send as X-CSRF-Token with every write")
    expires_at: Any


def create_app(settings: Settings, client: AsyncMongoClient | None = None,
               publish: audit.Publish | None = None) -> FastAPI:
    """``publish``: where audit records go besides MongoDB (audit.kafka_publisher in the process)."""
    owned = client is None
    mongo: AsyncMongoClient = client if client is not None else AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    db: AsyncDatabase = mongo[settings.mongodb_database]
    auth = ApiKeyAuth(db, settings.admin_api_key)
    accounts = Accounts(db, settings.account_lock_failures)
    trail = audit.AuditTrail(db, "console", settings.audit_retention_days, publish)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await sessions.ensure_indexes(db)
        await trail.ensure_indexes()
        yield
        await trail.drain()
        if owned:
            await mongo.close()

    app = create_api(title="ACS console", lifespan=lifespan, openapi_url=None,
                     description="The operator console: the page and its sign-in session.")
    add_health_routes(app, {"mongodb": mongo_check(mongo)})
    audit.install(app, trail)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/", include_in_schema=False)
    @app.get("/console/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=NO_CACHE)

    class Assets(StaticFiles):
        async def get_response(self, path: str, scope: Any) -> Response:
            response = await super().get_response(path, scope)
            response.headers.update(NO_CACHE)
            return response

    app.mount("/console/assets", Assets(directory=STATIC), name="console-assets")

    def view(document: dict[str, Any], token: str) -> dict[str, Any]:
        return {"principal": document["principal"], "role": document["role"], "user": document.get("user"),
                "scope": document.get("scope"),
                "csrf_token": sessions.csrf_token(settings.secret_key, token),
                "expires_at": document["expires_at"].isoformat()}

    async def signing_in(body: SignIn) -> tuple[Principal, str | None]:
        """The principal of a sign-in, and the API key's hash (None for a password); or 401."""
        if body.api_key is not None:
            if body.username is not None or body.password is not None:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "an API key, or a username and "
                                                                          "password: not both")
            principal = await auth.lookup(body.api_key)
            if principal is None:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key")
            return principal, hash_key(body.api_key)
        if body.username is None or body.password is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "sign in with an API key, or with a "
                                                                      "username and password")
        decision = await accounts.sign_in(body.username, body.password, body.totp_code or None)
        if decision.principal is None:
            log.info("console sign-in refused", extra={"username": body.username, "reason": decision.reason})
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, decision.detail)
        return decision.principal, None

    @app.post("/console/api/session", status_code=201, response_model=SessionOut)
    async def sign_in(body: SignIn, request: Request, response: Response) -> dict[str, Any]:
        principal, key_id = await signing_in(body)
        slot = request.scope.get(AUDIT_SLOT)
        if isinstance(slot, dict):
            slot["principal"] = principal
        session = sessions.new_session(principal, key_id, settings.secret_key, settings.console_session_hours,
                                       address=request.client.host if request.client else None)
        await sessions.store(db, session)
        secure = sessions.came_over_tls(request.url.scheme, request.headers.get("x-forwarded-proto"))
        response.set_cookie(value=session.token, **sessions.cookie_attributes(
            secure, int(settings.console_session_hours * 3600)))
        log.info("console sign-in", extra={"principal": principal.name, "role": principal.role})
        return view(session.document, session.token)

    @app.get("/console/api/session", response_model=SessionOut)
    async def who(request: Request) -> dict[str, Any]:
        token = request.cookies.get(SESSION_COOKIE, "")
        document = await sessions.find(db, token) if token else None
        if document is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not signed in")
        await console_session_principal(auth, request)  # its key may have been revoked since
        return view(document, token)

    @app.delete("/console/api/session", status_code=204)
    async def sign_out(request: Request) -> Response:
        principal = await console_session_principal(auth, request)  # 401 without, 403 without CSRF
        await sessions.delete(db, request.cookies.get(SESSION_COOKIE, ""))
        log.info("console sign-out", extra={"principal": principal.name})
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return app
