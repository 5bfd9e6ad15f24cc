"""Per-session planning: what a device is told, decided from what it said. No I/O here.

Each ``on_*`` function takes one inbound event plus the state the service loaded for it and
returns a :class:`Decision`: the task, device and session documents to write, the SessionPlan to
publish, and the ``device.events`` to announce. The service writes, then publishes.

The plan protocol with the gateway (see docs/orchestrator.md):

- Every Inform gets exactly one plan, possibly empty. It holds everything already known to be
  due: bootstrap provisioning, policy tasks, queued tasks, in that order; a Reboot or
  FactoryReset waits until nothing else of the session is left, since the CPE goes away after.
- ``more`` is True when some RPC may follow once this plan's answers are in (a walk, an
  AddObject with values, work beyond ``max_rpcs_per_plan``). When the last answer of such a
  plan arrives, the next plan goes out with ``in_reply_to`` = that answer's event id.
- When a session ends, RPCs that were never sent give their task back to ``pending`` without
  counting an attempt; RPCs sent but never answered count as a failed attempt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from services.bus.events import (
    CpeRequestReceived,
    DeviceEvent,
    InformReceived,
    PlannedRpc,
    RpcFaultReceived,
    RpcResponseReceived,
    SessionEnded,
    SessionPlan,
)
from services.inventory.query import device_document
from services.orchestrator import profiles, rpcs, steps
from services.orchestrator import provisioning as prov
from services.orchestrator import tasks as T
from services.orchestrator.policies import DeviceFacts, Policy, due_policies, inform_events
from services.orchestrator.state import (
    TR098_ROOT,
    TR181_ROOT,
    DeviceState,
    Env,
    PlanConfig,
    RpcRef,
    SessionState,
)
from services.orchestrator.tasks import Fault, Task, TaskStatus

S = TaskStatus
BOOTSTRAP_EVENT = "0 BOOTSTRAP"
BOOT_EVENT = "1 BOOT"
REBOOT_EVENT = "M Reboot"
FIRMWARE_FILE_TYPES = ("1 Firmware Upgrade Image", "6 Stored Firmware Image")
HEAL_ORIGIN = "self-heal"
# The walk of <root>SoftwareModules. queued after a (Autonomous)DUStateChangeComplete.
SOFTWARE_MODULES_ORIGIN = "software-modules"
# Walks a profile's ``discovery`` asks for at bootstrap; "full" walks this many levels below the root.
PROFILE_DISCOVERY_ORIGIN = "profile-discovery"
FULL_DISCOVERY_DEPTH = 32
# Self-heal walks open at once per device: a job of bad names must not walk the whole tree.
MAX_OPEN_HEALS = 3


@dataclass
class Decision:
    """What to write and publish. ``device`` is None when the device document did not change."""

    device: DeviceState | None = None
    tasks: list[Task] = field(default_factory=list)
    new_tasks: list[Task] = field(default_factory=list)
    session: SessionState | None = None
    ended_sessions: list[str] = field(default_factory=list)
    plan: SessionPlan | None = None
    events: list[DeviceEvent] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Walk items to insert (collection orchestrator_walks), and the walks that ended well: task id
    # -> the walk's control state, whose result the service builds from the items before writing.
    walk_writes: list[dict[str, Any]] = field(default_factory=list)
    assemble: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Work:
    """The mutable scratch state of one decision; turned into a Decision at the end."""

    def __init__(self, env: Env, cfg: PlanConfig, device: DeviceState, original: DeviceState | None,
                 tasks: Iterable[Task], walks: Mapping[str, Sequence[dict[str, Any]]] | None = None) -> None:
        self.env, self.cfg, self.now = env, cfg, env.now
        self.walks = prov.WalkBuffer(walks)
        self.assemble: dict[str, dict[str, Any]] = {}
        self.device, self.original = device, original
        self.tasks: dict[str, Task] = {t.id: t for t in tasks}
        self.changed: set[str] = set()
        self.created: list[str] = []
        self.events: list[DeviceEvent] = []
        self.notes: list[str] = []

    def ctx(self) -> steps.StepContext:
        return steps.StepContext(env=self.env, cfg=self.cfg, device=self.device, walks=self.walks)

    def put(self, task: Task) -> Task:
        self.tasks[task.id] = task
        if task.id not in self.created:
            self.changed.add(task.id)
        return task

    def add(self, task: Task) -> Task:
        self.tasks[task.id] = task
        self.created.append(task.id)
        return task

    def update_device(self, updates: dict[str, Any]) -> None:
        if updates:
            self.device = self.device.model_copy(update=updates)

    def new_task(self, name: str, args: dict[str, Any], origin: str, *, policy_id: str | None = None,
                 max_attempts: int | None = None) -> Task:
        return self.add(Task(id=self.env.new_id(), device_id=self.device.id, name=name, args=args,
                             origin=origin, policy_id=policy_id, created_at=self.now, updated_at=self.now,
                             max_attempts=max_attempts or self.cfg.max_attempts))

    def announce(self, task: Task) -> None:
        details: dict[str, Any] = {"task_id": task.id, "name": task.name, "origin": task.origin}
        if task.job_id:
            details["job_id"] = task.job_id
        if task.status is S.SUCCEEDED:
            self.events.append(DeviceEvent(kind="task_succeeded", device_id=task.device_id, details=details))
            self.settle_profile(task)
            return
        details["reason"] = task.reason
        if task.faults:
            details["fault"] = {"code": task.faults[-1].code, "string": task.faults[-1].string}
        kind = {S.CANCELLED: "task_cancelled", S.EXPIRED: "task_expired"}.get(task.status, "task_failed")
        self.events.append(DeviceEvent(kind=kind, device_id=task.device_id, details=details))
        self.settle_profile(task)

    def settle_profile(self, task: Task) -> None:
        """A profile task ended: the device's profile state learns it (not for a stand-in device)."""
        if task.origin != profiles.PROFILE_ORIGIN or task.device_id != self.device.id or self.device.first_seen is None:
            return
        state, event = profiles.settle(task, profiles.ProfileState(
            self.device.profile_applied, self.device.profile_status, self.device.profile_failed), self.now)
        self.update_device({"profile_applied": state.applied, "profile_status": state.status,
                            "profile_failed": state.failed})
        if event is not None:
            self.events.append(event)

    def decision(self, **extra: Any) -> Decision:
        device = None
        if self.original is None or _material(self.device) != _material(self.original):
            device = self.device
        return Decision(device=device, tasks=[self.tasks[i] for i in sorted(self.changed)],
                        new_tasks=[self.tasks[i] for i in self.created], events=self.events,
                        notes=self.notes, walk_writes=self.walks.writes, assemble=self.assemble, **extra)


