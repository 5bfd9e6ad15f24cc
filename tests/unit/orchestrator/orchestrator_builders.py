"""Builders for the orchestrator's pure tests: events as the gateway would publish them and a
deterministic environment (clock, ids, secrets)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from services.bus.events import (
    CpeRequestReceived,
    DeviceEvent,
    DeviceIdentity,
    InformEventCode,
    InformReceived,
    ParameterValue,
    RpcFaultReceived,
    RpcResponseReceived,
    SessionEnded,
    SessionPlan,
    SetParameterValuesFaultEntry,
)
from services.orchestrator import planner, steps
from services.orchestrator import provisioning as prov
from services.orchestrator.planner import Decision
from services.orchestrator.policies import Policy
from services.orchestrator.state import DeviceState, Env, PlanConfig, SessionState
from services.orchestrator.tasks import Task

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DEVICE = "09D021-IGD%20Simulator-000000000012"
IGD = "InternetGatewayDevice."
SEED_PARAMETERS = {
    f"{IGD}DeviceInfo.SpecVersion": "1.0",
    f"{IGD}DeviceInfo.HardwareVersion": "3.0",
    f"{IGD}DeviceInfo.SoftwareVersion": "Rev 1.9.82.342.17",
    f"{IGD}DeviceInfo.ProvisioningCode": "WKSS",
    f"{IGD}ManagementServer.ConnectionRequestURL": "http://A:10016/",
    f"{IGD}ManagementServer.ParameterKey": "",
    f"{IGD}WANDevice.1.WANConnectionDevice.1.WANPPPConnection.1.ExternalIPAddress": "10.10.6.56",
}


class Clock:
    def __init__(self) -> None:
        self.now = T0
        self._ids = itertools.count(1)
        self._secrets = itertools.count(1)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def env(self) -> Env:
        return Env(now=self.now, new_id=lambda: f"id{next(self._ids):04d}",
                   new_secret=lambda: f"secret{next(self._secrets):04d}xxxxxxxxxxxxxxxx",
                   mint_credentials=lambda file, device: (f"dl-user-{file}", "dl-pass"),
                   upload_url=lambda name: f"http://files.test/upload/{name}",
                   xmpp_password=lambda device_id: f"xmpp-secret-of-{device_id}")


def small_config(**changes: Any) -> PlanConfig:
    """Small batches so that a handful of parameters already needs several RPCs."""
    values: dict[str, Any] = dict(gpv_batch_size=2, periodic_inform_interval=300, download_timeout=600,
                                  retry_base_seconds=60, retry_max_seconds=600)
    values.update(changes)
    return PlanConfig(**values)


# What every message of the session carries (services.bus.events.SessionRef).
REF = {"device_id": DEVICE, "reply_to": "cwmp.replies:3", "gateway_id": "gw-1"}


def inform(*codes: str | tuple[str, str], parameters: dict[str, str] | None = None,
           session: str = "s1", device: str = DEVICE) -> InformReceived:
    events = [InformEventCode(code=c) if isinstance(c, str) else InformEventCode(code=c[0], command_key=c[1])
              for c in codes]
    params = SEED_PARAMETERS if parameters is None else parameters
    identity = DeviceIdentity(manufacturer="Workssys", oui="09D021", product_class="IGD Simulator",
                              serial_number="000000000012")
    return InformReceived(**{**REF, "device_id": device}, session_id=session, device=identity, events=events,
                          parameters=[ParameterValue(name=n, value=v) for n, v in params.items()])


def response(rpc_id: str, rpc: dict[str, Any], session: str = "s1") -> RpcResponseReceived:
    return RpcResponseReceived(**REF, session_id=session, rpc_id=rpc_id, method=rpc["method"], rpc=rpc)


def fault(rpc_id: str, code: int, string: str = "", method: str = "GetParameterValues",
          parameter_faults: Iterable[tuple[str, int]] = (), session: str = "s1") -> RpcFaultReceived:
    entries = [SetParameterValuesFaultEntry(parameter_name=n, fault_code=c) for n, c in parameter_faults]
    return RpcFaultReceived(**REF, session_id=session, rpc_id=rpc_id, method=method, fault_code=code,
                            fault_string=string, parameter_faults=entries)


def ended(outcome: str = "completed", unsent: Iterable[str] = (), session: str = "s1",
          unanswered: Iterable[str] | None = None) -> SessionEnded:
    return SessionEnded(**REF, session_id=session, outcome=outcome, unsent_rpc_ids=list(unsent),  # type: ignore[arg-type]
                        unanswered_rpc_ids=None if unanswered is None else list(unanswered))


def transfer_complete(command_key: str, code: int = 0, string: str = "") -> CpeRequestReceived:
    return CpeRequestReceived(**REF, session_id="s2", method="TransferComplete",
                              rpc={"method": "TransferComplete", "command_key": command_key,
                                   "fault_struct": {"fault_code": code, "fault_string": string},
                                   "start_time": "2016-06-02T22:49:10-04:00",
                                   "complete_time": "2016-06-02T22:49:10-04:00"})


def gpv_response(values: dict[str, str]) -> dict[str, Any]:
    return {"method": "GetParameterValuesResponse",
            "parameter_list": [{"name": n, "value": {"value": v, "type": "xsd:string"}} for n, v in values.items()]}


def gpn_response(names: dict[str, bool]) -> dict[str, Any]:
    return {"method": "GetParameterNamesResponse",
            "parameter_list": [{"name": n, "writable": w} for n, w in names.items()]}


def make_task(name: str, args: dict[str, Any], *, task_id: str = "task1", created: datetime = T0,
              **fields: Any) -> Task:
    return Task(**{"id": task_id, "device_id": DEVICE, "name": name, "args": args, "created_at": created,
                   "updated_at": created, **fields})


class Harness:
    """Applies planner decisions to in-memory state, exactly as the service applies them to MongoDB."""

    def __init__(self, clock: Clock, cfg: PlanConfig, policies: Iterable[Policy] = (),
                 tags: frozenset[str] = frozenset()) -> None:
        self.clock, self.cfg = clock, cfg
        self.policies = list(policies)
        self.tags = tags
        self.device: DeviceState | None = None
        self.tasks: dict[str, Task] = {}
        self.sessions: dict[str, SessionState] = {}
        self.events: list[DeviceEvent] = []
        self.notes: list[str] = []
        self.walk_items: dict[str, dict[str, Any]] = {}
        self.profile_input: Any = None  # profiles.ProfileInput, when a test uses profiles

    def add(self, task: Task) -> Task:
        self.tasks[task.id] = task
        return task

    def apply(self, decision: Decision) -> SessionPlan | None:
        # As Engine._commit: finished walks get their result from their items, then all is written.
        for item in decision.walk_writes:
            self.walk_items.setdefault(item["_id"], item)
        for i, task in enumerate(decision.tasks):
            if (walk := decision.assemble.get(task.id)) is not None:
                records = [it for it in self.walk_items.values() if it["walk"] == walk["id"] and it["type"] == "rec"]
                result = {**task.result, **prov.walk_result(walk, records, self.cfg.walk_result_inline)}
                decision.tasks[i] = task.model_copy(update={"result": result})
        if decision.device is not None:
            self.device = decision.device
        for task in [*decision.tasks, *decision.new_tasks]:
            self.tasks[task.id] = task
        if decision.session is not None:
            self.sessions[decision.session.session_id] = decision.session
        for ended_id in decision.ended_sessions:
            self.sessions.pop(ended_id, None)
        self.events += decision.events
        self.notes += decision.notes
        for task in decision.tasks:  # as Engine._commit does: a finished self-heal settles its waiters
            if task.origin == planner.HEAL_ORIGIN and not task.open:
                waiters = [t for t in self.tasks.values() if task.id in (t.progress.get("heal") or {}).get(
                    "waiting", []) and t.status.value == "pending"]
                if waiters:
                    self.apply(planner.on_heal_finished(task, waiters, self.clock.env(), self.cfg))
        return decision.plan

    def inform(self, event: InformReceived) -> SessionPlan:
        stale = [s for sid, s in self.sessions.items() if sid != event.session_id]
        open_tasks = [t for t in self.tasks.values() if t.open]
        plan = self.apply(planner.on_inform(event, self.device, open_tasks, self.policies, self.tags, stale,
                                            self.clock.env(), self.cfg, self.profile_input))
        assert plan is not None, "every Inform must be answered with a plan"
        return plan

    def _session_tasks(self, session: SessionState) -> list[Task]:
        return [self.tasks[i] for i in session.task_ids if i in self.tasks]

    def _walks(self, session: SessionState) -> dict[str, list[dict[str, Any]]]:
        """The next queued RPC items of the session's walks, as Engine._upcoming_walk_rpcs loads them."""
        out: dict[str, list[dict[str, Any]]] = {}
        for task in self._session_tasks(session):
            walk = steps.walk_of(task)
            if walk is not None and task.open:
                queued = sorted((i for i in self.walk_items.values() if i["walk"] == walk["id"]
                                 and i["type"] == "rpc" and i["seq"] >= walk["taken"]), key=lambda i: i["seq"])
                out[walk["id"]] = queued[:self.cfg.walk_fanout]
        return out

    def respond(self, rpc_id: str, rpc: dict[str, Any], session: str = "s1") -> SessionPlan | None:
        state = self.sessions[session]
        assert self.device is not None
        return self.apply(planner.on_response(response(rpc_id, rpc, session), state, self.device,
                                              self._session_tasks(state), self.clock.env(), self.cfg,
                                              self._walks(state)))

    def fault(self, rpc_id: str, code: int, session: str = "s1", **kwargs: Any) -> SessionPlan | None:
        state = self.sessions[session]
        assert self.device is not None
        heals = [t for t in self.tasks.values() if t.origin == planner.HEAL_ORIGIN and t.open]
        return self.apply(planner.on_fault(fault(rpc_id, code, session=session, **kwargs), state, self.device,
                                           self._session_tasks(state), self.clock.env(), self.cfg, heals,
                                           self._walks(state)))

    def end(self, outcome: str = "completed", unsent: Iterable[str] = (), session: str = "s1",
            unanswered: Iterable[str] | None = None) -> None:
        state = self.sessions[session]
        assert self.device is not None
        self.apply(planner.on_session_ended(ended(outcome, unsent, session, unanswered), state, self.device,
                                            self._session_tasks(state), self.clock.env(), self.cfg))

    def transfer_complete(self, command_key: str, code: int = 0, string: str = "") -> None:
        assert self.device is not None
        task = next((t for t in self.tasks.values() if t.command_key == command_key), None)
        self.apply(planner.on_transfer_complete(transfer_complete(command_key, code, string), self.device,
                                                task, self.clock.env(), self.cfg))

    def answer_all(self, plan: SessionPlan, answer: Callable[[dict[str, Any]], dict[str, Any]],
                   session: str = "s1") -> SessionPlan | None:
        """Answer every RPC of ``plan``; return the plan the last answer triggered, if any."""
        follow_up = None
        for planned in plan.rpcs:
            follow_up = self.respond(planned.rpc_id, answer(planned.rpc), session)
        return follow_up

    def task_named(self, name: str) -> Task:
        return next(t for t in self.tasks.values() if t.name == name)
