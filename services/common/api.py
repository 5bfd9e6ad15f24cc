"""What every northbound FastAPI app of the ACS has in common, made in one place.

- errors as RFC 9457 problems (services.common.errors);
- unknown query parameters refused with 400 on every route: a typo (``?stauts=failed``) must
  not widen a query silently, so each route accepts exactly the parameters it declares (in its
  signature, or in ``openapi_extra`` for those it reads itself); ``any_query`` exempts a route
  that forwards them (the router's proxy);
- the API-key security schemes and the problem shape in the OpenAPI document;
- a docs page (Swagger UI at ``/docs``, ReDoc at ``/redoc``) whose assets are served by the
  service itself from the ``fastapi-offline`` package: closed networks have no CDN.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import fastapi_offline
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
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


def create_api(*, title: str, description: str, version: str = "1", lifespan: Any = None,
               openapi_url: str | None = "/openapi.json", docs_openapi_url: str | None = None) -> FastAPI:
    """A FastAPI app with the shared error shape, strict query parameters and local docs.

    ``docs_openapi_url``: the document the docs page shows, when it is not the app's own (the
    router shows the merged one).
    """
    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan,
                  openapi_url=openapi_url, docs_url=None, redoc_url=None,
                  dependencies=[Depends(reject_unknown_query)])
    errors.install(app)
    shown = docs_openapi_url or openapi_url
    if shown is not None:
        add_docs(app, shown, title)
    if openapi_url is not None:
        _document(app)
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
    """Swagger UI at <prefix>/docs and ReDoc at <prefix>/redoc, with their assets served from here."""
    assets = prefix + ASSETS_URL
    app.mount(assets, StaticFiles(directory=ASSETS_DIR), name=f"docs-assets{prefix}")

    @app.get(f"{prefix}/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url, title=f"{title}: API", oauth2_redirect_url=None,
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon.png",
            # The validator badge would send the document to a public validator.
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True})

    @app.get(f"{prefix}/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=root + openapi_url, title=f"{title}: API",
                              redoc_js_url=f"{root}{assets}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{assets}/favicon.png", with_google_fonts=False)


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
