"""The audit trail: every write through the API, who made it, from where, and how it ended.

:class:`AuditMiddleware` (an ASGI layer in front of every API service and the console) records
each request that is not a read (``POST``, ``PUT``, ``PATCH``, ``DELETE``) to ``/api/v1/`` or
``/console/api/`` (the console's sign-in and sign-out, so sign-ins and failed sign-ins are
recorded too): the principal (name, role, user, scope; none when the credentials were refused),
the client address (services.common.forwarding decides it), when, the method and path, the query
parameters, the JSON body with every secret replaced by ``<redacted>`` (services.common.redaction,
and the fields below), the HTTP status and the outcome (``ok`` below 400, ``refused`` for 401,
403 and 404, ``failed`` otherwise). Response bodies are never recorded (a created API key is in
one).

A write that changes a setting (a profile, a policy, CPE credentials, a user, an API key) also
notes the setting as it was and as it is (:func:`note_change`, called by the route): ``before``
and ``after``, with every secret hidden the same way (the user's hash, TOTP secret and steps and
the credentials' HA1s are never in them: the routes give their public views). ``before`` is null
for a creation, ``after`` for a deletion; a refused write has neither.

Each record goes to MongoDB ``audit`` (a TTL index deletes it after ``ACS_AUDIT_RETENTION_DAYS``)
and, where the service has a Kafka producer, to the topic ``acs.audit`` (key: the principal) for
SIEMs, in the background (a slow or missing topic does not delay the write's answer). A record
that cannot be stored or published is logged as an error; the request's answer is not changed
(the write happened).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.bus.events import Contract, new_id
from services.common import redaction
from services.common.apikeys import AUDIT_SLOT, SAFE_METHODS, Principal

log = logging.getLogger(__name__)

COLLECTION = "audit"
AUDITED_PREFIXES = ("/api/v1/", "/console/api/")
MAX_BODY_BYTES = 64 * 1024  # a bigger body is recorded by size only
# Fields secret whatever their value (beside redaction's password, api_key, key, secret ...).
SECRET_FIELDS = frozenset({"new_password", "current_password", "totp_code", "code", "csrf_token", "token",
                           "totp_secret", "cpe_password", "connection_request_password"})
MAX_PUBLISHING = 1000
DRAIN_SECONDS = 5.0
Publish = Callable[[dict[str, Any]], Awaitable[None]]
# The audit slot of the request being answered (the dict the middleware also puts in the ASGI
# scope), so that a route notes a change without taking the request. The dict is shared, not
# re-set: a route running in a copied context still writes into the same one.
_current_slot: ContextVar[dict[str, Any] | None] = ContextVar("acs_audit_slot", default=None)


def note_body(body: Any) -> None:
    """Record ``body`` (JSON-like) in place of the request's own, for a route whose body holds
    secrets the generic redaction cannot tell (e.g. variables a request itself declares secret)."""
    slot = _current_slot.get()
    if slot is not None:
        slot["body"] = body


def note_change(before: Any, after: Any) -> None:
    """Record, in the audit record of the current request, a setting as it was and as it is now
    (JSON-like; secrets are hidden when the record is made). None for "did not exist"."""
    slot = _current_slot.get()
    if slot is not None:
        slot["change"] = (before, after)


class AuditEvent(Contract):
    """One write through the API (topic acs.audit), as stored in MongoDB ``audit``."""

    id: str = Field(description="the record's id in GET /api/v1/audit")
    service: str = Field(description="the service that answered: orchestrator, inventory, fileserver, console")
    principal: str | None = Field(description="the key's or user's name; null when the credentials were refused")
    role: str | None = None
    user: str | None = Field(None, description="the account the key or session belongs to")
    scope: str | None = Field(None, description="the principal's scope (an inventory query), null for everything")
    address: str | None = Field(None, description="the client's address")
    method: str
    path: str
    query: dict[str, str] = Field(default_factory=dict)
    body: Any = Field(None, description="the JSON body, secrets redacted; null when none or not JSON")
    body_bytes: int = 0
    status: int = Field(description="the HTTP status of the answer")
    outcome: str = Field(description="ok (< 400), refused (401, 403, 404) or failed")
    before: Any = Field(None, description="a changed setting (profile, policy, CPE credentials, user, API key) "
                                          "as it was, secrets redacted; null for a creation or no setting")
    after: Any = Field(None, description="the setting as it is after the write, secrets redacted; null for a "
                                         "deletion or no setting")


def hide_secrets(data: Any) -> Any:
    """``data`` with the audit's secret fields and every redaction secret hidden."""
    if isinstance(data, Mapping):
        data = {k: (redaction.REDACTED if isinstance(k, str) and k.lower() in SECRET_FIELDS and v not in (None, "")
                    else hide_secrets(v)) for k, v in data.items()}
    elif isinstance(data, list):
        data = [hide_secrets(item) for item in data]
    return redaction.redact(data)


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    return "refused" if status in (401, 403, 404) else "failed"


