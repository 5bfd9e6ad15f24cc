"""What every northbound FastAPI app of the ACS has in common, made in one place.

- errors as RFC 9457 problems (services.common.errors);
- unknown query parameters refused with 400 on every route: a typo (``?stauts=failed``) must
  not widen a query silently, so each route accepts exactly the parameters it declares (in its
  signature, or in ``openapi_extra`` for those it reads itself); ``any_query`` exempts a route
  that forwards them (the router's proxy);
- the API-key security schemes and the problem shape in the OpenAPI document;
- the OpenAPI document behind a read API key (``openapi_guard``), and a docs page (Swagger UI at
  ``/docs``, ReDoc at ``/redoc``) that asks for the key, with assets served by the service itself
  from the ``fastapi-offline`` package: closed networks have no CDN.
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import fastapi_offline
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from services.common import errors

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs/assets"
F = TypeVar("F", bound=Callable[..., Any])

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details (application/problem+json), the one error shape of the API.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "about:blank, or urn:acs:problem:invalid-request (422), "
                                                  "urn:acs:problem:malformed-body (400), "
                                                  "urn:acs:problem:unknown-query-parameter (400)"},
        "title": {"type": "string", "description": "the HTTP status phrase"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what is wrong, for a person"},
        "instance": {"type": "string", "description": "the request path"},
        "errors": {"type": "array", "description": "per field, for invalid input", "items": {
            "type": "object", "required": ["location", "message"],
            "properties": {"location": {"type": "string", "description": "e.g. body.task.name, query.limit"},
                           "message": {"type": "string"}, "type": {"type": "string"}}}},
    },
}


Guard = Callable[..., Awaitable[Any]]


def create_api(*, title: str, description: str, version: str = "1", lifespan: Any = None,
               openapi_url: str | None = "/openapi.json", docs_openapi_url: str | None = None,
               openapi_guard: Guard | None = None) -> FastAPI:
    """A FastAPI app with the shared error shape, strict query parameters and local docs.

    ``docs_openapi_url``: the document the docs page shows, when it is not the app's own (the
    router shows the merged one). ``openapi_guard``: a dependency (an API-key check) the app's
    own document requires; the docs pages are static shells that ask for the key and send it.
    """
    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan,
                  openapi_url=None if openapi_guard else openapi_url, docs_url=None, redoc_url=None,
                  dependencies=[Depends(reject_unknown_query)])
    errors.install(app)
    shown = docs_openapi_url or openapi_url
    if shown is not None:
        add_docs(app, shown, title)
    if openapi_url is not None:
        _document(app)
        if openapi_guard is not None:

            @app.get(openapi_url, include_in_schema=False, dependencies=[Depends(openapi_guard)])
            async def openapi_document() -> JSONResponse:
                return JSONResponse(app.openapi())

    return app


def any_query(endpoint: F) -> F:
    """Mark a route that accepts any query parameter (it forwards them)."""
    endpoint.acs_any_query = True  # type: ignore[attr-defined]
    return endpoint


async def reject_unknown_query(request: Request) -> None:
    if not request.query_params:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or getattr(route.endpoint, "acs_any_query", False):
        return
    allowed = _allowed_query(route)
    unknown = sorted({name for name in request.query_params if name not in allowed})
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise errors.Problem(400, f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
                                  f"{', '.join(map(repr, unknown))}; this route takes: {known}",
                             type_=errors.UNKNOWN_PARAMETER,
                             errors=[{"location": f"query.{name}", "message": "unknown query parameter",
                                      "type": "unknown_parameter"} for name in unknown])


def _allowed_query(route: APIRoute) -> frozenset[str]:
    cached: frozenset[str] | None = getattr(route, "acs_query_names", None)
    if cached is None:
        names: set[str] = set()
        pending = [route.dependant]
        while pending:
            dependant = pending.pop()
            names.update(field.alias for field in dependant.query_params)
            pending.extend(dependant.dependencies)
        extra = route.openapi_extra or {}
        names.update(p["name"] for p in extra.get("parameters", []) if p.get("in") == "query")
        cached = frozenset(names)
        route.acs_query_names = cached  # type: ignore[attr-defined]
    return cached


def add_docs(app: FastAPI, openapi_url: str, title: str, prefix: str = "") -> None:
    """Swagger UI at <prefix>/docs and ReDoc at <prefix>/redoc, with their assets served from here.

    The pages are static shells: the document they show needs a read API key, so each page asks
    for one, keeps it in the tab's sessionStorage (gone when the tab closes) and sends it as
    ``Authorization: Bearer`` with the document request (and, in Swagger UI, with every request
    tried from the page).
    """
    assets = prefix + ASSETS_URL
    app.mount(assets, StaticFiles(directory=ASSETS_DIR), name=f"docs-assets{prefix}")

    @app.get(f"{prefix}/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return HTMLResponse(_docs_shell(title, root + openapi_url, root + assets, "swagger"))

    @app.get(f"{prefix}/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return HTMLResponse(_docs_shell(title, root + openapi_url, root + assets, "redoc"))


_SHELL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}: API</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">{css}
<style>#acs-key{{font:14px sans-serif;margin:2em auto;max-width:40em}}#acs-key input{{width:28em}}</style>
</head><body>
<form id="acs-key" hidden><p>The API document needs an API key (any role).</p>
<label>API key <input id="acs-key-value" type="password" autocomplete="off" required></label>
<button type="submit">Show</button> <span id="acs-key-error"></span></form>
<div id="acs-doc"></div>
<script src="{script}"></script>
<script>
const spec = {spec};
const storageKey = "acs-api-key";
const form = document.getElementById("acs-key");
function ask(message) {{
  sessionStorage.removeItem(storageKey);
  document.getElementById("acs-key-error").textContent = message || "";
  form.hidden = false;
}}
function show(key) {{
  form.hidden = true;
  {show}
}}
form.addEventListener("submit", (event) => {{
  event.preventDefault();
  const key = document.getElementById("acs-key-value").value.trim();
  sessionStorage.setItem(storageKey, key);
  show(key);
}});
const saved = sessionStorage.getItem(storageKey);
if (saved) {{ show(saved); }} else {{ ask(); }}
</script></body></html>
"""

