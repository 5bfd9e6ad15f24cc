"""The console service: the page and its assets, and the sign-in/session API.

``/`` is the single page; ``/console/assets/*`` its scripts and styles (the project's own, no
CDN); ``/console/api/session`` signs in (POST, with an API key), tells the page who is signed in
and its CSRF token (GET), and signs out (DELETE). Everything else the page does goes to the
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

from services.common.api import create_api
from services.common.apikeys import SESSION_COOKIE, ApiKeyAuth, console_session_principal, hash_key
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

    api_key: str = Field(min_length=1, max_length=512, description="an API key (any role)")


class SessionOut(BaseModel):
    principal: str
    role: str
    csrf_token: str = Field(description="send as X-CSRF-Token with every write")
    expires_at: Any


def create_app(settings: Settings, client: AsyncMongoClient | None = None) -> FastAPI:
    owned = client is None
    mongo: AsyncMongoClient = client if client is not None else AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    db: AsyncDatabase = mongo[settings.mongodb_database]
    auth = ApiKeyAuth(db, settings.admin_api_key)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await sessions.ensure_indexes(db)
        yield
        if owned:
            await mongo.close()

    app = create_api(title="ACS console", lifespan=lifespan, openapi_url=None,
                     description="The operator console: the page and its sign-in session.")
    add_health_routes(app, {"mongodb": mongo_check(mongo)})

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
        return {"principal": document["principal"], "role": document["role"],
                "csrf_token": sessions.csrf_token(settings.secret_key, token),
                "expires_at": document["expires_at"].isoformat()}

    @app.post("/console/api/session", status_code=201, response_model=SessionOut)
    async def sign_in(body: SignIn, request: Request, response: Response) -> dict[str, Any]:
        principal = await auth.lookup(body.api_key)
        if principal is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key")
        session = sessions.new_session(principal, hash_key(body.api_key), settings.secret_key,
                                       settings.console_session_hours)
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
