"""The orchestrator's northbound API under /api/v1: tasks, bulk jobs, policies, API keys.

Roles: read-only reads; operator creates, cancels and retries tasks and jobs; admin manages
policies and API keys. A task may be queued for a device never seen yet (pre-provisioning): it
runs in the device's first session, after bootstrap provisioning.
"""

# No "from __future__ import annotations": FastAPI must resolve the role aliases (Reader, ...)
# defined inside create_app, which string annotations would hide from it.
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError

from services.bus.events import new_id, utcnow
from services.common.apikeys import NameTaken, Principal
from services.common.service import add_health_routes, mongo_check
from services.fileserver.credentials import download_url
from services.orchestrator import clients, specs
from services.orchestrator import tasks as T
from services.orchestrator.apimodels import (
    ApiKeyIn,
    ApiKeyList,
    ApiKeyOut,
    ConnectionRequestOut,
    JobIn,
    JobOut,
    PolicyIn,
    PolicyList,
    PolicyOut,
    TaskCreated,
    TaskList,
    TaskOut,
)
from services.orchestrator.policies import Policy, PolicyTask
from services.orchestrator.runtime import OrchestratorRuntime
from services.orchestrator.store import CursorError
from services.orchestrator.tasks import Task, TaskStatus

log = logging.getLogger(__name__)

DeviceId = Annotated[str, Path(min_length=1, max_length=256,
                               description="OUI-ProductClass-SerialNumber, percent-encoded (as in the inventory)")]
WRITE_ATTEMPTS = 5
JOB_PAGE_SIZE = 500