def _material(device: DeviceState) -> dict[str, Any]:
    # last_inform alone is not worth a write per Inform: the inventory records it anyway.
    return device.model_dump(exclude={"last_inform", "version"})


# --- Inform -----------------------------------------------------------------------------------


def on_inform(inform: InformReceived, device: DeviceState | None, open_tasks: Sequence[Task],
              policies: Sequence[Policy], tags: frozenset[str], stale_sessions: Sequence[SessionState],
              env: Env, cfg: PlanConfig, profile_input: profiles.ProfileInput | None = None) -> Decision:
    """Plan the first batch of a session. ``open_tasks``: the device's pending, in_progress and
    pending_completion tasks; ``stale_sessions``: its earlier sessions that never reported an end."""
    now = env.now
    first_contact = device is None
    codes = inform.event_codes()
    current = _update_from_inform(device or DeviceState(id=inform.device_id, first_seen=now), inform, now)
    w = _Work(env, cfg, current, device, open_tasks)

    # A new Inform means the device's earlier sessions are over, whatever became of them.
    for stale in stale_sessions:
        _close(w, stale, "dropped", unsent=[i for i, r in stale.rpcs.items() if not r.answered])

    _came_back(w, inform)
    leading: list[str] = []
    if BOOTSTRAP_EVENT in codes or first_contact:
        leading += _bootstrap(w, inform, forget_old_identity=not first_contact and BOOTSTRAP_EVENT in codes)

    for task in list(w.tasks.values()):
        if T.is_expired(task, now):
            w.announce(w.put(T.expire(task, now)))

    facts = DeviceFacts(oui=inform.device.oui, product_class=inform.device.product_class,
                        manufacturer=inform.device.manufacturer, software_version=w.device.software_version,
                        data_model=w.device.data_model,
                        parameters={p.name: p.value for p in inform.parameters}, tags=tags,
                        parameter_types={p.name: p.type for p in inform.parameters})
    leading += _policy_tasks(w, policies, facts, inform_events(codes, first_contact))
    if profile_input is not None:
        leading += _profile_tasks(w, inform, profile_input, tags, inform_events(codes, first_contact),
                                  bootstrapped=BOOTSTRAP_EVENT in codes,
                                  discover=BOOTSTRAP_EVENT in codes or first_contact)

    queued = sorted((t for t in w.tasks.values() if T.is_due(t, now) and t.id not in leading),
                    key=lambda t: (t.created_at, t.id))
    session = SessionState(session_id=inform.session_id, device_id=inform.device_id,
                           gateway_id=inform.gateway_id, reply_to=inform.reply_to,
                           task_ids=[*leading, *(t.id for t in queued)], created_at=now, updated_at=now)
    planned, more = _build_batch(w, session)
    plan = _plan(session, inform.event_id, planned, more)
    return w.decision(session=session if planned else None, plan=plan,
                      ended_sessions=[s.session_id for s in stale_sessions])


def _came_back(w: _Work, inform: InformReceived) -> None:
    """A Reboot is done when the device boots with its CommandKey, a FactoryReset when it bootstraps."""
    codes = inform.event_codes()
    keys = {e.command_key for e in inform.events if e.code == REBOOT_EVENT}
    for task in list(w.tasks.values()):
        if task.status is not S.PENDING_COMPLETION:
            continue
        if (task.name == "reboot" and BOOT_EVENT in codes and task.command_key in keys) or \
                (task.name == "factoryReset" and BOOTSTRAP_EVENT in codes):
            _finish(w, task, {**task.result, "back_at": w.now.isoformat(),
                              "events": sorted(codes & {BOOT_EVENT, BOOTSTRAP_EVENT, REBOOT_EVENT})})


