"""One error shape for every northbound API: RFC 9457 problem details (``application/problem+json``).

Every FastAPI app of the ACS (orchestrator, inventory, fileserver, router) installs the handlers
here, so a client parses one shape whatever answered::

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "detail": "no task 'x'", "instance": "/api/v1/tasks/x"}

Validation problems add ``errors``: one ``{"location", "message", "type"}`` per bad field, the
location dotted from where it was (``body.task.name``, ``query.limit``). ``type`` is
``about:blank`` (the status says it all) except for the problems below, which a client may want
to tell apart. A route raises ``HTTPException(status, detail)`` as FastAPI has it; a detail
that is a list (of errors) or a dict (``message`` and ``errors``) becomes ``detail`` + ``errors``.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
# Problem types (RFC 9457 3.1.1); docs/orchestrator.md lists them.
INVALID = "urn:acs:problem:invalid-request"  # 422: well-formed, but a field is wrong
MALFORMED = "urn:acs:problem:malformed-body"  # 400: the body is not the JSON object expected
UNKNOWN_PARAMETER = "urn:acs:problem:unknown-query-parameter"  # 400: a query parameter the route lacks


# Pydantic's error types for a body that is no object at all (a list, a string, a number).
NOT_AN_OBJECT = frozenset({"model_attributes_type", "dict_type", "model_type"})


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


class Problem(Exception):
    """Raise to answer with a problem of a given ``type_`` (HTTPException gives about:blank)."""

    def __init__(self, status: int, detail: str, *, type_: str = "about:blank",
                 errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.type_, self.errors, self.headers = status, detail, type_, errors, headers


def problem(status: int, detail: str, *, request: Request | None = None, type_: str = "about:blank",
            title: str | None = None, errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None) -> ProblemResponse:
    body: dict[str, Any] = {"type": type_, "title": title or _phrase(status), "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
    if errors is not None:
        body["errors"] = errors
    return ProblemResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem: HTTP errors, bad input, unknown routes, crashes."""
    app.add_exception_handler(Problem, _problem)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _crash)


async def _problem(request: Request, exc: Problem) -> ProblemResponse:
    return problem(exc.status, exc.detail, request=request, type_=exc.type_, errors=exc.errors,
                   headers=exc.headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> ProblemResponse:
    detail, errors = _split(exc.detail, exc.status_code)
    headers = dict(exc.headers) if exc.headers else None  # WWW-Authenticate, Allow, Retry-After
    return problem(exc.status_code, detail, request=request, errors=errors, headers=headers)


async def _invalid(request: Request, exc: RequestValidationError) -> ProblemResponse:
    return validation_problem(request, list(exc.errors()))


def validation_problem(request: Request, raw: list[dict[str, Any]]) -> ProblemResponse:
    """The problem for FastAPI's validation errors (an app may reword them first)."""
    body_problem = _body_problem(request, raw)
    if body_problem is not None:
        status, detail = body_problem
        return problem(status, detail, request=request, type_=MALFORMED,
                       errors=[_field(e) for e in raw])
    errors = [_field(e) for e in raw]
    summary = errors[0]["message"] if len(errors) == 1 else f"{len(errors)} invalid fields"
    where = f" ({errors[0]['location']})" if len(errors) == 1 and errors[0]["location"] else ""
    return problem(422, f"{summary}{where}", request=request, type_=INVALID, errors=errors)


async def _crash(request: Request, exc: Exception) -> ProblemResponse:
    # The traceback goes to the log (and uvicorn logs it once more); the client learns nothing of it.
    log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "unexpected error; the service logged it", request=request)


def _body_problem(request: Request, errors: list[dict[str, Any]]) -> tuple[int, str] | None:
    """(status, detail) when the body as a whole is unusable, not one of its fields."""
    for error in errors:
        kind = error.get("type")
        if kind == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            return 400, f"the body is not valid JSON: {reason}"
        if tuple(error.get("loc") or ()) != ("body",):
            continue
        if kind == "missing":
            return 400, "this request needs a JSON body"
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        is_json = content_type == "application/json" or content_type.endswith("+json")
        if not is_json and isinstance(error.get("input"), str | bytes):
            # FastAPI parses JSON only when told so: curl -d sends application/x-www-form-urlencoded.
            return 400, ("the body must be JSON sent with Content-Type: application/json"
                         + (f", not {content_type}" if content_type else ""))
        if kind in NOT_AN_OBJECT:
            return 400, f"the body must be a JSON object, not {_json_kind(error.get('input'))}"
    return None


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


def _field(error: dict[str, Any]) -> dict[str, Any]:
    loc = [str(part) for part in error.get("loc") or ()]
    message = str(error.get("msg", "invalid"))
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return {"location": ".".join(loc), "message": message, "type": str(error.get("type", "invalid"))}


def _split(detail: Any, status: int) -> tuple[str, list[dict[str, Any]] | None]:
    if isinstance(detail, str):
        return detail, None
    if isinstance(detail, list):
        errors = [_entry(item) for item in detail]
        return (errors[0]["message"] if len(errors) == 1 else f"{len(errors)} problems"), errors
    if isinstance(detail, dict):
        errors = [_entry(item) for item in detail.get("errors") or []] or None
        return str(detail.get("message") or detail.get("detail") or _phrase(status)), errors
    return (_phrase(status) if detail is None else json.dumps(detail, default=str)), None


def _entry(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        location = item.get("location", item.get("field", ""))
        return {"location": str(location), "message": str(item.get("message", item.get("msg", item)))}
    return {"location": "", "message": str(item)}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