def make_record(service: str, principal: Principal | None, address: str | None, method: str, path: str,
                query: list[tuple[str, str]], body: bytes, body_bytes: int, status: int,
                at: datetime | None = None, change: tuple[Any, Any] | None = None,
                body_noted: Any = None) -> AuditEvent:
    """The record of one request (pure); ``change``: the setting before and after (note_change);
    ``body_noted``: what the route recorded in place of the body (note_body)."""
    parsed: Any = None
    if body_noted is not None:
        parsed = _image(body_noted) if body_bytes <= MAX_BODY_BYTES else None
    elif body and body_bytes <= MAX_BODY_BYTES:
        try:
            parsed = hide_secrets(json.loads(body))
        except (ValueError, RecursionError):
            parsed = None
    return AuditEvent(id=new_id(), time=at or datetime.now(UTC), service=service,
                      principal=principal.name if principal else None, role=principal.role if principal else None,
                      user=principal.user if principal else None, scope=principal.scope if principal else None,
                      address=address, method=method, path=path,
                      query=hide_secrets(dict(query)), body=parsed, body_bytes=body_bytes, status=status,
                      outcome=outcome_of(status), before=_image(change[0] if change else None),
                      after=_image(change[1] if change else None))


def _image(document: Any) -> Any:
    """A setting as the audit keeps it: JSON-like (times as ISO text), every secret hidden."""
    if document is None:
        return None
    return hide_secrets(json.loads(json.dumps(document, default=_plain)))


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


class AuditTrail:
    """Stores (and publishes) records."""

    def __init__(self, db: AsyncDatabase, service: str, retention_days: float, publish: Publish | None = None) -> None:
        self.db = db
        self.service = service
        self.retention = timedelta(days=retention_days)
        self.publish = publish
        self._publishing: set[asyncio.Task[None]] = set()

    async def ensure_indexes(self) -> None:
        seconds = int(self.retention.total_seconds())
        try:
            await self.db[COLLECTION].create_index([("time", ASCENDING)], expireAfterSeconds=seconds, name="retention")
        except OperationFailure:
            # The retention setting changed: the index is updated in place.
            await self.db.command({"collMod": COLLECTION, "index": {"name": "retention",
                                                                     "expireAfterSeconds": seconds}})
        await self.db[COLLECTION].create_index([("principal", ASCENDING), ("time", DESCENDING)])

    async def record(self, event: AuditEvent) -> None:
        document = event.model_dump(mode="python")
        document["_id"] = document.pop("id")
        try:
            await self.db[COLLECTION].insert_one(document)
        except Exception as exc:  # noqa: BLE001 - the write happened: say so loudly, answer anyway
            log.error("audit record not stored", extra={"audit_path": event.path, "error": str(exc)})
        if self.publish is None:
            return
        # The topic is a copy of the stored record: published in the background, so that a slow or
        # missing topic never delays the answer of a write (it did by the publish timeout, 5 s per
        # write). Bounded: past MAX_PUBLISHING records in flight, a record is stored only, loudly.
        if len(self._publishing) >= MAX_PUBLISHING:
            log.error("audit record not published: too many in flight", extra={"audit_path": event.path})
            return
        task = asyncio.get_running_loop().create_task(self._publish(event.path, event.model_dump(mode="json")))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, path: str, record: dict[str, Any]) -> None:
        assert self.publish is not None
        try:
            await self.publish(record)
        except Exception as exc:  # noqa: BLE001 - stored already; the topic is a copy
            log.error("audit record not published", extra={"audit_path": path, "error": str(exc)})

    async def drain(self) -> None:
        """Wait (bounded) for the records still being published: called before the producer stops."""
        if self._publishing:
            await asyncio.wait(set(self._publishing), timeout=DRAIN_SECONDS)