def _update_from_inform(device: DeviceState, inform: InformReceived, now: Any) -> DeviceState:
    values = {p.name: p.value for p in inform.parameters}
    root = prov.detect_data_model(values) or device.data_model
    updates: dict[str, Any] = {
        "oui": inform.device.oui, "product_class": inform.device.product_class,
        "serial_number": inform.device.serial_number, "manufacturer": inform.device.manufacturer,
        "last_inform": now, "data_model": root,
    }
    if root:
        ms = f"{root}ManagementServer."
        # Forced inform parameters (checklist T25/T27): the freshest word on where to reach the CPE.
        for param, attribute in ((f"{ms}ConnectionRequestURL", "connection_request_url"),
                                 (f"{ms}UDPConnectionRequestAddress", "udp_connection_request_address"),
                                 (f"{ms}ConnReqJabberID", "xmpp_jid"),
                                 (f"{root}DeviceInfo.SoftwareVersion", "software_version")):
            if param in values:
                updates[attribute] = values[param] or None
        # Annex G: whether the CPE found its STUN mapping to differ from its own address.
        if f"{ms}NATDetected" in values:
            updates["nat_detected"] = values[f"{ms}NATDetected"].strip().lower() in ("true", "1")
    return device.model_copy(update=updates)


def _bootstrap(w: _Work, inform: InformReceived, *, forget_old_identity: bool) -> list[str]:
    """Re-registration: forget the old identity's pending work and cache, provision afresh."""
    if forget_old_identity:
        # Transfers this very Inform reports on (7 TRANSFER COMPLETE + M Download) still settle:
        # some CPEs bootstrap after a configuration download (checklist F7).
        reported = {e.command_key for e in inform.events if e.code.startswith("M ") and e.command_key}
        for task in list(w.tasks.values()):
            if task.open and not (task.status is S.PENDING_COMPLETION and task.command_key in reported):
                w.announce(w.put(T.cancel(task, w.now, "the device bootstrapped (0 BOOTSTRAP): work queued "
                                                       "for its previous identity was dropped")))
    values = [p.name for p in inform.parameters]
    w.update_device({
        "bootstrapped_at": w.now,
        "stun_enabled": False,  # until this bootstrap's STUN SetParameterValues succeeds
        "data_model": prov.detect_data_model(values),
        "pending_cr_username": f"cr-{w.env.new_secret()[:16]}",
        "pending_cr_password": w.env.new_secret(),
        **prov.pending_cpe_credentials(w.device.id, w.env.new_secret, w.cfg),
    })
    if not w.cfg.bootstrap_provisioning:
        return []
    busy = [t for t in w.tasks.values() if t.name == steps.BOOTSTRAP_TASK and t.open]
    if busy:
        return [busy[0].id]
    task = w.new_task(steps.BOOTSTRAP_TASK, {"subtrees": list(w.cfg.discovery_subtrees),
                                             "parameter_key": "bootstrap"}, origin="bootstrap")
    return [task.id]


def _policy_tasks(w: _Work, policies: Sequence[Policy], facts: DeviceFacts, events: set[str]) -> list[str]:
    ids: list[str] = []
    for policy in due_policies(policies, facts, events):
        # One round of a policy at a time: while its tasks are open, a new Inform adds nothing.
        if any(t.policy_id == policy.id and t.open for t in w.tasks.values()):
            continue
        for spec in policy.tasks:
            task = w.new_task(spec.name, dict(spec.args), origin=f"policy:{policy.name}", policy_id=policy.id)
            ids.append(task.id)
    return ids


def _profile_tasks(w: _Work, inform: InformReceived, given: profiles.ProfileInput, tags: frozenset[str],
                   events: set[str], *, bootstrapped: bool, discover: bool = False) -> list[str]:
    """The profiles' difference for this device as tasks (see profiles.decide), and its new profile state."""
    d = w.device
    fields: dict[str, Any] = {"id": d.id, "oui": d.oui, "product_class": d.product_class,
                              "serial_number": d.serial_number, "manufacturer": d.manufacturer,
                              "software_version": d.software_version, "tags": sorted(tags)}
    document = device_document(fields, ((p.name, p.value, p.type) for p in inform.parameters))
    out = profiles.decide(given.profiles, document, {**fields, "device_id": d.id, "tags": tags}, d.data_model,
                          profiles.ProfileState(d.profile_applied, d.profile_status, d.profile_failed),
                          {p.name: (p.value, p.type) for p in inform.parameters}, given.variables, events,
                          list(w.tasks.values()), w.now, bootstrap=bootstrapped)
    w.update_device({"profile_applied": out.state.applied, "profile_status": out.state.status,
                     "profile_failed": out.state.failed})
    w.events.extend(out.events)
    ids = [w.new_task(name, args, origin=profiles.PROFILE_ORIGIN).id for name, args in out.tasks]
    ids += [w.new_task(spec.name, dict(spec.args), origin=origin, policy_id=action_id).id
            for action_id, origin, spec in out.actions]
    if discover:
        ids += _discovery_tasks(w, out.effective)
    return ids


