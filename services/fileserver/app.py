"""The operator API for files: ``/api/v1/files`` on ACS_FILESERVER_PORT.

Upload is ``PUT /api/v1/files/{name}`` with the raw file as the request body, so that nothing
has to buffer a multipart form: the body streams into an S3 multipart upload while its SHA-256
and size are computed. Metadata travels in query parameters or ``X-File-*`` headers (query wins
when both are given). Keys with the read-only role list, describe and fetch; operator keys upload
and delete (services.common.apikeys).

Scopes (services.common.scopes): operator files (firmware, configurations to push) are global, a
catalogue every device may be given: a scoped principal lists, describes and fetches them. CPE
uploads belong to their device: a scoped principal sees those of the devices of its scope only,
and any other answers 404 as an unknown file; the download and upload attempts of a file are
listed for the devices of its scope only. Writes (upload, delete) need an unscoped operator: the
catalogue is shared by every scope.

The same catalog holds what CPEs uploaded for Upload RPCs (uploads.py), kind ``upload``, named
``<device id>/<command key>``. Their names contain ``/`` (URL-encoded as ``%2F`` in the path,
which reaches us decoded), hence a name parameter that matches ``/`` (routing.py) in every
route: the routes with a suffix (``/content``, ``/downloads``, ``/uploads``) come first so that
they win. An upload whose command
key were ``content`` would be ambiguous; the orchestrator's keys (``<task id>.<attempt>``) never
are.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from pymongo.errors import PyMongoError
from starlette.requests import ClientDisconnect

from services.common import audit, scopes
from services.common.api import create_api
from services.common.apikeys import Principal
from services.common.errors import problem
from services.common.service import add_health_routes, mongo_check
from services.fileserver.catalog import (
    FileMetadata,
    FileRecord,
    StoredFile,
    content_type_of,
    new_object_key,
    validate_file_name,
)
from services.fileserver.credentials import download_url
from services.fileserver.downloads import ObjectStreamResponse, plan_for
from services.fileserver.routing import NAME
from services.fileserver.runtime import FileServerRuntime
from services.fileserver.storage import ObjectMissing, StorageUnavailable, UploadStalled, UploadTooLarge

log = logging.getLogger(__name__)

API = "/api/v1/files"
# Each metadata field: (query parameter, header).
METADATA_SOURCES = {
    "file_type": ("file_type", "x-file-type"),
    "oui": ("oui", "x-file-oui"),
    "product_class": ("product_class", "x-file-product-class"),
    "version": ("version", "x-file-version"),
    "description": ("description", "x-file-description"),
}


class FileInfo(StoredFile):
    download_url: str


class FileList(BaseModel):
    files: list[FileInfo]
    # Pass as ``?cursor=`` to get the next page; None on the last page (as every list of the API).
    next_cursor: str | None


def _info(runtime: FileServerRuntime, record: FileRecord) -> FileInfo:
    values = record.model_dump(exclude={"object_key"})
    return FileInfo(**values, download_url=download_url(runtime.settings, record.name))


def _name(name: str) -> str:
    try:
        return validate_file_name(name)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


def _metadata(request: Request) -> FileMetadata:
    values: dict[str, str] = {}
    for field, (query_name, header_name) in METADATA_SOURCES.items():
        value = request.query_params.get(query_name)
        if value is None:
            value = request.headers.get(header_name)
        if value is not None:
            values[field] = value
    try:
        return FileMetadata.model_validate(values)
    except ValidationError as exc:
        problems = [{"location": ".".join(["metadata", *map(str, e["loc"])]), "message": e["msg"]}
                    for e in exc.errors()]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems) from None


def content_disposition(name: str) -> str:
    """``attachment`` with the file name, ``/`` of upload names made ``_`` (no client keeps it)."""
    flat = name.replace("/", "_")
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in flat)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(flat, safe='')}"


def create_app(runtime: FileServerRuntime) -> FastAPI:
    app = create_api(title="ACS fileserver", description=__doc__ or "",
                     openapi_guard=runtime.auth.require("read-only"))
    # Reads serve scoped principals within their scope (see the module's docstring).
    reader = Depends(runtime.auth.require("read-only", scoped=True))
    operator = Depends(runtime.auth.require("operator"))
    db = runtime.auth.db

    async def scope_ids(principal: Principal) -> list[str] | None:
        return None if principal.scope is None or db is None else await scopes.device_ids(db, principal)

    async def visible(principal: Principal, record: FileRecord | None) -> FileRecord | None:
        """``record``, or None when it is a CPE upload of a device outside the principal's scope."""
        if record is None or record.kind != "upload" or principal.scope is None or db is None:
            return record
        return record if record.device_id and await scopes.device_in_scope(db, principal, record.device_id) \
            else None
    # Every write in the audit trail (services.common.audit; the orchestrator makes its indexes).
    assert runtime.auth.db is not None
    runtime.audit_trail = audit.AuditTrail(runtime.auth.db, "fileserver", runtime.settings.audit_retention_days,
                                           audit.kafka_publisher(runtime.settings, runtime.producer)
                                           if runtime.producer is not None else None)
    audit.install(app, runtime.audit_trail)

    @app.exception_handler(StorageUnavailable)
    async def storage_unavailable(request: Request, exc: StorageUnavailable) -> Response:
        log.warning("S3 unavailable: %s", exc)
        return problem(503, "file storage unavailable, retry later", request=request, headers={"Retry-After": "10"})

    @app.exception_handler(PyMongoError)
    async def database_unavailable(request: Request, exc: PyMongoError) -> Response:
        log.warning("MongoDB unavailable: %s", type(exc).__name__)
        return problem(503, "database unavailable, retry later", request=request, headers={"Retry-After": "10"})

    @app.put(
        API + "/" + NAME, status_code=201, response_model=FileInfo,
        responses={200: {"model": FileInfo, "description": "An existing file was replaced"},
                   413: {"description": "Larger than the size limit"},
                   422: {"description": "Bad name or metadata, or the sha256 does not match"}},
        openapi_extra={
            "parameters": [{"name": query, "in": "query", "required": field == "file_type",
                            "schema": {"type": "string"}, "description": f"or header {header}"}
                           for field, (query, header) in METADATA_SOURCES.items()]
            + [{"name": "sha256", "in": "query", "required": False, "schema": {"type": "string"},
                "description": "expected SHA-256 (hex) of the body, or header X-File-Sha256; "
                               "a mismatch discards the upload"}],
            "requestBody": {"required": True,
                            "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                "format": "binary"}}}},
        },
    )
    async def upload(name: str, request: Request,
                     principal: Principal = operator) -> Response:
        """Upload or replace a file (raw body). CPEs downloading the old version finish it."""
        name = _name(name)
        metadata = _metadata(request)
        expected = (request.query_params.get("sha256") or request.headers.get("x-file-sha256") or "").lower()
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > runtime.max_file_bytes:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                                f"files are limited to {runtime.max_file_bytes} bytes")
        if not runtime.bucket_ready.is_set():
            raise StorageUnavailable("bucket not created yet")

        key = new_object_key()
        content_type = content_type_of(request.headers.get("content-type"))
        chunks: AsyncIterator[bytes] = request.stream()
        try:
            stored = await runtime.store.put_stream(
                key, chunks, content_type=content_type, max_bytes=runtime.max_file_bytes,
                # Lets someone looking at the bucket alone tell what an object is.
                metadata={"acs-file-name": quote(name, safe=""), "acs-file-type": metadata.file_type})
        except UploadTooLarge as exc:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from None
        except UploadStalled as exc:
            raise HTTPException(status.HTTP_408_REQUEST_TIMEOUT, str(exc)) from None
        except ClientDisconnect:
            log.info("upload of %s abandoned by the client", name)
            return Response(status_code=400)  # nobody is listening; keeps the log quiet

        if expected and expected != stored.sha256:
            await runtime.discard_now(key)
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"sha256 mismatch: the body hashes to {stored.sha256}")
        record = FileRecord(**metadata.model_dump(), name=name, size=stored.size, sha256=stored.sha256,
                            content_type=content_type, uploaded_at=datetime.now(UTC).replace(microsecond=0),
                            uploaded_by=principal.name, object_key=key)
        try:
            previous = await runtime.catalog.put(record)
        except PyMongoError:
            await runtime.discard_now(key)
            raise
        if previous is not None:
            await runtime.catalog.discard_object(previous.object_key, runtime.trash_delay)
        log.info("file %s uploaded", name, extra={"file_name": name, "size": stored.size,
                                                   "sha256": stored.sha256, "by": principal.name})
        info = _info(runtime, record)
        return JSONResponse(info.model_dump(mode="json"),
                            status_code=status.HTTP_200_OK if previous else status.HTTP_201_CREATED,
                            headers={"Location": f"{API}/{quote(name, safe='')}"})

    @app.get(API, response_model=FileList)
    async def list_files(
        principal: Principal = reader,
        file_type: str | None = None, oui: str | None = None, product_class: str | None = None,
        version: str | None = None,
        kind: Annotated[Literal["file", "upload"] | None,
                        Query(description="'file' (operator files) or 'upload' (CPE uploads); both if absent")] = None,
        device_id: Annotated[str | None, Query(description="CPE uploads of this device")] = None,
        command_key: Annotated[str | None, Query(description="the CPE upload of this Upload CommandKey")] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> FileList:
        """Files in name order, optionally filtered on metadata."""
        records = await runtime.catalog.list(file_type=file_type, oui=oui, product_class=product_class,
                                             version=version, kind=kind, device_id=device_id,
                                             command_key=command_key, after=cursor, limit=limit,
                                             upload_devices=await scope_ids(principal))
        next_cursor = records[-1].name if len(records) == limit else None
        return FileList(files=[_info(runtime, record) for record in records], next_cursor=next_cursor)

    # HEAD separately and out of the schema: one route for both methods would give the OpenAPI
    # document two operations with the same id.
    @app.head(API + "/" + NAME + "/content", include_in_schema=False)
    @app.get(
        API + "/" + NAME + "/content", response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes"},
                   206: {"description": "The requested byte range"}, 404: {"description": "No such file"}})
    async def content(name: str, request: Request, principal: Principal = reader) -> Response:
        """The bytes of a file, e.g. a configuration a CPE uploaded. Range and ETag as for CPEs."""
        record = await visible(principal, await runtime.catalog.get(name))
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        plan = plan_for(request, record)
        plan.headers["content-disposition"] = content_disposition(record.name)
        if request.method == "HEAD" or plan.byte_range is None:
            # HEAD, 304, 416, or an empty file: headers are the whole answer.
            response = Response(status_code=plan.status)
            response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in plan.headers.items()]
            return response
        try:
            stream = await runtime.store.open(record.object_key, plan.byte_range.start, plan.byte_range.length)
        except ObjectMissing:
            log.error("object %s of file %s is missing from the bucket", record.object_key, name)
            raise StorageUnavailable("object missing") from None

        def finished(outcome: str, sent: int, reason: str) -> None:
            if outcome != "completed":
                log.info("file content for %s not fully sent: %s", principal.name, reason,
                         extra={"file_name": name, "bytes_sent": sent})

        return ObjectStreamResponse(plan, stream, finished)

    @app.get(API + "/" + NAME + "/downloads")
    async def downloads(name: str, principal: Principal = reader,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """The latest download attempts of a file by CPEs, newest first."""
        records = await runtime.recorder.recent(name, limit, await scope_ids(principal))
        for record in records:
            record["event_id"] = record.pop("_id")
        return {"downloads": records}

    @app.get(API + "/" + NAME + "/uploads")
    async def uploads(name: str, principal: Principal = reader,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """The latest upload attempts by CPEs to this name, newest first, failed ones included."""
        records = await runtime.upload_recorder.recent(name, limit, await scope_ids(principal))
        for record in records:
            record["event_id"] = record.pop("_id")
        return {"uploads": records}

    @app.get(API + "/" + NAME, response_model=FileInfo)
    async def describe(name: str, principal: Principal = reader) -> FileInfo:
        record = await visible(principal, await runtime.catalog.get(name))
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        return _info(runtime, record)

    @app.delete(API + "/" + NAME, status_code=204)
    async def delete(name: str, principal: Principal = operator) -> Response:
        """Delete a file. Downloads already streaming it finish; new ones get 404."""
        record = await runtime.catalog.delete(name)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        await runtime.catalog.discard_object(record.object_key, runtime.trash_delay)
        log.info("file %s deleted", name, extra={"file_name": name, "by": principal.name})
        return Response(status_code=204)

    add_health_routes(app, {"mongodb": mongo_check(runtime.mongo), "s3": runtime.s3_ready,
                            "kafka": runtime.kafka_ready})
    return app
