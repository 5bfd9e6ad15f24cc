"""The single northbound entry point of `acs up` and docker-compose (an Ingress in Kubernetes).

It also serves the operator console: ``/`` and ``/console/*`` go to the console service.

Each service serves its own part of ``/api/v1``; this proxy picks the service by path, in the
order of ``ROUTES`` (first match wins), and streams bodies both ways so a firmware upload of
hundreds of MB passes through without being held in memory.

It also serves the one API document: ``/api/v1/openapi.json`` merges the services' own
documents (services.router.openapi), shown by ``/api/v1/docs`` (Swagger UI) and ``/api/v1/redoc``
with assets served from here (``/docs`` and ``/redoc`` too, as on every service). Kubernetes has
no router: its Ingress sends those paths to the orchestrator, which serves the same document
(``add_api_document``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from services.common.api import add_docs, any_query, create_api
from services.common.errors import problem
from services.common.service import add_health_routes
from services.common.settings import Settings
from services.router.openapi import UPSTREAMS, merge_documents

OPENAPI_PATH = "/api/v1/openapi.json"
# (path pattern, setting holding the upstream base URL). Kept in sync with deploy/ Ingress rules.
ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/api/v1/devices/[^/]+/tasks(/|$)"), "orchestrator_url"),
    (re.compile(r"^/api/v1/devices/[^/]+/connection-request$"), "orchestrator_url"),
    (re.compile(r"^/api/v1/devices/[^/]+/(desired|variables)$"), "orchestrator_url"),
    (re.compile(r"^/api/v1/(tasks|jobs|policies|profiles|quirks|campaigns|apikeys|users|sessions|audit)(/|$)"),
     "orchestrator_url"),
    (re.compile(r"^/api/v1/stats/tasks$"), "orchestrator_url"),
    (re.compile(r"^/api/v1/stats/devices$"), "inventory_url"),
    (re.compile(r"^/api/v1/(devices|credentials)(/|$)"), "inventory_url"),
    (re.compile(r"^/api/v1/files(/|$)"), "fileserver_url"),
]
# Hop-by-hop headers (RFC 9110 7.6.1) are for one connection only and must not be forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "host", "content-length"}
# The router's own server writes these on every response; the upstream's copies would double them.
OWN_RESPONSE_HEADERS = {"date", "server"}


def upstream_for(path: str, settings: Settings) -> str | None:
    for pattern, setting in ROUTES:
        if pattern.match(path):
            return str(getattr(settings, setting)).rstrip("/")
    return None


def add_api_document(app: FastAPI, settings: Settings, client: httpx.AsyncClient) -> None:
    """The merged API document at /api/v1/openapi.json and its pages at /api/v1/docs and /api/v1/redoc.

    The document needs a read API key, as each service's own does: the caller's key goes with
    each service's document request, so every service checks it (a revoked key is refused by
    the services' own rules), and nothing is cached across callers.
    """

    def routed_there(path: str, service: str) -> bool:
        return upstream_for(path, settings) == str(getattr(settings, UPSTREAMS[service])).rstrip("/")

    @app.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi(request: Request) -> Response:
        """The services' documents merged into one; 503 while any of them does not answer."""
        credentials = {name: value for name, value in request.headers.items()
                       if name in ("authorization", "x-api-key")}
        if not credentials:
            return problem(401, "missing API key", request=request, headers={"WWW-Authenticate": "Bearer"})
        documents: dict[str, dict[str, Any]] = {}
        for service, setting in UPSTREAMS.items():
            url = f"{str(getattr(settings, setting)).rstrip('/')}/openapi.json"
            try:
                response = await client.get(url, headers=credentials, timeout=5.0)
            except httpx.HTTPError as exc:
                return problem(503, f"the {service} did not give its API document "
                                    f"({type(exc).__name__}); try again", request=request,
                               headers={"Retry-After": "5"})
            if response.status_code in (401, 403):
                headers = {"WWW-Authenticate": "Bearer"} if response.status_code == 401 else None
                return problem(response.status_code, "the API key was refused", request=request, headers=headers)
            try:
                response.raise_for_status()
                documents[service] = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                return problem(503, f"the {service} did not give its API document "
                                    f"({type(exc).__name__}); try again", request=request,
                               headers={"Retry-After": "5"})
        return JSONResponse(merge_documents(documents, routed_there))

    add_docs(app, OPENAPI_PATH, "ACS northbound API", prefix="/api/v1")


def no_cookie_jar() -> CookieJar:
    """A jar that keeps nothing: a proxy that stored the Set-Cookie it passes on (httpx clients keep
    cookies by default) would send one user's console session along with everybody's requests."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def create_app(settings: Settings) -> FastAPI:
    client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0), cookies=no_cookie_jar(),
                               limits=httpx.Limits(max_connections=500, max_keepalive_connections=100))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = create_api(title="ACS northbound API", lifespan=lifespan, openapi_url=None,
                     docs_openapi_url=OPENAPI_PATH, description="The entry point of the ACS's API.")

    async def upstreams_answer() -> bool:
        for setting in UPSTREAMS.values():
            response = await client.get(f"{getattr(settings, setting)}/healthz", timeout=2.0)
            if response.status_code != 200:
                return False
        return True

    add_health_routes(app, {"upstreams": upstreams_answer})
    add_api_document(app, settings, client)

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
                   include_in_schema=False)
    @any_query
    async def proxy(request: Request, rest: str) -> Response:
        base = upstream_for(request.url.path, settings)
        if base is None:
            return problem(404, f"no service serves {request.url.path}", request=request)
        return await forward(request, base)

    # The operator console (services/console): its page at /, its assets and session API below /console/.
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    @app.api_route("/console/{rest:path}", methods=["GET", "POST", "DELETE", "HEAD"], include_in_schema=False)
    @any_query
    async def console(request: Request, rest: str = "") -> Response:
        return await forward(request, str(settings.console_url).rstrip("/"))

    async def forward(request: Request, base: str) -> Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        headers.append(("x-forwarded-for", request.client.host if request.client else ""))
        # The path exactly as received: device ids are percent-encoded, and decoding them here
        # would make the service decode them twice.
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        target = base + raw_path.decode("latin-1") + (f"?{request.url.query}" if request.url.query else "")
        upstream_request = client.build_request(request.method, httpx.URL(target), headers=headers,
                                                content=request.stream())
        try:
            upstream = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            return problem(503, f"upstream unavailable: {type(exc).__name__}", request=request,
                           headers={"Retry-After": "5"})
        response_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in upstream.headers.multi_items()
                            if k.lower() not in HOP_BY_HOP and k.lower() not in OWN_RESPONSE_HEADERS]
        response = StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code,
                                     background=BackgroundTask(upstream.aclose))
        # Every upstream header as sent, repeated ones too (several Set-Cookie, say).
        response.raw_headers = response_headers
        return response

    return app