def _discovery_tasks(w: _Work, eff: profiles.Effective) -> list[str]:
    """At bootstrap: the walks the profiles' ``discovery`` asks for beyond the bootstrap's own
    subtrees, level by level with the usual walker (bounded per plan and per walk)."""
    root = w.device.data_model
    if eff.discover_full:
        paths: list[tuple[str, int | None]] = [(root or "", FULL_DISCOVERY_DEPTH)]
    else:
        walked = tuple((root or "") + sub for sub in w.cfg.discovery_subtrees) if w.cfg.bootstrap_provisioning else ()
        paths = [(p, None) for p in eff.discover if not p.startswith(walked)]
    open_paths = {t.args.get("parameter_path") for t in w.tasks.values()
                  if t.origin == PROFILE_DISCOVERY_ORIGIN and t.open}
    ids: list[str] = []
    for path, depth in paths:
        if path in open_paths:
            continue
        args: dict[str, Any] = {"parameter_path": path, "read_values": True, **({"depth": depth} if depth else {})}
        ids.append(w.new_task("getParameterNames", args, origin=PROFILE_DISCOVERY_ORIGIN, max_attempts=2).id)
    return ids


# --- building a batch -------------------------------------------------------------------------


def _build_batch(w: _Work, session: SessionState) -> tuple[list[PlannedRpc], bool]:
    """The next plan's RPCs, and whether more may follow them. Called when no answer is due."""
    planned: list[PlannedRpc] = []
    open_steps = False
    mine = [w.tasks[i] for i in session.task_ids if i in w.tasks]

    for task in mine:
        if task.status is S.IN_PROGRESS and task.session_id == session.session_id \
                and not task.progress.get("outstanding"):
            step = steps.proceed(task, w.ctx())
            open_steps |= _apply_step(w, session, task, step, planned)

    deferred = False
    for task in mine:
        task = w.tasks[task.id]
        if not T.is_due(task, w.now) or task.name in steps.TERMINAL_KINDS:
            continue
        if len(planned) >= w.cfg.max_rpcs_per_plan:
            deferred = True
            continue
        open_steps |= _start(w, session, task, planned)

    current = [w.tasks[t.id] for t in mine]
    terminal = [t for t in current if t.name in steps.TERMINAL_KINDS and T.is_due(t, w.now)]
    if terminal:
        busy = planned or any(t.status is S.IN_PROGRESS and t.session_id == session.session_id
                              for t in current)
        if busy:
            deferred = True
        else:
            # One at a time: the CPE reboots or resets once the session is over.
            open_steps |= _start(w, session, terminal[0], planned)
            deferred = len(terminal) > 1

    return planned, open_steps or deferred


def _start(w: _Work, session: SessionState, task: Task, planned: list[PlannedRpc]) -> bool:
    task = T.start(task, session.session_id, w.now)
    if task.name in steps.COMMAND_KEY_KINDS:
        task = task.model_copy(update={"command_key": steps.command_key(task)})
    try:
        step = steps.start(task, w.ctx())
    except (KeyError, TypeError, ValueError) as exc:
        # Stored args that cannot make an RPC will not get better by waiting.
        failed = w.put(T.fail(task, w.now, f"cannot build the RPC: {exc}"))
        w.announce(failed)
        return False
    wrong = _wrong_root(w.device, [n for out in step.rpcs for n in out.names])
    if wrong:
        # A TR-181 name for a TR-098 device (or the other way): no session will ever fix it.
        w.walks.discard(steps.walk_id(task))
        w.announce(w.put(T.fail(task, w.now, wrong)))
        return False
    return _apply_step(w, session, task, step, planned)


def _wrong_root(device: DeviceState, names: Iterable[str]) -> str:
    """Why ``names`` cannot exist on ``device`` (they use the other data model's root), or ""."""
    root = device.data_model
    if root not in (TR098_ROOT, TR181_ROOT):
        return ""
    other = TR181_ROOT if root == TR098_ROOT else TR098_ROOT
    bad = [n for n in names if n.startswith(other)]
    if not bad:
        return ""
    return (f"wrong data model root: {bad[0]!r} is a {other} name but the device uses {root} "
            f"({len(bad)} such name{'s' if len(bad) > 1 else ''})")


def _apply_step(w: _Work, session: SessionState, task: Task, step: steps.Step,
                planned: list[PlannedRpc]) -> bool:
    """Register a step's RPCs in the session; finish the task if it has none. True if more may follow."""
    keys = []
    for out in step.rpcs:
        rpc_id = w.env.new_id()
        session.rpcs[rpc_id] = RpcRef(task_id=task.id, key=out.key, method=str(out.rpc["method"]),
                                      attempt=task.attempts, names=out.names[:50])
        planned.append(PlannedRpc(rpc_id=rpc_id, rpc=out.rpc))
        keys.append(out.key)
    w.update_device(step.device_updates)
    task = task.model_copy(update={"progress": {**step.progress, "outstanding": keys, "final": step.final},
                                   "result": step.result if step.result is not None else task.result})
    if not keys:
        _finish(w, task)
        return False
    w.put(task)
    return not step.final


