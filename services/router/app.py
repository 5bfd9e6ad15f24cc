"""The single northbound entry point of `acs up` and docker-compose (an Ingress in Kubernetes).

Each service serves its own part of ``/api/v1``; this proxy picks the service by path, in the
order of ``ROUTES`` (first match wins), and streams bodies both ways so a firmware upload of
hundreds of MB passes through without being held in memory.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from services.common.service import add_health_routes
from services.common.settings import Settings

# (path pattern, setting holding the upstream base URL). Kept in sync with deploy/ Ingress rules.
ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/api/v1/devices/[^/]+/tasks(/|$)"), "orchestrator_url"),
    (re.compile(r"^/api/v1/(tasks|jobs|policies|campaigns|apikeys)(/|$)"), "orchestrator_url"),
    (re.compile(r"^/api/v1/(devices|credentials)(/|$)"), "inventory_url"),
    (re.compile(r"^/api/v1/files(/|$)"), "fileserver_url"),
]
# Hop-by-hop headers (RFC 9110 7.6.1) are for one connection only and must not be forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "host", "content-length"}


def upstream_for(path: str, settings: Settings) -> str | None:
    for pattern, setting in ROUTES:
        if pattern.match(path):
            return str(getattr(settings, setting)).rstrip("/")
    return None


def create_app(settings: Settings) -> FastAPI:
    client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0),
                               limits=httpx.Limits(max_connections=500, max_keepalive_connections=100))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(title="ACS northbound API router", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    async def upstreams_answer() -> bool:
        for setting in ("orchestrator_url", "inventory_url", "fileserver_url"):
            response = await client.get(f"{getattr(settings, setting)}/healthz", timeout=2.0)
            if response.status_code != 200:
                return False
        return True

    add_health_routes(app, {"upstreams": upstreams_answer})

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
    async def proxy(request: Request, rest: str) -> Response:
        base = upstream_for(request.url.path, settings)
        if base is None:
            return JSONResponse({"detail": f"no service serves {request.url.path}"}, status_code=404)
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
            return JSONResponse({"detail": f"upstream unavailable: {type(exc).__name__}"},
                                status_code=503, headers={"Retry-After": "5"})
        response_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code,
                                 headers=response_headers, background=BackgroundTask(upstream.aclose))

    return app