def kafka_publisher(settings: Any, producer: Any) -> Publish:
    """Publish records on acs.audit with a started AIOKafkaProducer, key: the principal."""
    from services.bus.events import TOPIC_AUDIT
    from services.bus.kafka import topic_name

    topic = topic_name(settings, TOPIC_AUDIT)
    timeout = float(getattr(settings, "kafka_publish_timeout", 5.0))

    async def publish(record: dict[str, Any]) -> None:
        key = (record.get("principal") or "").encode()
        # Bounded: a broker that does not answer delays the answer of a write by this much at most.
        await asyncio.wait_for(producer.send_and_wait(topic, json.dumps(record, separators=(",", ":")).encode(),
                                                      key=key), timeout)

    return publish


class AuditMiddleware:
    """Records every write under AUDITED_PREFIXES (see the module's docstring)."""

    def __init__(self, app: ASGIApp, trail: AuditTrail) -> None:
        self.app = app
        self.trail = trail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS \
                or not str(scope.get("path", "")).startswith(AUDITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        slot: dict[str, Any] = {}
        scope[AUDIT_SLOT] = slot
        token = _current_slot.set(slot)
        body = bytearray()
        size = 0
        status_code = 500

        async def receiving() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                size += len(chunk)
                if len(body) <= MAX_BODY_BYTES:
                    body.extend(chunk[:MAX_BODY_BYTES + 1 - len(body)])
            return message

        async def sending(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        finally:
            _current_slot.reset(token)
            client = scope.get("client")
            query = [(k, v) for k, v in _query_pairs(scope)]
            principal = slot.get("principal")
            change = slot.get("change") if status_code < 400 else None
            await self.trail.record(make_record(
                self.trail.service, principal if isinstance(principal, Principal) else None,
                client[0] if client else None, str(scope["method"]), str(scope.get("path", "")), query,
                bytes(body), size, status_code, change=change, body_noted=slot.get("body")))


def _query_pairs(scope: Scope) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    raw = scope.get("query_string", b"")
    return parse_qsl(raw.decode("latin-1"), keep_blank_values=True) if raw else []


def install(app: Any, trail: AuditTrail) -> None:
    """Put the audit layer in front of a FastAPI app (outermost: it sees refused requests too)."""
    app.add_middleware(AuditMiddleware, trail=trail)


async def find(db: AsyncDatabase, *, principal: str | None = None, user: str | None = None,
               method: str | None = None, path_prefix: str | None = None, outcome: str | None = None,
               service: str | None = None, since: datetime | None = None, until: datetime | None = None,
               before_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Records newest first, by the filters given."""
    query: dict[str, Any] = {}
    for field, value in (("principal", principal), ("user", user), ("outcome", outcome), ("service", service)):
        if value is not None:
            query[field] = value
    if method is not None:
        query["method"] = method.upper()
    if path_prefix:
        import re

        query["path"] = {"$regex": "^" + re.escape(path_prefix)}
    window: dict[str, Any] = {}
    if since is not None:
        window["$gte"] = since
    if until is not None:
        window["$lt"] = until
    if window:
        query["time"] = window
    if before_id:
        last = await db[COLLECTION].find_one({"_id": before_id}, {"time": 1})
        if last is not None:
            query["$or"] = [{"time": {"$lt": last["time"]}}, {"time": last["time"], "_id": {"$lt": before_id}}]
    found = db[COLLECTION].find(query).sort([("time", DESCENDING), ("_id", DESCENDING)]).limit(limit)
    out = []
    async for document in found:
        document["id"] = document.pop("_id")
        out.append(document)
    return out