def _finish(w: _Work, task: Task, result: dict[str, Any] | None = None) -> None:
    walk = steps.walk_of(task)
    if walk is not None:
        w.assemble[task.id] = walk  # its parameters are in its items: the service adds them
    done = w.put(T.succeed(task, w.now, result))
    w.announce(done)
    if done.name in ("download", "scheduleDownload") and done.args.get("file_type") in FIRMWARE_FILE_TYPES:
        # After a TransferComplete, the Inform just before it carried the new SoftwareVersion;
        # after a DownloadResponse with Status 0, only the file's own metadata knows it.
        to = w.device.software_version if "transfer" in done.result else done.args.get("version")
        w.events.append(DeviceEvent(kind="firmware_upgraded", device_id=done.device_id, details={
            "task_id": done.id, "file_name": done.args.get("file_name"),
            "from": task.progress.get("software_version_before"), "to": to}))


def _plan(session: SessionState, in_reply_to: str, planned: list[PlannedRpc], more: bool) -> SessionPlan:
    session.batch = [p.rpc_id for p in planned]
    session.more = more and bool(planned)
    session.plans += 1
    session.last_in_reply_to = in_reply_to
    session.last_plan = [p.model_dump() for p in planned]
    return SessionPlan(device_id=session.device_id, session_id=session.session_id,
                       gateway_id=session.gateway_id, in_reply_to=in_reply_to, rpcs=planned,
                       more=session.more)


def replay(session: SessionState) -> SessionPlan:
    """The last plan again, for an event Kafka delivered twice."""
    return SessionPlan(device_id=session.device_id, session_id=session.session_id,
                       gateway_id=session.gateway_id, in_reply_to=session.last_in_reply_to or "",
                       rpcs=[PlannedRpc.model_validate(p) for p in session.last_plan], more=session.more)


# --- answers ----------------------------------------------------------------------------------


def on_response(event: RpcResponseReceived, session: SessionState, device: DeviceState,
                session_tasks: Sequence[Task], env: Env, cfg: PlanConfig,
                walks: Mapping[str, Sequence[dict[str, Any]]] | None = None) -> Decision:
    """``walks``: per walk of the session's tasks, its next queued RPC items (see provisioning)."""
    w = _Work(env, cfg, device, device, session_tasks, walks)
    ref = session.rpcs.get(event.rpc_id)
    if ref is None or ref.answered:
        return _duplicate(w, session, event.event_id)
    _answered(session, event.rpc_id, ref)
    task = _live(w, session, ref)
    if task is not None:
        absorbed = steps.absorb(task, ref.key, event.rpc, w.ctx())
        w.update_device(absorbed.device_updates)
        progress = _done_key(absorbed.progress, ref.key)
        task = task.model_copy(update={"result": absorbed.result, "progress": progress})
        if absorbed.outcome == "pending_completion":
            wait = cfg.reboot_timeout if task.name in steps.TERMINAL_KINDS else cfg.download_timeout
            deadline = w.now + timedelta(seconds=wait + absorbed.extra_wait)
            w.put(T.await_completion(task, w.now, deadline))
        elif absorbed.outcome == "succeeded":
            _finish(w, task)
        else:
            _maybe_finish(w, task)
    return _after_answer(w, session, event.event_id)


def on_fault(event: RpcFaultReceived, session: SessionState, device: DeviceState,
             session_tasks: Sequence[Task], env: Env, cfg: PlanConfig,
             open_heals: Sequence[Task] = (), walks: Mapping[str, Sequence[dict[str, Any]]] | None = None,
             ) -> Decision:
    """``open_heals``: the device's open self-heal tasks (needed when the fault is a 9005)."""
    w = _Work(env, cfg, device, device, session_tasks, walks)
    for healer in open_heals:
        w.tasks.setdefault(healer.id, healer)
    ref = session.rpcs.get(event.rpc_id)
    if ref is None or ref.answered:
        return _duplicate(w, session, event.event_id)
    _answered(session, event.rpc_id, ref)
    task = _live(w, session, ref)
    if task is not None:
        fault = Fault(code=event.fault_code, string=event.fault_string, method=event.method, at=w.now,
                      parameter_faults=[pf.model_dump() for pf in event.parameter_faults])
        tolerated = steps.tolerate(task, ref.key, event.fault_code, event.fault_string)
        missing = missing_names(event, ref)
        wrong = _wrong_root(w.device, missing)
        if tolerated is not None:
            _maybe_finish(w, task.model_copy(update={"progress": _done_key(tolerated, ref.key)}))
        elif wrong:
            w.announce(w.put(T.fail(task, w.now, wrong, fault)))
        else:
            failed = w.put(T.fault_attempt(task, fault, w.now, retry_base=cfg.retry_base_seconds,
                                           retry_cap=cfg.retry_max_seconds))
            if failed.status is S.FAILED:
                w.announce(failed)
            elif missing and task.origin != HEAL_ORIGIN:
                # A self-heal walk whose own path is gone says enough: it climbs no further.
                _heal(w, session, failed, ref, missing)
    return _after_answer(w, session, event.event_id)