_SWAGGER_SHOW = """SwaggerUIBundle({
    url: spec, dom_id: "#acs-doc", validatorUrl: null,
    requestInterceptor: (request) => { request.headers["Authorization"] = "Bearer " + key; return request; },
    responseInterceptor: (response) => {
      if (response.url === spec && (response.status === 401 || response.status === 403)) {
        ask("That key was refused (" + response.status + ").");
      }
      return response;
    },
  });"""

_REDOC_SHOW = """fetch(spec, { headers: { "Authorization": "Bearer " + key } })
    .then((response) => {
      if (!response.ok) { throw new Error("That key was refused (" + response.status + ")."); }
      return response.json();
    })
    .then((document_) => Redoc.init(document_, {}, document.getElementById("acs-doc")))
    .catch((error) => ask(error.message));"""


def _docs_shell(title: str, spec_url: str, assets: str, kind: str) -> str:
    if kind == "swagger":
        css = f'\n<link rel="stylesheet" type="text/css" href="{assets}/swagger-ui.css">'
        script, show = f"{assets}/swagger-ui-bundle.js", _SWAGGER_SHOW
    else:
        css, script, show = "", f"{assets}/redoc.standalone.js", _REDOC_SHOW
    return _SHELL.format(title=html.escape(title), assets=assets, css=css, script=script,
                         spec=json.dumps(spec_url), show=show)


def _document(app: FastAPI) -> None:
    """Name the API-key schemes and the problem shape in the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems_documented(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def problems_documented(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with security schemes, and every error response as a problem."""
    components = schema.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    schema["security"] = [{"bearer": []}, {"apiKey": []}]
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.setdefault("400", {"description": "malformed body or unknown query parameter"})
            for code, response in responses.items():
                if code[:1] in "45":
                    response["content"] = {errors.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return schema
