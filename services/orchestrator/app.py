"""The orchestrator's northbound API under /api/v1: tasks, bulk jobs, policies, API keys.

Roles: read-only reads; operator creates, cancels and retries tasks and jobs; admin manages
policies and API keys. A task for a device the orchestrator has never heard from is refused (404:
a typo must not wait forever) unless the caller asks to pre-provision it (``?preprovision=true``):
it then runs in the device's first session, after bootstrap provisioning.
"""

# No "from __future__ import annotations": FastAPI must resolve the role aliases (Reader, ...)
# defined inside create_app, which string annotations would hide from it.
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError

from services.bus.events import new_id, utcnow
from services.common import audit, scopes
from services.common.accounts import Accounts
from services.common.api import create_api
from services.common.apikeys import NameTaken, Principal
from services.common.errors import validation_problem
from services.common.redaction import redact
from services.common.service import add_health_routes, mongo_check
from services.fileserver.credentials import download_url
from services.orchestrator import accounts_api, clients, jobs, specs, stats
from services.orchestrator import provisioning as prov
from services.orchestrator import tasks as T
from services.orchestrator.apimodels import (
    ApiKeyIn,
    ApiKeyList,
    ApiKeyOut,
    ConnectionRequestOut,
    JobIn,
    JobList,
    JobOut,
    JobStatus,
    PolicyIn,
    PolicyList,
    PolicyOut,
    TaskCreated,
    TaskList,
    TaskOut,
)
from services.orchestrator.campaign_api import add_campaign_routes
from services.orchestrator.connreq import ConnectionRequestResult
from services.orchestrator.jobs import task_event
from services.orchestrator.policies import Policy, PolicyTask
from services.orchestrator.profiles_api import add_profile_routes
from services.orchestrator.quirks_api import add_quirk_routes
from services.orchestrator.runtime import OrchestratorRuntime
from services.orchestrator.state import DeviceState
from services.orchestrator.store import CursorError
from services.orchestrator.tasks import Task, TaskStatus
from services.router.app import add_api_document

log = logging.getLogger(__name__)

DeviceId = Annotated[str, Path(min_length=1, max_length=256,
                               description="OUI-ProductClass-SerialNumber, percent-encoded (as in the inventory)")]
WRITE_ATTEMPTS = 5
# The longest synchronous wait on a task (?timeout=, in ms): a request held longer than a minute
# meets proxy timeouts; the task goes on, and GET /api/v1/tasks/{id} tells its end.
MAX_WAIT_MS = 60_000