def missing_names(event: RpcFaultReceived, ref: RpcRef) -> list[str]:
    """The names a fault says the CPE does not have (9005): per parameter, else the RPC's own."""
    names = [pf.parameter_name for pf in event.parameter_faults if pf.fault_code == 9005]
    if names:
        return names
    return list(ref.names) if event.fault_code == 9005 else []


def _answered(session: SessionState, rpc_id: str, ref: RpcRef) -> None:
    """An answered RPC leaves the session document; its task attempt is remembered as answered."""
    del session.rpcs[rpc_id]
    attempt = f"{ref.task_id}:{ref.attempt}"
    if attempt not in session.answered:
        session.answered.append(attempt)


def _live(w: _Work, session: SessionState, ref: RpcRef) -> Task | None:
    """The task an answer is for, if that answer still matters (not cancelled, same attempt)."""
    task = w.tasks.get(ref.task_id)
    if task is None or task.status is not S.IN_PROGRESS or task.session_id != session.session_id \
            or task.attempts != ref.attempt:
        w.notes.append(f"answer to {ref.method} ignored: its task moved on")
        return None
    if "walk" in task.progress and steps.walk_of(task) is None:
        # A walk an earlier version started keeps its state in another shape: start it afresh.
        w.put(T.requeue(task, w.now, count_attempt=False))
        w.notes.append(f"answer to {ref.method} ignored: its walk was started by an earlier version")
        return None
    return task


def _done_key(progress: dict[str, Any], key: str) -> dict[str, Any]:
    outstanding = list(progress.get("outstanding", []))
    if key in outstanding:
        outstanding.remove(key)
    return {**progress, "outstanding": outstanding}


def _maybe_finish(w: _Work, task: Task) -> None:
    """All answers of the task's last step are in: it is done (a walk builds its result now)."""
    if task.progress.get("outstanding") or not task.progress.get("final"):
        w.put(task)
        return
    step = steps.proceed(task, w.ctx())
    w.update_device(step.device_updates)
    _finish(w, task.model_copy(update={"progress": step.progress}),
            step.result if step.result is not None else task.result)


def _heal(w: _Work, session: SessionState, task: Task, ref: RpcRef, missing: list[str]) -> None:
    """9005 Invalid parameter name: the data model moved, or the name never existed.

    The stale part is rediscovered by a self-heal walk of its parent; the task
    waits for that walk (``progress.heal``), which confirms each name present (the task is due
    again at once) or absent (the task fails, "no such parameter"): see :func:`on_heal_finished`.
    An open walk of the same path or of an ancestor covers a path; a device has at most
    ``MAX_OPEN_HEALS`` of them open, and walks the orchestrator made itself never heal further.
    """
    heals = [t for t in w.tasks.values() if t.origin == HEAL_ORIGIN and t.open and t.name == "getParameterNames"]
    waiting: list[str] = []
    for path in prov.heal_paths(missing):
        cover = next((h for h in heals if path.startswith(h.args.get("parameter_path", "\0"))), None)
        if cover is None:
            if len(heals) >= MAX_OPEN_HEALS:
                w.notes.append(f"9005 on {ref.method}: {MAX_OPEN_HEALS} self-heal walks already open, "
                               f"{path} is not rediscovered now")
                continue
            # One try: a walk whose own path answers 9005 has found out what it came for.
            cover = w.new_task("getParameterNames", {"parameter_path": path, "read_values": True},
                               origin=HEAL_ORIGIN, max_attempts=1)
            heals.append(cover)
            w.notes.append(f"9005 on {ref.method}: rediscovering {path}")
            if session.more:
                # The session goes on: heal in it rather than wait for the next one.
                session.task_ids.append(cover.id)
        if cover.id not in waiting:
            waiting.append(cover.id)
    if waiting:
        w.put(task.model_copy(update={"progress": {"heal": {"names": missing[:50], "waiting": waiting}}}))


def on_heal_finished(healer: Task, waiters: Sequence[Task], env: Env, cfg: PlanConfig) -> Decision:
    """A self-heal walk ended: settle the tasks that waited for it (``progress.heal``).

    Names under the walked path that the walk did not find fail their task at once ("no such
    parameter"); a walk that failed on its own path with 9005 found the whole path absent. When
    the walk confirms every name, or cannot tell (truncated, other errors, no answer), the task is
    due again at once once no other walk keeps it waiting.
    """
    dummy = DeviceState(id=healer.device_id)
    w = _Work(env, cfg, dummy, dummy, waiters)
    path = healer.args.get("parameter_path", "")
    present: set[str] | None = None  # None: the walk cannot tell
    if healer.status is S.SUCCEEDED and "parameters" in healer.result and not healer.result.get("truncated") \
            and not any(
            e.get("code") != 9005 for e in healer.result.get("errors", [])):
        present = {p["name"] for p in healer.result.get("parameters", [])} | set(healer.result.get("objects", []))
    elif healer.status is S.FAILED and healer.faults and healer.faults[-1].code == 9005:
        present = set()
    for task in waiters:
        heal = task.progress.get("heal") or {}
        if task.status is not S.PENDING or healer.id not in heal.get("waiting", []):
            continue
        names = [n for n in heal.get("names", []) if n.startswith(path)]
        absent = [n for n in names if present is not None and n not in present]
        if absent:
            reason = f"no such parameter: {', '.join(absent[:5])}" + (" ..." if len(absent) > 5 else "")
            w.announce(w.put(T.fail(task, w.now, reason)))
            continue
        left = [i for i in heal["waiting"] if i != healer.id]
        update: dict[str, Any] = {"progress": {"heal": {**heal, "waiting": left}} if left else {}}
        if not left:
            update["next_attempt_at"] = None
        w.put(task.model_copy(update=update))
    return w.decision()


