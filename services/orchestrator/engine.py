"""The thin shell around the planner: load what a decision needs, decide, write, then publish.

Each event costs one read (one aggregation; the Informs of one fetched batch share theirs) before
its decision. Order matters after it. Task writes are conditional on the version loaded; a task
another writer changed meanwhile (an operator's cancel, the sweep) is a lost race, and its RPCs
are taken out of the plan so that we never send work we no longer own; whatever the task became
is settled in a later session. (A version pre-check before every write would redo the rare lost
decision, at a round trip on every one.) Only after the writes is the plan published, so a plan
never refers to state that is not in MongoDB. A crash in between means Kafka delivers the event
again, and a redelivered event gets the same plan.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from prometheus_client import Counter, Histogram

from services.bus.events import (
    CpeRequestReceived,
    DeviceDeleted,
    DeviceEvent,
    InboundEvent,
    InformReceived,
    RpcFaultReceived,
    RpcResponseReceived,
    SessionEnded,
    SessionPlan,
    new_id,
    utcnow,
)
from services.common import workdue
from services.common.quirks import QuirksCache
from services.common.settings import Settings
from services.fileserver.credentials import download_url, mint_download_credentials
from services.inventory import credentials
from services.orchestrator import clients, cpecreds, planner, requestdownload, rpcs, steps
from services.orchestrator import provisioning as prov
from services.orchestrator import tasks as T
from services.orchestrator.jobs import task_event
from services.orchestrator.planner import Decision
from services.orchestrator.policies import Policy, uses_tags
from services.orchestrator.profile_store import ProfileCache, ProfileStore
from services.orchestrator.profiles import ProfileInput, Variables
from services.orchestrator.state import DeviceState, Env, PlanConfig, SessionState
from services.orchestrator.store import InformView, SessionView, Store

log = logging.getLogger(__name__)

PLANS = Counter("acs_orchestrator_plans_total", "Session plans published", ["trigger", "more"])
PLANNED_RPCS = Counter("acs_orchestrator_planned_rpcs_total", "RPCs planned", ["method"])
TASK_OUTCOMES = Counter("acs_orchestrator_task_outcomes_total", "Tasks that ended", ["name", "outcome"])
DECISION_SECONDS = Histogram("acs_orchestrator_decision_seconds", "Event in to plan out (load, decide, write)",
                             ["trigger"], buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
RACES = Counter("acs_orchestrator_task_races_total", "Plans trimmed after a concurrent task write")
PROFILE_EVENTS = Counter("acs_orchestrator_profile_events_total",
                         "Configuration profile outcomes: profile_applied, profile_failed, drift_detected",
                         ["kind"])

# How long a task may stay in_progress with no event before the sweep frees it.
STALE_IN_PROGRESS_SECONDS = 600.0
POLICY_CACHE_SECONDS = 5.0
DELETED_REASON = "the device was deleted (DELETE /api/v1/devices/{id}): work queued for it was dropped"
# Open tasks read per round when forgetting a device; rounds retry the tasks another writer changed.
FORGET_TASKS_LIMIT = 10_000
FORGET_ROUNDS = 3


class Publisher(Protocol):
    async def plan(self, reply_to: str, plan: SessionPlan) -> None: ...

    async def device_events(self, events: list[DeviceEvent]) -> None: ...


def upload_url(settings: Settings, name: str) -> str:
    """Where a CPE PUTs an Upload (the fileserver's CPE-facing listener)."""
    return f"{settings.files_public_url.rstrip('/')}/upload/{quote(name, safe='')}"


class PolicyCache:
    """Enabled policies, re-read every few seconds: the Inform path must not query them each time."""

    def __init__(self, store: Store, ttl: float = POLICY_CACHE_SECONDS) -> None:
        self.store, self.ttl = store, ttl
        self._policies: list[Policy] = []
        self._loaded = -float("inf")

    def invalidate(self) -> None:
        self._loaded = -float("inf")

    async def current(self) -> list[Policy]:
        if time.monotonic() - self._loaded > self.ttl:
            self._policies = [p for p in await self.store.list_policies() if p.enabled]
            self._loaded = time.monotonic()
        return self._policies


class InformViewBatcher:
    """The Inform views asked for in one turn of the event loop, read in one round trip.

    The consumer starts the handling of a whole fetched batch at once, one task per device; each
    asks for its view before awaiting anything else, so the requests of a batch gather here and go
    to MongoDB together when the loop next runs. A failed read fails every request of its round
    trip; each event's handler retries on its own.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: dict[str, list[asyncio.Future[InformView]]] = {}

    async def get(self, device_id: str) -> InformView:
        future: asyncio.Future[InformView] = asyncio.get_running_loop().create_future()
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._flush)
        self._waiting.setdefault(device_id, []).append(future)
        return await future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, {}
        task = asyncio.ensure_future(self.store.inform_views(list(waiting)))
        task.add_done_callback(lambda done: _settle(done, waiting))


def _settle(done: asyncio.Future[dict[str, InformView]],
            waiting: dict[str, list[asyncio.Future[InformView]]]) -> None:
    for device_id, futures in waiting.items():
        for future in futures:
            if future.done():
                continue  # its handler was cancelled meanwhile
            if done.cancelled():
                future.cancel()
            elif (error := done.exception()) is not None:
                future.set_exception(error)
            elif (view := done.result().get(device_id)) is None:
                future.set_exception(RuntimeError(f"no inform view came back for {device_id}"))
            else:
                future.set_result(view)


class Engine:
    def __init__(self, settings: Settings, store: Store, publisher: Publisher, http: httpx.AsyncClient,
                 *, config: PlanConfig | None = None, policies: PolicyCache | None = None,
                 profiles: ProfileCache | None = None, quirks: QuirksCache | None = None) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.http = http
        self.config = config or PlanConfig.from_settings(settings)
        self.policies = policies or PolicyCache(store)
        self.profiles = profiles or ProfileCache(ProfileStore(store.db))
        self.inform_views = InformViewBatcher(store)
        self.quirks = quirks

    def env(self) -> Env:
        settings = self.settings
        return Env(now=utcnow(), new_id=new_id, new_secret=lambda: secrets.token_urlsafe(18),
                   mint_credentials=lambda name, device: mint_download_credentials(settings, name, device),
                   upload_url=lambda name: upload_url(settings, name),
                   cpe_password=lambda username, nonce: cpecreds.derive_password(settings.secret_key, username,
                                                                                 nonce),
                   xmpp_password=lambda device_id: cpecreds.derive_xmpp_password(settings.secret_key, device_id),
                   quirks_of=self.quirks.lookup if self.quirks is not None else None)

    async def handle(self, event: InboundEvent) -> None:
        started = time.perf_counter()
        match event:
            case InformReceived():
                await self.on_inform(event)
            case RpcResponseReceived() | RpcFaultReceived():
                await self.on_answer(event)
            case SessionEnded():
                await self.on_session_ended(event)
            case CpeRequestReceived():
                await self.on_cpe_request(event)
            case DeviceDeleted():
                await self.on_device_deleted(event)
        DECISION_SECONDS.labels(event.type).observe(time.perf_counter() - started)

    # --- events ----------------------------------------------------------------------------

    async def on_inform(self, event: InformReceived) -> None:
        view = await self.inform_views.get(event.device_id)
        current = next((s for s in view.sessions if s.session_id == event.session_id), None)
        if current is not None and current.last_in_reply_to == event.event_id:
            # Redelivered: the plan went out (or may have); send the very same one again.
            await self._publish_plan(current.reply_to, planner.replay(current), "inform")
            return
        policies = await self.policies.current()
        profile_set = await self.profiles.current()
        tags = await self._tags(event.device_id, policies, profile_set.uses_tags)
        variables = await self.profiles.store.variables_of(event.device_id) if profile_set.uses_variables \
            else Variables()
        # Tasks already in_progress for this very session come from an earlier delivery of this
        # Inform that died before its plan went out: plan them again, attempt given back.
        open_tasks = [T.requeue(t, t.updated_at, count_attempt=False)
                      if t.status is T.TaskStatus.IN_PROGRESS and t.session_id == event.session_id else t
                      for t in view.open_tasks]
        stale = [s for s in view.sessions if s.session_id != event.session_id]
        decision = planner.on_inform(event, view.device, open_tasks, policies, tags, stale, self.env(), self.config,
                                     ProfileInput(profile_set, variables))
        if decision.plan is None:  # cannot happen: on_inform always plans; keep the gateway unblocked
            decision.plan = SessionPlan(device_id=event.device_id, session_id=event.session_id,
                                        gateway_id=event.gateway_id, in_reply_to=event.event_id)
        await self._store_cpe_credentials(view.device, decision)
        await self._commit(decision, event.reply_to, "inform")
        final = {t.id: t for t in open_tasks} | {t.id: t for t in decision.tasks}
        if event.work_due_token is not None and self.settings.work_due_marker and not decision.plan.rpcs \
                and not decision.plan.more and not decision.new_tasks and not any(t.open for t in final.values()):
            # Nothing planned and nothing open: the gateway may end the next routine sessions
            # itself, until something marks the device due (services/common/workdue.py).
            fingerprint = workdue.inform_fingerprint((p.name, p.value) for p in event.parameters)
            await workdue.mark_idle(self.store.db, event.device_id, event.work_due_token, fingerprint,
                                    self.settings.work_due_idle_seconds)

    async def on_answer(self, event: RpcResponseReceived | RpcFaultReceived) -> None:
        view = await self.store.session_view(event.session_id)
        if view is None:
            log.warning("answer for an unknown session", extra={"device_id": event.device_id,
                                                                 "session_id": event.session_id})
            return
        device = view.device or DeviceState(id=event.device_id)
        before = view.session.model_copy(deep=True)
        walks = await self._upcoming_walk_rpcs(view, event.rpc_id)
        if isinstance(event, RpcResponseReceived):
            decision = planner.on_response(event, view.session, device, view.tasks, self.env(), self.config, walks)
        else:
            # Read before the planner marks the RPC answered: a redelivered fault is announced once.
            ref = view.session.rpcs.get(event.rpc_id)
            fresh = ref is not None and not ref.answered
            heals = (await self.store.open_heals(event.device_id)
                     if ref is not None and _reports_9005(event) else [])
            decision = planner.on_fault(event, view.session, device, view.tasks, self.env(), self.config, heals,
                                        walks)
            if fresh and ref is not None:
                decision.events.insert(0, fault_raised(event, ref.task_id))
        await self._store_cpe_credentials(view.device, decision)
        await self._commit(decision, view.session.reply_to, event.type, before)
        for task in decision.tasks:
            if task.name == "cancelTransfer" and task.status is T.TaskStatus.SUCCEEDED:
                await self._cancel_transfer_task(task)

    async def _cancel_transfer_task(self, canceller: T.Task) -> None:
        """The CPE dropped a queued transfer (CancelTransfer): the task waiting for its
        TransferComplete will get none, so it is cancelled now rather than timed out later."""
        target = await self.store.task_by_command_key(canceller.device_id, str(canceller.args.get("command_key")))
        if target is None or target.status is not T.TaskStatus.PENDING_COMPLETION:
            return
        cancelled = T.cancel(target, utcnow(), f"cancelled on the CPE by the cancelTransfer task {canceller.id}")
        if not await self.store.save_tasks([cancelled]):
            TASK_OUTCOMES.labels(cancelled.name, cancelled.status.value).inc()
            await self.publisher.device_events([task_event(cancelled)])

    async def _upcoming_walk_rpcs(self, view: SessionView, rpc_id: str) -> dict[str, list[dict[str, Any]]]:
        """The next queued RPCs of the session's walks, when this answer may lead to the next plan."""
        session = view.session
        waiting = [i for i in session.batch if i in session.rpcs and not session.rpcs[i].answered]
        if waiting != [rpc_id]:
            return {}  # other answers of the batch are still due: no plan follows this one
        cursors = {walk["id"]: walk["taken"] for task in view.tasks
                   if task.status is T.TaskStatus.IN_PROGRESS and (walk := steps.walk_of(task)) is not None}
        return await self.store.walk_upcoming(cursors, self.config.walk_fanout) if cursors else {}

    async def on_session_ended(self, event: SessionEnded) -> None:
        view = await self.store.session_view(event.session_id)
        if view is None:
            return  # an empty plan needs no bookkeeping
        device = view.device or DeviceState(id=event.device_id)
        decision = planner.on_session_ended(event, view.session, device, view.tasks, self.env(), self.config)
        await self._commit(decision, view.session.reply_to, event.type)

    async def on_cpe_request(self, event: CpeRequestReceived) -> None:
        # The gateway acknowledged the request to the CPE already; here we act on it.
        if event.method in ("DUStateChangeComplete", "AutonomousDUStateChangeComplete"):
            key = str(event.rpc.get("command_key") or "")
            device, task, open_tasks = await asyncio.gather(
                self.store.get_device(event.device_id),
                self.store.task_by_command_key(event.device_id, key)
                if key and event.method == "DUStateChangeComplete" else _nothing(),
                self.store.open_tasks_of(event.device_id))
            decision = planner.on_du_state_change_complete(
                event, device or DeviceState(id=event.device_id), task, open_tasks, self.env(), self.config)
            await self._commit(decision, event.reply_to, event.type)
            return
        if event.method == "AutonomousTransferComplete":
            device = await self.store.get_device(event.device_id)
            decision = planner.on_autonomous_transfer_complete(event, device or DeviceState(id=event.device_id),
                                                               self.env(), self.config)
            await self._commit(decision, event.reply_to, event.type)
            return
        if event.method == "RequestDownload":
            await self.on_request_download(event)
            return
        if event.method != "TransferComplete":
            log.info("CPE request noted", extra={"device_id": event.device_id, "method": event.method})
            return
        key = rpcs.read_transfer_complete(event.rpc).command_key
        device, task = await asyncio.gather(
            self.store.get_device(event.device_id),
            self.store.task_by_command_key(event.device_id, key) if key else _nothing())
        decision = planner.on_transfer_complete(event, device or DeviceState(id=event.device_id), task,
                                                self.env(), self.config)
        await self._commit(decision, event.reply_to, event.type)

    async def on_request_download(self, event: CpeRequestReceived) -> None:
        """RequestDownload: serve the file the rule picks (services/orchestrator/requestdownload.py)
        as a ``download`` task for the device's next session, and say what was decided."""
        device = await self.store.get_device(event.device_id) or DeviceState(id=event.device_id)
        ask = requestdownload.read_ask(event.device_id, event.rpc, device.oui, device.product_class)
        details: dict[str, Any] = {"file_type": ask.file_type, "file_type_args": ask.file_type_args}
        try:
            chosen = requestdownload.RULE(ask, await clients.files_of_type(self.http, self.settings, ask.file_type))
        except clients.UpstreamError as exc:
            chosen, details["reason"] = None, exc.message
        if chosen is None:
            details.setdefault("reason", f"no catalogued file of type {ask.file_type!r} for this device")
        else:
            now = utcnow()
            # The id comes from the event: a redelivered RequestDownload queues nothing twice.
            task = T.Task(id=f"rd-{event.event_id}", device_id=event.device_id, name="download",
                          args=requestdownload.download_args(chosen, download_url(self.settings, chosen["name"])),
                          origin=requestdownload.ORIGIN, created_at=now, updated_at=now,
                          max_attempts=self.config.max_attempts)
            await self.store.insert_new_tasks([task])
            details.update(file_name=chosen["name"], task_id=task.id)
        log.info("RequestDownload answered", extra={"device_id": event.device_id, **details})
        await self.publisher.device_events([DeviceEvent(kind="download_requested", device_id=event.device_id,
                                                        details=details)])

    async def on_device_deleted(self, event: DeviceDeleted) -> None:
        """Forget a deleted device: its next Inform is a first contact (bootstrap and discovery again).

        Its open tasks are cancelled rather than deleted, so that their history stays readable and
        job counts stay true; its state and sessions go. A task an operator queued after the
        deletion (created later than the event) is kept: it is meant for the device's next life.
        Tasks the orchestrator made itself (bootstrap, policies, self-heal) all belong to the old
        one, whenever they were made: they come from the device's earlier events, which were
        handled before this one (same partition, same queue).
        """
        cancelled = 0
        for _ in range(FORGET_ROUNDS):
            now = utcnow()
            doomed = [T.cancel(task, now, DELETED_REASON)
                      for task in await self.store.open_tasks_of(event.device_id, FORGET_TASKS_LIMIT)
                      if task.created_at <= event.time or not _operator_task(task)]
            lost = set(await self.store.save_tasks(doomed))
            saved = [task for task in doomed if task.id not in lost]
            for task in saved:
                TASK_OUTCOMES.labels(task.name, task.status.value).inc()
            # The same event an operator's cancel publishes (services/orchestrator/jobs.task_event).
            await self.publisher.device_events([task_event(task) for task in saved])
            cancelled += len(saved)
            if not lost:
                break
        await self.store.forget_device(event.device_id)
        await workdue.mark_due(self.store.db, [event.device_id])  # its next Inform: a first contact
        log.info("deleted device forgotten", extra={"device_id": event.device_id, "by": event.deleted_by,
                                                     "cancelled_tasks": cancelled})

    async def sweep_once(self) -> int:
        env = self.env()
        stale_before = env.now - timedelta(seconds=STALE_IN_PROGRESS_SECONDS)
        candidates = await self.store.sweep_candidates(env.now, stale_before)
        changed, events = planner.sweep(candidates, env, STALE_IN_PROGRESS_SECONDS)
        lost = set(await self.store.save_tasks(changed))
        await self.publisher.device_events([e for e in events if e.details.get("task_id") not in lost])
        for task in changed:
            if task.id not in lost and task.status in T.TERMINAL:
                TASK_OUTCOMES.labels(task.name, task.status.value).inc()
        return len(changed) - len(lost)

    # --- machinery -------------------------------------------------------------------------

    async def _tags(self, device_id: str, policies: list[Policy], profiles_use_tags: bool = False) -> frozenset[str]:
        if not uses_tags(policies) and not profiles_use_tags:
            return frozenset()
        try:
            return await clients.device_tags(self.http, self.settings, device_id)
        except (httpx.HTTPError, ValueError) as exc:
            # Tag policies then do not match this time; the device's next Inform tries again.
            log.warning("could not read tags from the inventory", extra={"device_id": device_id,
                                                                          "error": type(exc).__name__})
            return frozenset()

    async def _store_cpe_credentials(self, before: DeviceState | None, decision: Decision) -> None:
        """Tell the gateway's credential store what the decision did to the device's own credentials.

        Before the decision's writes: a pending pair is in the store before the plan that sets it
        goes out, and a failure here leaves the event to be handled again (the writes are
        idempotent). A confirmation written but not followed by the device write is redone by
        the answer's redelivery.
        """
        settings = self.settings
        for change in cpecreds.changes(before, decision.device):
            if change.kind == "forgotten":
                await credentials.forget_provisioned(self.store.db, change.device_id)
                log.info("device's own ACS credentials dropped (factory reset)",
                         extra={"device_id": change.device_id})
                continue
            password = cpecreds.derive_password(settings.secret_key, change.username, change.nonce)
            if change.kind == "pending":
                await credentials.store_pending(self.store.db, change.username, change.device_id,
                                                settings.cpe_realm, password)
            else:
                await credentials.confirm(self.store.db, change.username, change.device_id,
                                          settings.cpe_realm, password)
                log.info("device's own ACS credentials in use", extra={"device_id": change.device_id})

    async def _commit(self, decision: Decision, reply_to: str, trigger: str,
                      before: SessionState | None = None) -> None:
        """Write a decision, then publish its plan and events. ``before``: the session as loaded
        (its document is then updated field by field rather than rewritten)."""
        if decision.assemble:
            await self._assemble_walks(decision)
        # The writes touch different documents: run them together, one round trip of latency.
        session = decision.session if (decision.session is not None
                                       and decision.session.session_id not in decision.ended_sessions) else None
        saved_tasks, *_ = await asyncio.gather(
            self.store.save_tasks(decision.tasks),
            self.store.insert_tasks(decision.new_tasks),
            self.store.save_device(decision.device) if decision.device is not None else _nothing(),
            self.store.save_session(session, before) if session is not None else _nothing(),
            self.store.delete_sessions(decision.ended_sessions),
            self.store.insert_walk_items(decision.walk_writes))
        lost = set(saved_tasks)
        if lost:
            RACES.inc()
            _trim(decision, lost)
            if session is not None:
                await self.store.save_session(session)  # the session without the lost tasks' RPCs
        for task_id, walk in decision.assemble.items():
            if task_id not in lost:
                stored = any(t.id == task_id and "parameters_stored" in t.result for t in decision.tasks)
                await self.store.finish_walk(walk["id"], keep_records=stored)
        for note in decision.notes:
            log.info(note, extra={"device_id": decision.plan.device_id if decision.plan else None})
        if decision.plan is not None:
            await self._publish_plan(reply_to, decision.plan, trigger)
        published = [e for e in decision.events if e.details.get("task_id") not in lost]
        await self.publisher.device_events(published)
        for event in published:
            if event.kind in ("profile_applied", "profile_failed", "drift_detected"):
                PROFILE_EVENTS.labels(event.kind).inc()
        for task in [*decision.tasks, *decision.new_tasks]:
            if task.id not in lost and task.status in T.TERMINAL:
                TASK_OUTCOMES.labels(task.name, task.status.value).inc()
        for task in decision.tasks:
            if task.id not in lost and task.origin == planner.HEAL_ORIGIN and task.status in T.TERMINAL:
                await self._settle_heal(task)

    async def _assemble_walks(self, decision: Decision) -> None:
        """Give each walk that ended its result, built from its items (stored and just made)."""
        for i, task in enumerate(decision.tasks):
            walk = decision.assemble.get(task.id)
            if walk is None:
                continue
            inline = walk["parameters"] <= self.config.walk_result_inline
            records = [*(await self.store.walk_records(walk["id"]) if inline else []),
                       *(item for item in decision.walk_writes
                         if item["walk"] == walk["id"] and item["type"] == prov.WALK_ITEM_RECORD)]
            result = {**task.result, **prov.walk_result(walk, records, self.config.walk_result_inline)}
            decision.tasks[i] = task.model_copy(update={"result": result})

    async def _settle_heal(self, healer: T.Task) -> None:
        """A self-heal walk ended: the tasks that waited for it learn whether their names exist.

        Written after the walk's own decision: were the process to die in between, the waiting
        tasks simply keep their backoff and retry (bounded by their attempts).
        """
        waiters = await self.store.tasks_awaiting_heal(healer.device_id, healer.id)
        if not waiters:
            return
        decision = planner.on_heal_finished(healer, waiters, self.env(), self.config)
        lost = set(await self.store.save_tasks(decision.tasks))
        published = [e for e in decision.events if e.details.get("task_id") not in lost]
        await self.publisher.device_events(published)
        for event in published:
            if event.kind in ("profile_applied", "profile_failed", "drift_detected"):
                PROFILE_EVENTS.labels(event.kind).inc()
        for task in decision.tasks:
            if task.id not in lost and task.status in T.TERMINAL:
                TASK_OUTCOMES.labels(task.name, task.status.value).inc()

    async def _publish_plan(self, reply_to: str, plan: SessionPlan, trigger: str) -> None:
        await self.publisher.plan(reply_to, plan)
        PLANS.labels(trigger, str(plan.more).lower()).inc()
        for planned in plan.rpcs:
            PLANNED_RPCS.labels(str(planned.rpc.get("method"))).inc()
        log.debug("plan published", extra={"device_id": plan.device_id, "session_id": plan.session_id,
                                           "rpcs": [rpcs.redacted(p.rpc)["method"] for p in plan.rpcs],
                                           "more": plan.more})


def fault_raised(event: RpcFaultReceived, task_id: str) -> DeviceEvent:
    """The CPE answered an RPC with a fault: what a subscriber needs to act on it."""
    details: dict[str, object] = {"code": event.fault_code, "string": event.fault_string, "method": event.method,
                                  "task_id": task_id, "session_id": event.session_id}
    if event.parameter_faults:
        details["parameter_faults"] = [pf.model_dump() for pf in event.parameter_faults]
    return DeviceEvent(kind="fault_raised", device_id=event.device_id, details=details)


def _reports_9005(event: RpcFaultReceived) -> bool:
    return event.fault_code == 9005 or any(pf.fault_code == 9005 for pf in event.parameter_faults)


async def _nothing() -> None:
    return None


def _operator_task(task: T.Task) -> bool:
    """Queued through the API (one device or a job), not made by the orchestrator itself."""
    return task.origin == "api" or task.origin.startswith("job:")


def _trim(decision: Decision, lost: set[str]) -> None:
    """Take the RPCs of tasks we lost a race on out of the plan and the session."""
    session, plan = decision.session, decision.plan
    if session is None or plan is None:
        return
    dropped = {rpc_id for rpc_id, ref in session.rpcs.items() if ref.task_id in lost and rpc_id in session.batch}
    if not dropped:
        return
    for rpc_id in dropped:
        del session.rpcs[rpc_id]
    session.batch = [i for i in session.batch if i not in dropped]
    session.last_plan = [p for p in session.last_plan if p["rpc_id"] not in dropped]
    kept = [p for p in plan.rpcs if p.rpc_id not in dropped]
    # With nothing left to answer, no answer would ever trigger the promised next plan.
    session.more = session.more and bool(kept)
    decision.plan = plan.model_copy(update={"rpcs": kept, "more": session.more})
    log.warning("tasks changed during planning; their RPCs were left out", extra={
        "device_id": session.device_id, "session_id": session.session_id, "tasks": sorted(lost)})
