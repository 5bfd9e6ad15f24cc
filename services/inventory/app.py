"""The inventory's northbound API: devices, queries, tags and per-device CPE credentials.

Roles: ``read-only`` reads devices; ``operator`` tags them; ``admin`` deletes devices and manages
credentials. Device reads, counts, figures, timelines, tags and deletion serve scoped principals
within their scope (services.common.scopes; 404 outside it); credentials are for unscoped admins.
Query syntax and examples: docs/inventory.md.

Deleting a device publishes ``DeviceDeleted`` on ``cwmp.inbound`` (key: the device id) before it
deletes the record: the orchestrator forgets the device when it gets there, and the inventory's own
consumer deletes the record again in order with the device's Informs, so that an Inform published
before the deletion cannot bring the record back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, Field
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ExecutionTimeout

from services.bus.events import TOPIC_INBOUND, DeviceDeleted, encode
from services.bus.kafka import topic_name
from services.common import audit, scopes
from services.common.api import create_api
from services.common.apikeys import ApiKeyAuth, Principal
from services.common.errors import problem
from services.common.service import ReadinessCheck, add_health_routes, mongo_check
from services.common.settings import Settings
from services.inventory import credentials, stats, store, timeline
from services.inventory.metrics import QUERY_SECONDS
from services.inventory.query import (
    FULL,
    SUMMARY,
    QueryError,
    cursor_filter,
    encode_cursor,
    parse_fields,
    parse_query,
    parse_sort,
)
from services.inventory.views import render_device

log = logging.getLogger(__name__)

# A query on an unindexed parameter scans the collection; bound it rather than let it pile up.
QUERY_TIMEOUT_MS = 15_000
MAX_IMPORT_BYTES = 20 * 1024 * 1024
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,63}")

QueryParam = Annotated[str | None, Query(
    description='JSON filter, e.g. {"Device.DeviceInfo.SoftwareVersion": {"$prefix": "2."}, '
                '"tags": "lab"}. Operators: $eq $ne $gt $gte $lt $lte $in $exists $prefix; '
                "combine with $and/$or. See docs/inventory.md.")]
FieldsParam = Annotated[str | None, Query(
    description="Comma-separated: device fields, parameter names, subtrees ending in '.', or "
                "'parameters' for the whole tree.")]
DeviceId = Annotated[str, Path(description="Device id: OUI-ProductClass-SerialNumber, percent-encoded")]


# --- documentation models (responses are built directly for speed; these describe them) ----------


class Parameter(BaseModel):
    value: str | int | bool | None = Field(None, description="Typed by xsi type: integers as numbers, "
                                           "booleans as true/false, the rest as text")
    type: str | None = Field(None, description="xsi type, e.g. xsd:string")
    writable: bool | None = Field(None, description="From GetParameterNames, when known")
    timestamp: datetime | None = Field(None, description="When this value was last read")
    object: bool | None = Field(None, description="True for an object (name ending in '.')")
    applied_after_reboot: bool | None = Field(None, description="True when the value was set by the ACS and "
                                              "the CPE answered Status 1: it takes effect at the device's "
                                              "next boot (cleared by that boot or by a read)")


class Device(BaseModel):
    id: str
    oui: str | None = None
    product_class: str | None = None
    serial_number: str | None = None
    manufacturer: str | None = None
    software_version: str | None = None
    tags: list[str] | None = None
    first_seen: datetime | None = None
    last_inform: datetime | None = None
    last_boot: datetime | None = None
    last_bootstrap: datetime | None = None
    silent_since: datetime | None = Field(None, description="Set while the device is silent")
    inform_interval: int | None = None
    connection_request_url: str | None = None
    remote_address: str | None = None
    reboot_pending: list[str] | None = Field(None, description="Parameters (and objects) set with Status 1 "
                                             "that wait for the device's next boot; null when none")
    cpe_credentials: bool | None = Field(None, description="Per-device CPE credentials are stored "
                                         "(single-device reads without ?fields only)")
    parameters: dict[str, Parameter] | None = None


class DeviceList(BaseModel):
    devices: list[Device]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null at the end")
    count: int | None = Field(None, description="All matching devices, when ?count=true")


class Count(BaseModel):
    count: int


class Tags(BaseModel):
    id: str
    tags: list[str]


class ImportResult(BaseModel):
    imported: int


class CredentialInfo(BaseModel):
    username: str
    device_id: str | None
    realm: str
    updated_at: datetime
    source: Literal["import", "bootstrap"] = Field(
        "import", description="import: through this API; bootstrap: set on the device by the ACS")
    state: Literal["active", "pending", "active, new pending"] = Field(
        "active", description="pending: the ACS is setting them on the device, the shared pair still "
                              "works; active: only these are accepted for the device")


class CredentialList(BaseModel):
    credentials: list[CredentialInfo]
    next_cursor: str | None


def create_app(settings: Settings, client: AsyncMongoClient | None = None,
               checks: dict[str, ReadinessCheck] | None = None,
               producer: AIOKafkaProducer | None = None) -> FastAPI:
    """The API app. Without ``client`` it opens (and closes) its own MongoDB client. ``producer``
    (started by the caller) publishes device deletions; without it DELETE of a device answers 503."""
    owned = client is None
    mongo: AsyncMongoClient = client if client is not None else AsyncMongoClient(
        settings.mongodb_url, tz_aware=True)
    db: AsyncDatabase = mongo[settings.mongodb_database]
    auth = ApiKeyAuth(db, settings.admin_api_key)
    admin = [Depends(auth.require("admin"))]
    # Routes that limit their answer to the principal's scope (services.common.scopes): devices
    # outside it are not found.
    as_scoped_reader = Depends(auth.require("read-only", scoped=True))
    as_scoped_operator = Depends(auth.require("operator", scoped=True))
    as_scoped_admin = Depends(auth.require("admin", scoped=True))
    trail = audit.AuditTrail(db, "inventory", settings.audit_retention_days,
                             audit.kafka_publisher(settings, producer) if producer is not None else None)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await trail.ensure_indexes()
        yield
        await trail.drain()
        if owned:
            await mongo.close()

    app = create_api(title="ACS inventory", lifespan=lifespan,
                     description="Devices, device queries, tags and per-device CPE credentials.",
                     openapi_guard=auth.require("read-only"))
    add_health_routes(app, {"mongodb": mongo_check(mongo), **(checks or {})})
    audit.install(app, trail)

    @app.exception_handler(QueryError)
    async def bad_query(request: Request, exc: QueryError) -> Response:
        return problem(status.HTTP_400_BAD_REQUEST, str(exc), request=request)

    @app.exception_handler(ExecutionTimeout)
    async def too_slow(request: Request, __: ExecutionTimeout) -> Response:
        return problem(status.HTTP_503_SERVICE_UNAVAILABLE,
                       f"the query ran longer than {QUERY_TIMEOUT_MS // 1000} s; add a condition on an indexed "
                       "field (serial_number, oui, product_class, software_version, last_inform, first_seen, "
                       "tags)", request=request)

    @app.get("/api/v1/devices", summary="Query devices",
             responses={200: {"model": DeviceList},
                        400: {"description": "Invalid q, fields, sort or cursor"}})
    async def list_devices(
        q: QueryParam = None,
        fields: FieldsParam = None,
        sort: Annotated[str | None, Query(description="id (default), serial_number, software_version, "
                                          "last_inform or first_seen; '-' prefix for descending")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
        count: Annotated[bool, Query(description="Also count all matching devices")] = False,
        principal: Principal = as_scoped_reader,
    ) -> Response:
        started = time.perf_counter()
        query = scopes.within(principal, parse_query(q))
        projection = parse_fields(fields, SUMMARY)
        order = parse_sort(sort)
        page_filter = _and(query, cursor_filter(order, cursor))
        found = store.devices(db).find(page_filter, projection.mongo(order.path), limit=limit + 1,
                                       max_time_ms=QUERY_TIMEOUT_MS).sort(order.mongo())
        documents = [document async for document in found]
        more = len(documents) > limit
        documents = documents[:limit]
        body: dict[str, Any] = {
            "devices": [render_device(document, projection) for document in documents],
            "next_cursor": encode_cursor(order, documents[-1]) if more else None,
        }
        if count:
            body["count"] = await store.devices(db).count_documents(query, maxTimeMS=QUERY_TIMEOUT_MS)
        QUERY_SECONDS.labels("list").observe(time.perf_counter() - started)
        return _json(body)

    @app.get("/api/v1/devices/count", summary="Count devices matching a query", response_model=Count)
    async def count_devices(q: QueryParam = None, principal: Principal = as_scoped_reader) -> Count:
        started = time.perf_counter()
        total = await store.devices(db).count_documents(scopes.within(principal, parse_query(q)),
                                                        maxTimeMS=QUERY_TIMEOUT_MS)
        QUERY_SECONDS.labels("count").observe(time.perf_counter() - started)
        return Count(count=total)

    stats.add_routes(app, db, as_scoped_reader)
    timeline.add_routes(app, db, as_scoped_reader)

    @app.get("/api/v1/devices/{device_id}", summary="Read one device",
             responses={200: {"model": Device}, 404: {"description": "Unknown device"}})
    async def get_device(device_id: DeviceId, fields: FieldsParam = None,
                         principal: Principal = as_scoped_reader) -> Response:
        projection = parse_fields(fields, FULL)
        if principal.scope is None:
            document = await store.find_device(db, device_id, projection.mongo())
        else:
            document = await store.devices(db).find_one(scopes.within(principal, {"_id": device_id}),
                                                        projection.mongo())
        if document is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
        device = render_device(document, projection)
        if fields is None:
            # One more query, so only for the whole device: callers asking for a few fields
            # (the orchestrator reads tags on the Inform path) do not pay for it.
            device["cpe_credentials"] = await credentials.has_credentials(db, device_id)
        return _json(device)

    @app.delete("/api/v1/devices/{device_id}", summary="Forget a device everywhere",
                status_code=status.HTTP_204_NO_CONTENT,
                description="Deletes the inventory record at once; the orchestrator then forgets the "
                            "device (its state, sessions and open tasks, which are cancelled) in order "
                            "with the device's messages. The device's next Inform is a first contact: "
                            "bootstrap provisioning and discovery run again. Imported CPE credentials "
                            "stay (so that the device can still authenticate) unless `credentials=true`.",
                responses={404: {"description": "Unknown device"},
                           503: {"description": "Message bus unavailable: the record is kept, retry"}})
    async def delete_device(
        device_id: DeviceId,
        delete_credentials: Annotated[bool, Query(alias="credentials", description=(
            "Also delete the device's imported CPE credentials (username = device id, or imported "
            "with this device_id): the device can then no longer authenticate"))] = False,
        # A default, not an Annotated alias: this module's annotations are strings, which FastAPI
        # resolves in the module's globals, where a per-app alias does not exist.
        principal: Principal = as_scoped_admin,
    ) -> Response:
        # A scoped admin deletes devices of its scope only; any other is not found.
        if await store.devices(db).find_one(scopes.within(principal, {"_id": device_id}), {"_id": 1}) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
        if producer is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "this inventory instance has no message "
                                                                      "bus to announce deletions on")
        # Announced first: once the broker has it, the deletion happens everywhere (the consumers
        # retry until it is applied).
        message = DeviceDeleted(device_id=device_id, deleted_by=principal.name)
        try:
            await asyncio.wait_for(producer.send_and_wait(topic_name(settings, TOPIC_INBOUND), encode(message),
                                                          key=device_id.encode()), settings.kafka_publish_timeout)
        except (KafkaError, TimeoutError) as exc:
            log.warning("device deletion not acknowledged by the bus; record kept", extra={
                "device_id": device_id, "error": type(exc).__name__})
            # Unacknowledged is not unsent: the consumers may still get it and delete. Either way
            # the record is kept for now and a retry is safe.
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the message bus did not acknowledge "
                                "the deletion; the record is kept, try again",
                                headers={"Retry-After": "5"}) from None
        # At once too, so that a read right after this answer gets 404; the consumer deletes again
        # in order, after any Inform that was already on its way.
        await store.delete_device(db, device_id)
        removed = await credentials.delete_device_credentials(db, device_id) if delete_credentials else 0
        log.info("device deleted", extra={"device_id": device_id, "by": principal.name,
                                          "credentials_deleted": removed})
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    async def reachable(principal: Principal, device_id: str) -> None:
        if not await scopes.device_in_scope(db, principal, device_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")

    @app.post("/api/v1/devices/{device_id}/tags/{tag}", summary="Tag a device",
              response_model=Tags, responses={404: {"description": "Unknown device"}})
    async def tag_device(device_id: DeviceId, tag: str, principal: Principal = as_scoped_operator) -> Tags:
        await reachable(principal, device_id)
        tags = await store.add_tag(db, device_id, _tag(tag))
        if tags is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
        return Tags(id=device_id, tags=tags)

    @app.delete("/api/v1/devices/{device_id}/tags/{tag}", summary="Untag a device",
                response_model=Tags, responses={404: {"description": "Unknown device"}})
    async def untag_device(device_id: DeviceId, tag: str, principal: Principal = as_scoped_operator) -> Tags:
        await reachable(principal, device_id)
        tags = await store.remove_tag(db, device_id, _tag(tag))
        if tags is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
        return Tags(id=device_id, tags=tags)

    @app.post("/api/v1/credentials", summary="Import per-device CPE credentials (JSON or CSV)",
              dependencies=admin, response_model=ImportResult,
              description="Body: JSON `[{\"device_id\" or \"username\", \"password\"}]`, or CSV "
                          "(Content-Type text/csv) with a header naming password and device_id or "
                          "username. Only Digest HA1 values (MD5 and SHA-256, realm ACS_CPE_REALM) are "
                          "stored. Nothing is imported if any row is invalid.")
    async def import_credentials(request: Request) -> ImportResult:
        raw = await _body(request)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in ("text/csv", "application/csv"):
            try:
                rows, errors = credentials.rows_from_csv(raw.decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise HTTPException(status.HTTP_400_BAD_REQUEST, f"unreadable CSV: {exc}") from None
        elif content_type in ("application/json", ""):
            try:
                rows, errors = credentials.rows_from_json(json.loads(raw))
            except ValueError as exc:
                raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body is not valid JSON: {exc}") from None
        else:
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "send application/json or text/csv")
        if errors:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, {
                "message": f"{len(errors)} invalid row(s); nothing imported",
                "errors": [{"location": f"row {e.row}", "message": e.error} for e in errors[:100]]})
        if not rows:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "no credentials in the body")
        # The audit keeps who had credentials before and after (never a password or an HA1).
        usernames = sorted({row.username for row in rows})[:1000]
        before = await credentials.described(db, usernames)
        imported = await credentials.import_rows(db, rows, settings.cpe_realm)
        audit.note_change(before or None, await credentials.described(db, usernames))
        return ImportResult(imported=imported)

    @app.get("/api/v1/credentials", summary="List which devices have CPE credentials (never the secrets)",
             dependencies=admin, response_model=CredentialList)
    async def list_credentials(
        device_id: Annotated[str | None, Query(description="Only this device's credentials")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> CredentialList:
        documents = await credentials.list_credentials(db, cursor, limit + 1, device_id)
        more = len(documents) > limit
        documents = documents[:limit]
        return CredentialList(
            credentials=[CredentialInfo(username=d["_id"], device_id=d.get("device_id"), realm=d["realm"],
                                        updated_at=d["updated_at"], source=d["source"], state=d["state"])
                         for d in documents],
            next_cursor=documents[-1]["_id"] if more else None)

    @app.delete("/api/v1/credentials/{username}", summary="Delete a CPE's credentials", dependencies=admin,
                status_code=status.HTTP_204_NO_CONTENT, responses={404: {"description": "Unknown username"}})
    async def delete_credentials(username: str) -> Response:
        before = await credentials.described(db, [username])
        if not await credentials.delete_credentials(db, username):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no credentials for {username!r}")
        audit.note_change(before[0] if before else None, None)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return app


def _and(*filters: dict[str, Any]) -> dict[str, Any]:
    present = [f for f in filters if f]
    if len(present) <= 1:
        return present[0] if present else {}
    return {"$and": present}


def _tag(tag: str) -> str:
    if not TAG.fullmatch(tag):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "a tag is 1-64 characters: letters, digits and "
                                                         "_ . : @ + - (not first)")
    return tag


async def _body(request: Request) -> bytes:
    """The request body, refused past MAX_IMPORT_BYTES without buffering more than that."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_IMPORT_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {MAX_IMPORT_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_IMPORT_BYTES:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {MAX_IMPORT_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str),
                    media_type="application/json")