def _after_answer(w: _Work, session: SessionState, event_id: str) -> Decision:
    session.updated_at = w.now
    if not session.batch_answered() or not session.more:
        return w.decision(session=session)
    planned, more = _build_batch(w, session)
    return w.decision(session=session, plan=_plan(session, event_id, planned, more))


def _duplicate(w: _Work, session: SessionState, event_id: str) -> Decision:
    # Kafka redelivered an answer we already used. If it was the one that triggered the last
    # plan, the gateway may never have seen that plan: send it again, identical.
    plan = replay(session) if session.last_in_reply_to == event_id else None
    w.notes.append("duplicate answer ignored")
    return w.decision(plan=plan)


# --- end of session ---------------------------------------------------------------------------


def on_session_ended(event: SessionEnded, session: SessionState, device: DeviceState,
                     session_tasks: Sequence[Task], env: Env, cfg: PlanConfig) -> Decision:
    w = _Work(env, cfg, device, device, session_tasks)
    unsent: Iterable[str] = event.unsent_rpc_ids
    if event.unanswered_rpc_ids is not None:
        # The gateway says exactly what the CPE was sent: anything else unanswered never left,
        # such as a plan that reached the gateway after it had given up waiting.
        sent = set(event.unanswered_rpc_ids)
        unsent = [i for i, r in session.rpcs.items() if not r.answered and i not in sent]
    _close(w, session, event.outcome, unsent=unsent)
    return w.decision(ended_sessions=[session.session_id])


def _close(w: _Work, session: SessionState, outcome: str, unsent: Iterable[str]) -> None:
    unsent = set(unsent)
    for task_id in session.task_ids:
        task = w.tasks.get(task_id)
        if task is None or task.status is not S.IN_PROGRESS or task.session_id != session.session_id:
            continue
        refs = {i: r for i, r in session.rpcs.items() if r.task_id == task_id and r.attempt == task.attempts}
        unanswered = [i for i, r in refs.items() if not r.answered]
        answered = f"{task_id}:{task.attempts}" in session.answered or any(r.answered for r in refs.values())
        if unanswered and set(unanswered) <= unsent and not answered:
            w.put(T.requeue(task, w.now, count_attempt=False))
            continue
        if any(i not in unsent for i in unanswered):
            method = next(refs[i].method for i in unanswered if i not in unsent)
            fault = Fault(code=None, string=f"session ended ({outcome}) before the CPE answered {method}",
                          method=method, at=w.now)
            moved = w.put(T.fault_attempt(task, fault, w.now, retry_base=w.cfg.retry_base_seconds,
                                          retry_cap=w.cfg.retry_max_seconds, permanent=False))
        else:
            moved = w.put(T.requeue(task, w.now, count_attempt=True))
        if moved.status is S.FAILED:
            w.announce(moved)


# --- CPE requests -----------------------------------------------------------------------------


def on_transfer_complete(event: CpeRequestReceived, device: DeviceState, task: Task | None,
                         env: Env, cfg: PlanConfig) -> Decision:
    """TransferComplete closes the Download/Upload task with its CommandKey (FaultCode 0 = success)."""
    w = _Work(env, cfg, device, device, [task] if task else [])
    transfer = rpcs.read_transfer_complete(event.rpc)
    if task is None:
        w.notes.append(f"TransferComplete for unknown CommandKey {transfer.command_key!r}")
        return w.decision()
    ok = transfer.fault_code == 0
    result = {**task.result, "transfer": {
        "fault_code": transfer.fault_code, "fault_string": transfer.fault_string,
        "start_time": transfer.start_time, "complete_time": transfer.complete_time}}
    fault = None if ok else Fault(code=transfer.fault_code, string=transfer.fault_string,
                                  method="TransferComplete", at=w.now)
    if task.status in (S.PENDING_COMPLETION, S.IN_PROGRESS):
        if ok:
            _finish(w, task.model_copy(update={"result": result}))
        else:
            failed = w.put(T.fail(task.model_copy(update={"result": result}), w.now,
                                  f"the CPE reported the transfer failed: {transfer.fault_code} "
                                  f"{transfer.fault_string}".strip(), fault))
            w.announce(failed)
    elif task.status is S.FAILED and task.reason == T.TIMEOUT_REASON:
        settled = w.put(T.settle_late_transfer(task, w.now, ok, result, fault))
        w.announce(settled)
    else:
        w.notes.append(f"TransferComplete for a {task.status.value} task ignored")
    return w.decision()