def create_app(runtime: OrchestratorRuntime, *, manage_runtime: bool = True) -> FastAPI:
    settings, store, auth = runtime.settings, runtime.store, runtime.auth
    Reader = Annotated[Principal, Depends(auth.require("read-only"))]
    Admin = Annotated[Principal, Depends(auth.require("admin"))]
    # Routes that limit their answer to the principal's scope (services.common.scopes).
    ScopedReader = Annotated[Principal, Depends(auth.require("read-only", scoped=True))]
    ScopedOperator = Annotated[Principal, Depends(auth.require("operator", scoped=True))]
    publish = audit.kafka_publisher(settings, runtime.producer) if runtime.producer is not None else None
    trail = audit.AuditTrail(runtime.db, "orchestrator", settings.audit_retention_days, publish)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            await runtime.start()
        await trail.ensure_indexes()
        try:
            yield
        finally:
            await trail.drain()
            if manage_runtime:
                await runtime.close()

    app = create_api(title="ACS orchestrator", lifespan=lifespan,
                     description="Tasks on devices, bulk jobs, provisioning policies and API keys. "
                                 "See docs/orchestrator.md.", openapi_guard=auth.require("read-only"))
    add_health_routes(app, {"mongodb": mongo_check(runtime.mongo), "kafka": runtime.kafka_ready})
    audit.install(app, trail)
    # The whole API's document and docs page under /api/v1: in Kubernetes, where no router runs,
    # the Ingress sends /api/v1/openapi.json, /api/v1/docs and /api/v1/redoc here.
    add_api_document(app, settings, runtime.http)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return validation_problem(request, [_explain(e) for e in exc.errors()])

    async def resolve(spec: BaseModel) -> tuple[str, dict[str, Any]]:
        """The task's stored args; a download's file is looked up now, so the task is ready to send."""
        args = specs.task_args(spec)

        async def facts_of(file_name: str) -> clients.FileFacts:
            try:
                return await clients.file_facts(runtime.http, settings, file_name)
            except clients.UpstreamError as exc:
                raise HTTPException(exc.status, exc.message) from None

        if isinstance(spec, specs.Download | specs.ScheduleDownload):
            facts = await facts_of(spec.file_name)
            args.update(file_type=spec.file_type or facts.file_type, file_size=facts.size,
                        url=download_url(settings, spec.file_name), version=facts.version)
        elif isinstance(spec, specs.ChangeDUState):
            for op in args["operations"]:
                if op.get("file_name"):
                    await facts_of(op["file_name"])  # an unknown file is a 422 now, not a CPE fault later
                    op["url"] = download_url(settings, op["file_name"])
        return str(getattr(spec, "name")), args  # noqa: B009 - every spec has a literal name

    def new_task(device_id: str, name: str, args: dict[str, Any], spec: Any, principal: Principal,
                 origin: str = "api", job_id: str | None = None) -> Task:
        now = utcnow()
        return Task(id=new_id(), device_id=device_id, name=name, args=args, origin=origin, job_id=job_id,
                    created_by=principal.name, created_at=now, updated_at=now, expires_at=spec.expiry(now),
                    max_attempts=runtime.engine.config.max_attempts)

    # --- tasks -----------------------------------------------------------------------------

    async def in_scope(principal: Principal, device_id: str) -> bool:
        return await scopes.device_in_scope(runtime.db, principal, device_id)

    async def known_device(device_id: str, principal: Principal | None = None) -> DeviceState:
        # The orchestrator's own record: every device that ever informed has one (and a deleted
        # device has none), so no call to the inventory is needed to tell a typo from a device.
        # A device outside the caller's scope is unknown to it.
        device = await store.get_device(device_id)
        if device is None or (principal is not None and not await in_scope(principal, device_id)):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r} has informed this ACS; check "
                                "the id (percent-encoded, and encoded once more in the URL path), or pass "
                                "?preprovision=true to queue the task for the device's first session")
        return device

    @app.post("/api/v1/devices/{device_id}/tasks", status_code=201, response_model=TaskCreated,
              summary="Queue a task for a device", tags=["tasks"],
              responses={200: {"model": TaskCreated, "description": "?timeout: the task ended in time; "
                                                                    "the body has its status and result"},
                         202: {"model": TaskCreated, "description": "?timeout: the task had not ended in time "
                                                                    "(poll GET /api/v1/tasks/{id})"},
                         401: {"description": "missing or unknown API key"},
                         403: {"description": "needs the operator role"},
                         404: {"description": "unknown device (and no ?preprovision=true)"},
                         422: {"description": "invalid task (unknown name, bad arguments, unknown file)"}})
    async def create_task(principal: ScopedOperator, device_id: DeviceId, spec: specs.TaskSpec, response: Response,
                          connection_request: Annotated[bool, Query(
                              description="wake the device now instead of waiting for its next Inform")] = False,
                          preprovision: Annotated[bool, Query(
                              description="queue the task for a device that has never informed: it runs in "
                                          "the device's first session, after bootstrap provisioning")] = False,
                          wait_ms: Annotated[int | None, Query(
                              alias="timeout", ge=1, le=MAX_WAIT_MS,
                              description="wait up to this many milliseconds for the task to end: 200 when it "
                                          "did, 202 when not")] = None,
                          ) -> dict[str, Any]:
        if preprovision and principal.scope is None:
            device = await store.get_device(device_id)
        else:  # a scoped principal reaches only devices of its scope, which the inventory knows
            device = await known_device(device_id, principal)
        name, args = await resolve(spec)
        task = new_task(device_id, name, args, spec, principal)
        await store.insert_tasks([task])
        log.info("task queued", extra={"device_id": device_id, "task_id": task.id, "task": name,
                                       "by": principal.name})
        body: dict[str, Any] = task.public()
        if connection_request:
            body["connection_request"] = _wake_out(await runtime.requester.wake(device))
        if wait_ms is not None:
            ended = await store.wait_for_end(task.id, wait_ms / 1000)
            current = ended or await store.get_task(task.id) or task
            body.update(current.public())
            response.status_code = status.HTTP_200_OK if ended is not None else status.HTTP_202_ACCEPTED
        return body

    @app.post("/api/v1/devices/{device_id}/connection-request", response_model=ConnectionRequestOut,
              tags=["tasks"], summary="Ask the device to open a session now (a connection request)",
              description="The outcome says whether the device was reached: ok (HTTP: the CPE accepted), "
                          "sent (UDP datagrams sent; no reply exists), or why not. Rate-limited per device.",
              responses={404: {"description": "unknown device"}})
    async def connection_request(device_id: DeviceId, principal: ScopedOperator) -> dict[str, Any]:
        return _wake_out(await runtime.requester.wake(await known_device(device_id, principal)))

    @app.get("/api/v1/devices/{device_id}/tasks", response_model=TaskList, tags=["tasks"],
             summary="A device's task history, newest first")
    async def device_tasks(principal: ScopedReader, device_id: DeviceId,
                           status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
                           name: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                           cursor: str | None = None) -> dict[str, Any]:
        if not await in_scope(principal, device_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
        return await _list(store, device_id=device_id, status=status_, name=name, limit=limit, cursor=cursor)

    @app.get("/api/v1/tasks", response_model=TaskList, tags=["tasks"], summary="Find tasks, newest first")
    async def list_tasks(principal: ScopedReader, device_id: str | None = None,
                         status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
                         name: str | None = None, job_id: str | None = None,
                         limit: Annotated[int, Query(ge=1, le=500)] = 50,
                         cursor: str | None = None) -> dict[str, Any]:
        device_ids: list[str] | None = None
        if principal.scope is not None:
            if device_id is not None:
                device_ids = [device_id] if await in_scope(principal, device_id) else []
            elif job_id is not None:
                job = await store.get_job(job_id)
                # A job of the same scope made only tasks in it (its query was limited to it).
                device_ids = None if job is not None and job.get("scope") == principal.scope else []
            else:
                device_ids = await scopes.device_ids(runtime.db, principal)
        if device_ids == []:
            return {"tasks": [], "next_cursor": None}
        return await _list(store, device_id=device_id, status=status_, name=name, job_id=job_id, limit=limit,
                           cursor=cursor, device_ids=device_ids)

    async def scoped_task(principal: Principal, task_id: str) -> Task:
        task = await _task_or_404(store, task_id)
        if not await in_scope(principal, task.device_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task_id!r}")
        return task

    @app.get("/api/v1/tasks/{task_id}", response_model=TaskOut, tags=["tasks"], summary="Read a task",
             responses={404: {"description": "unknown task"}})
    async def get_task(task_id: str, principal: ScopedReader) -> dict[str, Any]:
        body = (await scoped_task(principal, task_id)).public()
        stored = body["result"].get("parameters_stored")
        if isinstance(stored, str):
            # A walk too big for its task document: its parameters are read from its items.
            parameters, objects = prov.walk_parameters(await store.walk_records(stored))
            body["result"] = {**body["result"], "parameters": parameters, "objects": objects}
        return body

    @app.post("/api/v1/tasks/{task_id}/cancel", response_model=TaskOut, tags=["tasks"],
              summary="Cancel a task that has not ended",
              responses={404: {"description": "unknown task"}, 409: {"description": "the task already ended"}})
    async def cancel_task(task_id: str, principal: ScopedOperator) -> dict[str, Any]:
        await scoped_task(principal, task_id)
        cancelled = await _change(store, task_id, lambda t: T.cancel(t, utcnow(), f"cancelled by {principal.name}"))
        await runtime.publisher.device_events([task_event(cancelled)])
        return cancelled.public()

    @app.post("/api/v1/tasks/{task_id}/retry", response_model=TaskOut, tags=["tasks"],
              summary="Queue a failed, cancelled or expired task again, attempts reset",
              responses={404: {"description": "unknown task"}, 409: {"description": "the task is not ended"}})
    async def retry_task(task_id: str, principal: ScopedOperator) -> dict[str, Any]:
        await scoped_task(principal, task_id)
        return (await _change(store, task_id, lambda t: T.retry(t, utcnow()))).public()

    # --- bulk jobs -------------------------------------------------------------------------

    @app.post("/api/v1/jobs", status_code=202, response_model=JobOut, tags=["jobs"],
              summary="The same task for every device matching an inventory query",
              description="The job is stored, then worked by the orchestrator's job engine: the selection is "
                          "paged through the inventory from a stored cursor, one task per device, and any "
                          "orchestrator instance resumes it after a restart. Poll GET /api/v1/jobs/{id}.",
              responses={422: {"description": "invalid task or query"}, 503: {"description": "inventory down"}})
    async def create_job(body: JobIn, request: Request, principal: ScopedOperator) -> dict[str, Any]:
        name, args = await resolve(body.task)
        try:
            # A scoped caller's job runs over its query within its scope, and nothing else.
            query = scopes.job_query(principal, body.query)
        except scopes.QueryError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        # The query is tried now with the caller's own key, so a bad query or a key the inventory
        # refuses is this request's error; the engine pages with the service key (ACS_ADMIN_API_KEY).
        try:
            await clients.device_page(runtime.http, settings, query, _key_of(request) or settings.admin_api_key,
                                      None, page_size=1)
        except clients.UpstreamError as exc:
            raise HTTPException(exc.status, exc.message) from None
        now = utcnow()
        job = {"_id": new_id(), "kind": "job", "query": query, "scope": principal.scope,
               "task": {"name": name, "args": args},
               "task_expires_at": body.task.expiry(now), "max_attempts": runtime.engine.config.max_attempts,
               "connection_request": body.connection_request, "status": "resolving", "work": jobs.PAGE,
               "cursor": None, "pages": 0, "lease_owner": None, "lease_until": None, "created_at": now,
               "created_by": principal.name, "reason": ""}
        await store.insert_job(job)
        runtime.jobs.wake()
        log.info("job created", extra={"job_id": job["_id"], "task": name, "by": principal.name})
        return (await _job_views(store, [job]))[0]

    @app.get("/api/v1/jobs", response_model=JobList, tags=["jobs"], summary="Jobs, newest first")
    async def list_jobs(principal: ScopedReader, status_: Annotated[JobStatus | None, Query(alias="status")] = None,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None) -> dict[str, Any]:
        try:
            found, next_cursor = await store.list_jobs(status=status_, limit=limit, cursor=cursor,
                                                       scope=principal.scope, scoped=principal.scope is not None)
        except CursorError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        return {"jobs": await _job_views(store, found), "next_cursor": next_cursor}

    @app.get("/api/v1/jobs/{job_id}", response_model=JobOut, tags=["jobs"], summary="A job and its progress",
             responses={404: {"description": "unknown job"}})
    async def get_job(job_id: str, principal: ScopedReader) -> dict[str, Any]:
        return (await _job_views(store, [await _job_or_404(store, job_id, principal)]))[0]

    @app.post("/api/v1/jobs/{job_id}/cancel", response_model=JobOut, tags=["jobs"],
              summary="Stop a job: no more tasks are created, and its open tasks are cancelled",
              responses={404: {"description": "unknown job"}, 409: {"description": "the job already ended"}})
    async def cancel_job(job_id: str, principal: ScopedOperator) -> dict[str, Any]:
        job = await _job_or_404(store, job_id, principal)
        view = (await _job_views(store, [job]))[0]
        if view["status"] not in ("resolving", "running"):
            raise HTTPException(status.HTTP_409_CONFLICT, f"the job is {view['status']} already")
        reason = jobs.cancel_reason(principal.name)
        # Stored first: the engine stops paging at its next write and sweeps what it added since.
        if not await store.update_job(job_id, {"status": "cancelled", "reason": reason, "work": jobs.SWEEP,
                                               "cancelled_at": utcnow()},
                                      expect={"status": {"$in": ["resolving", "running", "finished"]}}):
            raise HTTPException(status.HTTP_409_CONFLICT, "the job changed meanwhile; read it and try again")
        await jobs.cancel_open_tasks(store, runtime.publisher, job_id, reason)
        runtime.jobs.wake()
        log.info("job cancelled", extra={"job_id": job_id, "by": principal.name})
        return (await _job_views(store, [await _job_or_404(store, job_id)]))[0]

    # Firmware campaigns: /api/v1/campaigns (services/orchestrator/campaign_api.py).
    add_campaign_routes(app, runtime)

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
        audit.note_change(None, policy.model_dump())  # redacted when recorded
        return redact(policy.model_dump())

    @app.get("/api/v1/policies", response_model=PolicyList, tags=["policies"], summary="List policies")
    async def list_policies(_: Reader) -> dict[str, Any]:
        return {"policies": [redact(p.model_dump()) for p in await store.list_policies()]}

    @app.get("/api/v1/policies/{policy_id}", response_model=PolicyOut, tags=["policies"],
             responses={404: {"description": "unknown policy"}})
    async def get_policy(policy_id: str, _: Reader) -> dict[str, Any]:
        policy = await store.get_policy(policy_id)
        if policy is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no policy {policy_id!r}")
        return redact(policy.model_dump())

    @app.delete("/api/v1/policies/{policy_id}", status_code=204, tags=["policies"],
                responses={404: {"description": "unknown policy"}})
    async def delete_policy(policy_id: str, _: Admin) -> Response:
        before = await store.get_policy(policy_id)
        if not await store.delete_policy(policy_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no policy {policy_id!r}")
        runtime.policies.invalidate()
        audit.note_change(before.model_dump() if before is not None else None, None)
        return Response(status_code=204)

    add_profile_routes(app, runtime)
    add_quirk_routes(app, auth, runtime.quirk_store, runtime.quirks)
    stats.add_routes(app, runtime.db, Depends(auth.require("read-only", scoped=True)))
    accounts = Accounts(runtime.db, settings.account_lock_failures)
    accounts_api.add_routes(app, runtime.db, auth, accounts)

    # --- API keys --------------------------------------------------------------------------

    @app.post("/api/v1/apikeys", status_code=201, response_model=ApiKeyOut, tags=["apikeys"],
              summary="Create an API key (shown once)",
              responses={409: {"description": "a key with this name exists (a retry of a create whose answer "
                                              "was lost: revoke the name, then create it again)"}})
    async def create_key(body: ApiKeyIn, principal: Admin) -> dict[str, Any]:
        if body.user is not None:
            if body.scope is not None:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "a user's key has the user's scope; "
                                                                           "give a user or a scope, not both")
            owner = await accounts.get(body.user)
            if owner is None:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"no user {body.user!r}")
        try:
            scope = scopes.canonical(body.scope)
        except scopes.ScopeError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        try:
            key = await auth.create(body.name, body.role, user=body.user, scope=scope)
        except NameTaken:
            raise HTTPException(status.HTTP_409_CONFLICT, f"an API key named {body.name!r} exists; revoke it "
                                                          "first or choose another name") from None
        log.info("API key created", extra={"key_name": body.name, "role": body.role, "by": principal.name})
        # Never the key itself: who it is for and what it may do.
        audit.note_change(None, {"name": body.name, "role": body.role, "user": body.user, "scope": scope})
        return {"name": body.name, "role": body.role, "key": key}

    @app.get("/api/v1/apikeys", response_model=ApiKeyList, tags=["apikeys"],
             summary="The stored API keys: names, roles, when created and last used (never the keys)")
    async def list_keys(_: Admin) -> dict[str, Any]:
        return {"apikeys": await auth.list_keys()}

    @app.delete("/api/v1/apikeys/{name}", status_code=204, tags=["apikeys"], summary="Revoke an API key",
                responses={404: {"description": "no key with that name"}})
    async def revoke_key(name: str, _: Admin) -> Response:
        before = next((k for k in await auth.list_keys() if k["name"] == name), None)
        if not await auth.revoke(name):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no API key named {name!r}")
        audit.note_change(before, None)
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