def create_app(runtime: OrchestratorRuntime, *, manage_runtime: bool = True) -> FastAPI:
    settings, store, auth = runtime.settings, runtime.store, runtime.auth
    Reader = Annotated[Principal, Depends(auth.require("read-only"))]
    Operator = Annotated[Principal, Depends(auth.require("operator"))]
    Admin = Annotated[Principal, Depends(auth.require("admin"))]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            await runtime.start()
        try:
            yield
        finally:
            if manage_runtime:
                await runtime.close()

    app = FastAPI(title="ACS orchestrator", version="1", lifespan=lifespan,
                  description="Tasks on devices, bulk jobs, provisioning policies and API keys. "
                              "See docs/orchestrator.md.")
    add_health_routes(app, {"mongodb": mongo_check(runtime.mongo), "kafka": runtime.kafka_ready})
    _document_api_keys(app)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": [_explain(e) for e in exc.errors()]},
                            status_code=422)

    async def resolve(spec: BaseModel) -> tuple[str, dict[str, Any]]:
        """The task's stored args; a download's file is looked up now, so the task is ready to send."""
        args = specs.task_args(spec)
        if isinstance(spec, specs.Download):
            try:
                facts = await clients.file_facts(runtime.http, settings, spec.file_name)
            except clients.UpstreamError as exc:
                raise HTTPException(exc.status, exc.message) from None
            args.update(file_type=spec.file_type or facts.file_type, file_size=facts.size,
                        url=download_url(settings, spec.file_name), version=facts.version)
        return str(getattr(spec, "name")), args  # noqa: B009 - every spec has a literal name

    def new_task(device_id: str, name: str, args: dict[str, Any], spec: Any, principal: Principal,
                 origin: str = "api", job_id: str | None = None) -> Task:
        now = utcnow()
        return Task(id=new_id(), device_id=device_id, name=name, args=args, origin=origin, job_id=job_id,
                    created_by=principal.name, created_at=now, updated_at=now, expires_at=spec.expiry(now),
                    max_attempts=runtime.engine.config.max_attempts)

    # --- tasks -----------------------------------------------------------------------------

    @app.post("/api/v1/devices/{device_id}/tasks", status_code=201, response_model=TaskCreated,
              summary="Queue a task for a device", tags=["tasks"],
              responses={401: {"description": "missing or unknown API key"},
                         403: {"description": "needs the operator role"},
                         422: {"description": "invalid task (unknown name, bad arguments, unknown file)"}})
    async def create_task(principal: Operator, device_id: DeviceId, spec: specs.TaskSpec,
                          connection_request: Annotated[bool, Query(
                              description="wake the device now instead of waiting for its next Inform")] = False,
                          ) -> dict[str, Any]:
        name, args = await resolve(spec)
        task = new_task(device_id, name, args, spec, principal)
        await store.insert_tasks([task])
        log.info("task queued", extra={"device_id": device_id, "task_id": task.id, "task": name,
                                       "by": principal.name})
        body: dict[str, Any] = task.public()
        if connection_request:
            result = await runtime.requester.wake(await store.get_device(device_id))
            body["connection_request"] = ConnectionRequestOut(
                outcome=result.outcome, transport=result.transport, detail=result.detail,
                http_status=result.http_status).model_dump()
        return body

    @app.get("/api/v1/devices/{device_id}/tasks", response_model=TaskList, tags=["tasks"],
             summary="A device's task history, newest first")
    async def device_tasks(_: Reader, device_id: DeviceId,
                           status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
                           name: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                           cursor: str | None = None) -> dict[str, Any]:
        return await _list(store, device_id=device_id, status=status_, name=name, limit=limit, cursor=cursor)

    @app.get("/api/v1/tasks", response_model=TaskList, tags=["tasks"], summary="Find tasks, newest first")
    async def list_tasks(_: Reader, device_id: str | None = None,
                         status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
                         name: str | None = None, job_id: str | None = None,
                         limit: Annotated[int, Query(ge=1, le=500)] = 50,
                         cursor: str | None = None) -> dict[str, Any]:
        return await _list(store, device_id=device_id, status=status_, name=name, job_id=job_id, limit=limit,
                           cursor=cursor)

    @app.get("/api/v1/tasks/{task_id}", response_model=TaskOut, tags=["tasks"], summary="Read a task",
             responses={404: {"description": "unknown task"}})
    async def get_task(task_id: str, _: Reader) -> dict[str, Any]:
        return (await _task_or_404(store, task_id)).public()

    @app.post("/api/v1/tasks/{task_id}/cancel", response_model=TaskOut, tags=["tasks"],
              summary="Cancel a task that has not ended",
              responses={404: {"description": "unknown task"}, 409: {"description": "the task already ended"}})
    async def cancel_task(task_id: str, principal: Operator) -> dict[str, Any]:
        return await _change(store, task_id, lambda t: T.cancel(t, utcnow(), f"cancelled by {principal.name}"))

    @app.post("/api/v1/tasks/{task_id}/retry", response_model=TaskOut, tags=["tasks"],
              summary="Queue a failed, cancelled or expired task again, attempts reset",
              responses={404: {"description": "unknown task"}, 409: {"description": "the task is not ended"}})
    async def retry_task(task_id: str, _: Operator) -> dict[str, Any]:
        return await _change(store, task_id, lambda t: T.retry(t, utcnow()))

    # --- bulk jobs -------------------------------------------------------------------------

    @app.post("/api/v1/jobs", status_code=202, response_model=JobOut, tags=["jobs"],
              summary="The same task for every device matching an inventory query",
              responses={422: {"description": "invalid task or query"}, 503: {"description": "inventory down"}})
    async def create_job(body: JobIn, request: Request, principal: Operator) -> dict[str, Any]:
        name, args = await resolve(body.task)
        # The inventory sees the caller's own key, so a job cannot select what its author cannot read.
        key = _key_of(request) or settings.admin_api_key
        job_id = new_id()
        pages = clients.device_pages(runtime.http, settings, body.query, key, JOB_PAGE_SIZE)
        try:
            first = await anext(pages, [])
        except clients.UpstreamError as exc:
            raise HTTPException(exc.status, exc.message) from None
        job = {"_id": job_id, "query": body.query, "task": {"name": name, "args": args}, "status": "resolving",
               "device_count": 0, "created_at": utcnow(), "created_by": principal.name, "reason": "",
               "connection_request": body.connection_request}
        await store.insert_job(job)

        async def add(device_ids: list[str]) -> None:
            batch = [new_task(d, name, args, body.task, principal, origin=f"job:{job_id}", job_id=job_id)
                     for d in device_ids]
            await store.insert_tasks(batch)
            await store.update_job(job_id, {}, add_devices=len(batch))
            if body.connection_request:
                for device_id in device_ids:
                    await runtime.requester.wake(await store.get_device(device_id))

        async def rest() -> None:
            try:
                async for page in pages:
                    await add(page)
                await store.update_job(job_id, {"status": "running"})
            except clients.UpstreamError as exc:
                await store.update_job(job_id, {"status": "failed", "reason": exc.message})

        await add(first)
        runtime.spawn(rest())
        return await _job_view(store, job_id)

    @app.get("/api/v1/jobs/{job_id}", response_model=JobOut, tags=["jobs"], summary="A job and its progress",
             responses={404: {"description": "unknown job"}})
    async def get_job(job_id: str, _: Reader) -> dict[str, Any]:
        return await _job_view(store, job_id)

    # --- policies --------------------------------------------------------------------------

    @app.post("/api/v1/policies", status_code=201, response_model=PolicyOut, tags=["policies"],
              summary="Create a provisioning policy", responses={409: {"description": "name taken"}})
    async def create_policy(body: PolicyIn, principal: Admin) -> dict[str, Any]:
        resolved = [PolicyTask(name=name, args=args) for name, args in [await resolve(t) for t in body.tasks]]
        policy = Policy(id=new_id(), name=body.name, description=body.description, enabled=body.enabled,
                        priority=body.priority, events=body.events, match=body.match, tasks=resolved,
                        created_at=utcnow(), created_by=principal.name)
        try:
            await store.insert_policy(policy)
        except DuplicateKeyError:
            raise HTTPException(status.HTTP_409_CONFLICT, f"a policy named {body.name!r} exists") from None
        runtime.policies.invalidate()
        return policy.model_dump()

    @app.get("/api/v1/policies", response_model=PolicyList, tags=["policies"], summary="List policies")
    async def list_policies(_: Reader) -> dict[str, Any]:
        return {"policies": [p.model_dump() for p in await store.list_policies()]}

    @app.get("/api/v1/policies/{policy_id}", response_model=PolicyOut, tags=["policies"],
             responses={404: {"description": "unknown policy"}})
    async def get_policy(policy_id: str, _: Reader) -> dict[str, Any]:
        policy = await store.get_policy(policy_id)
        if policy is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no policy {policy_id!r}")
        return policy.model_dump()

    @app.delete("/api/v1/policies/{policy_id}", status_code=204, tags=["policies"],
                responses={404: {"description": "unknown policy"}})
    async def delete_policy(policy_id: str, _: Admin) -> Response:
        if not await store.delete_policy(policy_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no policy {policy_id!r}")
        runtime.policies.invalidate()
        return Response(status_code=204)

    # --- API keys --------------------------------------------------------------------------

    @app.post("/api/v1/apikeys", status_code=201, response_model=ApiKeyOut, tags=["apikeys"],
              summary="Create an API key (shown once)",
              responses={409: {"description": "a key with this name exists (a retry of a create whose answer "
                                              "was lost: revoke the name, then create it again)"}})
    async def create_key(body: ApiKeyIn, principal: Admin) -> dict[str, Any]:
        try:
            key = await auth.create(body.name, body.role)
        except NameTaken:
            raise HTTPException(status.HTTP_409_CONFLICT, f"an API key named {body.name!r} exists; revoke it "
                                                          "first or choose another name") from None
        log.info("API key created", extra={"key_name": body.name, "role": body.role, "by": principal.name})
        return {"name": body.name, "role": body.role, "key": key}

    @app.get("/api/v1/apikeys", response_model=ApiKeyList, tags=["apikeys"],
             summary="The stored API keys: names, roles, when created and last used (never the keys)")
    async def list_keys(_: Admin) -> dict[str, Any]:
        return {"apikeys": await auth.list_keys()}

    @app.delete("/api/v1/apikeys/{name}", status_code=204, tags=["apikeys"], summary="Revoke an API key",
                responses={404: {"description": "no key with that name"}})
    async def revoke_key(name: str, _: Admin) -> Response:
        if not await auth.revoke(name):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no API key named {name!r}")
        return Response(status_code=204)

    return app


# --- helpers ------------------------------------------------------------------------------------


async def _list(store: Any, **filters: Any) -> dict[str, Any]:
    try:
        found, cursor = await store.list_tasks(**filters)
    except CursorError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return {"tasks": [t.public() for t in found], "next_cursor": cursor}


async def _task_or_404(store: Any, task_id: str) -> Task:
    task = await store.get_task(task_id)
    if task is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task_id!r}")
    return task