def on_du_state_change_complete(event: CpeRequestReceived, device: DeviceState, task: Task | None,
                                open_tasks: Sequence[Task], env: Env, cfg: PlanConfig) -> Decision:
    """DUStateChangeComplete settles the ChangeDUState task of its CommandKey (every operation
    without a fault = succeeded); AutonomousDUStateChangeComplete settles nothing. Either way the
    device's deployment units changed: ``software_modules_changed`` is announced with the CPE's
    results, and a walk of ``SoftwareModules.`` is queued so that the inventory records the CPE's
    own table (TR-157) in the device's next session. ``open_tasks``: the device's open tasks (one
    refresh walk at a time)."""
    w = _Work(env, cfg, device, device, [t for t in [task, *open_tasks] if t is not None])
    autonomous = event.method == "AutonomousDUStateChangeComplete"
    results = [r.public() for r in rpcs.read_du_results(event.rpc)]
    details: dict[str, Any] = {"autonomous": autonomous, "results": results[:64]}
    if task is not None and not autonomous:
        details["task_id"] = task.id
        failed = [r for r in results if r["fault_code"]]
        if task.name != "changeDUState":
            w.notes.append(f"DUStateChangeComplete for a {task.name} task ignored")
        elif task.status in (S.PENDING_COMPLETION, S.IN_PROGRESS):
            result = {**task.result, "operations": results}
            if not failed:
                _finish(w, task.model_copy(update={"result": result}))
            else:
                first = failed[0]
                fault = Fault(code=first["fault_code"], string=first["fault_string"],
                              method="DUStateChangeComplete", at=w.now)
                w.announce(w.put(T.fail(task.model_copy(update={"result": result}), w.now,
                                        f"{len(failed)} of {len(results)} operations failed; first: "
                                        f"{first['fault_code']} {first['fault_string']}".strip(), fault)))
        else:
            w.notes.append(f"DUStateChangeComplete for a {task.status.value} task ignored")
    elif not autonomous:
        w.notes.append("DUStateChangeComplete for an unknown CommandKey")
    w.events.append(DeviceEvent(kind="software_modules_changed", device_id=device.id, details=details))
    root = device.data_model
    busy = any(t.origin == SOFTWARE_MODULES_ORIGIN and t.open for t in open_tasks)
    if root and not busy:
        w.new_task("getParameterNames", {"parameter_path": f"{root}SoftwareModules.", "read_values": True},
                   origin=SOFTWARE_MODULES_ORIGIN, max_attempts=1)
    return w.decision()


def on_autonomous_transfer_complete(event: CpeRequestReceived, device: DeviceState, env: Env,
                                    cfg: PlanConfig) -> Decision:
    """A transfer the CPE made on its own: announced as ``autonomous_transfer_completed``."""
    w = _Work(env, cfg, device, device, [])
    rpc = event.rpc
    transfer = rpcs.read_transfer_complete(rpc)
    details = {"announce_url": str(rpc.get("announce_url") or ""), "transfer_url": str(rpc.get("transfer_url") or ""),
               "is_download": bool(rpc.get("is_download")), "file_type": str(rpc.get("file_type") or ""),
               "file_size": int(rpc.get("file_size") or 0),
               "target_file_name": str(rpc.get("target_file_name") or ""),
               "fault_code": transfer.fault_code, "fault_string": transfer.fault_string,
               "start_time": transfer.start_time, "complete_time": transfer.complete_time}
    w.events.append(DeviceEvent(kind="autonomous_transfer_completed", device_id=device.id, details=details))
    return w.decision()


# --- periodic sweep ---------------------------------------------------------------------------


def sweep(candidates: Iterable[Task], env: Env, stale_after: float) -> tuple[list[Task], list[DeviceEvent]]:
    """Expire queued tasks, time out transfers without TransferComplete, free orphaned tasks.

    An ``in_progress`` task is orphaned when its session vanished without a SessionEnded (a
    gateway crash) and the device has not come back since; it goes back to pending, free.
    """
    now = env.now
    changed: list[Task] = []
    events: list[DeviceEvent] = []
    for task in candidates:
        if T.is_expired(task, now):
            expired = T.expire(task, now)
            changed.append(expired)
            events.append(DeviceEvent(kind="task_expired", device_id=task.device_id, details={
                "task_id": task.id, "name": task.name, "origin": task.origin, "reason": expired.reason,
                **({"job_id": task.job_id} if task.job_id else {})}))
        elif task.status is S.PENDING_COMPLETION and task.completion_deadline is not None \
                and task.completion_deadline <= now:
            reason = {"reboot": T.REBOOT_TIMEOUT_REASON, "factoryReset": T.RESET_TIMEOUT_REASON,
                      "changeDUState": T.DU_TIMEOUT_REASON}.get(
                task.name, T.TIMEOUT_REASON)
            failed = T.time_out_completion(task, now, reason)
            changed.append(failed)
            events.append(DeviceEvent(kind="task_failed", device_id=task.device_id, details={
                "task_id": task.id, "name": task.name, "origin": task.origin, "reason": failed.reason}))
        elif task.status is S.IN_PROGRESS and task.updated_at <= now - timedelta(seconds=stale_after):
            changed.append(T.requeue(task, now, count_attempt=False))
    return changed, events