async def _change(store: Any, task_id: str, change: Any) -> Task:
    """Apply a state change, conditional on the task not having moved meanwhile (retried if it did)."""
    for _ in range(WRITE_ATTEMPTS):
        task = await _task_or_404(store, task_id)
        try:
            changed = change(task)
        except T.TransitionError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        saved = await store.save_task(changed)
        if saved is not None:
            return saved
    raise HTTPException(status.HTTP_409_CONFLICT, "the task keeps changing; try again")


async def _job_or_404(store: Any, job_id: str, principal: Principal | None = None) -> dict[str, Any]:
    job = await store.get_job(job_id)
    if job is None or job.get("kind") == "campaign" or (  # campaigns share the collection: /api/v1/campaigns
            principal is not None and principal.scope is not None and job.get("scope") != principal.scope):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return job


async def _job_views(store: Any, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs as the API shows them, their progress counted from their tasks."""
    counts = await store.job_counts_many([job["_id"] for job in found])
    views = []
    for job in found:
        tally = counts[job["_id"]]
        state = job["status"]
        if state in ("running", "finished"):
            # A finished job whose task an operator retried runs again.
            state = "running" if any(tally[s.value] for s in T.OPEN) else "finished"
        views.append({"id": job["_id"], "query": job["query"], "task": redact(job["task"]), "status": state,
                      "device_count": sum(tally.values()), "pages": job.get("pages", 0), "counts": tally,
                      "created_at": job["created_at"], "created_by": job.get("created_by"),
                      "reason": job.get("reason", "")})
    return views


def _wake_out(result: ConnectionRequestResult) -> dict[str, Any]:
    return ConnectionRequestOut(outcome=result.outcome, transport=result.transport, detail=result.detail,
                                http_status=result.http_status).model_dump()


def _key_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


def _explain(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error with a plainer message for an unknown or missing task name."""
    out = dict(error)
    ctx = error.get("ctx") or {}
    if error.get("type") == "union_tag_invalid":
        out["msg"] = f"unknown task name {ctx.get('tag')!r}; expected one of: {', '.join(specs.TASK_NAMES)}"
    elif error.get("type") == "union_tag_not_found":
        out["msg"] = f"a task needs a 'name', one of: {', '.join(specs.TASK_NAMES)}"
    return out