async def _change(store: Any, task_id: str, change: Any) -> dict[str, Any]:
    """Apply a state change, conditional on the task not having moved meanwhile (retried if it did)."""
    for _ in range(WRITE_ATTEMPTS):
        task = await _task_or_404(store, task_id)
        try:
            changed = change(task)
        except T.TransitionError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        saved = await store.save_task(changed)
        if saved is not None:
            return saved.public()
    raise HTTPException(status.HTTP_409_CONFLICT, "the task keeps changing; try again")


async def _job_view(store: Any, job_id: str) -> dict[str, Any]:
    job = await store.get_job(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    counts = await store.job_counts(job_id)
    state = job["status"]
    if state == "running" and not any(counts[s.value] for s in T.OPEN):
        state = "finished"
    return {"id": job["_id"], "query": job["query"], "task": job["task"], "status": state,
            "device_count": job.get("device_count", 0), "counts": counts, "created_at": job["created_at"],
            "created_by": job.get("created_by"), "reason": job.get("reason", "")}


def _document_api_keys(app: FastAPI) -> None:
    """Name the API-key schemes in the OpenAPI document (the check itself is a plain dependency)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            schema["security"] = [{"bearer": []}, {"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _key_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


def _explain(error: dict[str, Any]) -> dict[str, Any]:
    """Validation errors as FastAPI shapes them, with a plainer message for an unknown task name."""
    out = {k: v for k, v in error.items() if k in ("type", "loc", "msg")}
    ctx = error.get("ctx") or {}
    if error.get("type") == "union_tag_invalid":
        out["msg"] = f"unknown task name {ctx.get('tag')!r}; expected one of: {', '.join(specs.TASK_NAMES)}"
    elif error.get("type") == "union_tag_not_found":
        out["msg"] = f"a task needs a 'name', one of: {', '.join(specs.TASK_NAMES)}"
    return out
