"""How each kind of task talks to a CPE: which RPCs it sends, and what it makes of the answers.

A task runs in steps. ``start`` gives the first RPCs, ``absorb`` takes one answer, and when all
answers of a step are in, ``proceed`` gives the next RPCs (or none: the task is done). RPCs of
one step are independent of each other, so the planner can put them, and the steps of other
tasks, in the same plan. ``Step.final`` tells the planner whether more RPCs may follow, which is
what ``SessionPlan.more`` is made of. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from services.orchestrator import profiles, rpcs
from services.orchestrator import provisioning as prov
from services.orchestrator.cpecreds import forget_updates
from services.orchestrator.state import DeviceState, Env, PlanConfig
from services.orchestrator.tasks import Task

# Tasks after which the CPE goes away: planned last, when nothing else of the session is left.
TERMINAL_KINDS = frozenset({"reboot", "factoryReset"})
# Tasks whose RPC carries a CommandKey that the CPE echoes back later (M events, TransferComplete).
COMMAND_KEY_KINDS = frozenset({"reboot", "scheduleInform", "download", "upload", "scheduleDownload",
                               "changeDUState"})
# Transfers the CPE reports on later with a TransferComplete carrying the task's CommandKey.
TRANSFER_KINDS = frozenset({"download", "upload", "scheduleDownload"})
# Internal task names, created by the ACS itself and never accepted from the API.
BOOTSTRAP_TASK = "bootstrap"


@dataclass(frozen=True, slots=True)
class Outgoing:
    key: str
    rpc: dict[str, Any]
    names: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Step:
    progress: dict[str, Any]
    rpcs: list[Outgoing]
    final: bool
    result: dict[str, Any] | None = None
    device_updates: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Absorbed:
    progress: dict[str, Any]
    result: dict[str, Any]
    outcome: Literal["continue", "succeeded", "pending_completion"] = "continue"
    device_updates: dict[str, Any] = field(default_factory=dict)
    # pending_completion: seconds on top of the usual completion timeout (a ScheduleDownload's windows).
    extra_wait: float = 0.0


@dataclass(frozen=True, slots=True)
class StepContext:
    env: Env
    cfg: PlanConfig
    device: DeviceState
    # The walk items of the decision (next queued RPCs loaded for it, items it writes).
    walks: prov.WalkBuffer = field(default_factory=prov.WalkBuffer)


def command_key(task: Task) -> str:
    """Unique per attempt and at most 32 characters (TR-069 CommandKey is string(32))."""
    return f"{task.id[:24]}.{task.attempts}"


# --- single-RPC tasks -------------------------------------------------------------------------


def _one(key: str, rpc: dict[str, Any], names: list[str] | None = None) -> Step:
    return Step(progress={}, rpcs=[Outgoing(key, rpc, names or [])], final=True)


def _single_rpc(task: Task, ctx: StepContext) -> Step:
    a = task.args
    match task.name:
        case "setParameterValues":
            values = [rpcs.Value(v["name"], v["value"], v["type"]) for v in a["parameter_values"]]
            return _one("spv", rpcs.set_parameter_values(values, a.get("parameter_key", "")),
                        [v.name for v in values])
        case "deleteObject":
            return _one("delete", rpcs.delete_object(a["object_name"], a.get("parameter_key", "")),
                        [a["object_name"]])
        case "getParameterAttributes":
            return _one("gpa", rpcs.get_parameter_attributes(a["parameter_names"]), a["parameter_names"])
        case "setParameterAttributes":
            return _one("spa", rpcs.set_parameter_attributes(a["parameters"]),
                        [p["name"] for p in a["parameters"]])
        case "reboot":
            return _one("reboot", rpcs.reboot(task.command_key or command_key(task)))
        case "factoryReset":
            return _one("reset", rpcs.factory_reset())
        case "getRPCMethods":
            return _one("methods", rpcs.get_rpc_methods())
        case "scheduleInform":
            return _one("schedule", rpcs.schedule_inform(a["delay_seconds"], task.command_key or ""))
        case "download":
            username, password = ctx.env.mint_credentials(a["file_name"], task.device_id)
            rpc = rpcs.download(command_key=task.command_key or "", file_type=a["file_type"], url=a["url"],
                                username=username, password=password, file_size=int(a.get("file_size") or 0),
                                target_file_name=a.get("target_file_name", ""),
                                delay_seconds=int(a.get("delay_seconds", 0)))
            # Remembered for the firmware_upgraded event ("from" version) once the transfer completes.
            progress = {"software_version_before": ctx.device.software_version}
            return Step(progress=progress, rpcs=[Outgoing("download", rpc)], final=True)
        case "upload":
            name = f"{task.device_id}/{task.command_key}"
            username, password = ctx.env.mint_credentials(name, task.device_id)
            rpc = rpcs.upload(command_key=task.command_key or "", file_type=a["file_type"],
                              url=ctx.env.upload_url(name), username=username, password=password,
                              delay_seconds=int(a.get("delay_seconds", 0)))
            return Step(progress={"upload_name": name}, rpcs=[Outgoing("upload", rpc)], final=True)
        case "scheduleDownload":
            username, password = ctx.env.mint_credentials(a["file_name"], task.device_id)
            rpc = rpcs.schedule_download(command_key=task.command_key or "", file_type=a["file_type"],
                                         url=a["url"], username=username, password=password,
                                         file_size=int(a.get("file_size") or 0), time_windows=a["time_windows"],
                                         target_file_name=a.get("target_file_name", ""))
            progress = {"software_version_before": ctx.device.software_version}
            return Step(progress=progress, rpcs=[Outgoing("schedule_download", rpc)], final=True)
        case "cancelTransfer":
            return _one("cancel_transfer", rpcs.cancel_transfer(a["command_key"]))
        case "getQueuedTransfers":
            return _one("queued", rpcs.get_queued_transfers())
        case "getAllQueuedTransfers":
            return _one("queued", rpcs.get_all_queued_transfers())
        case "changeDUState":
            operations = []
            for op in a["operations"]:
                op = dict(op)
                if op.get("file_name"):
                    # The unit is a fileserver file: one-off credentials, as for a Download.
                    op["username"], op["password"] = ctx.env.mint_credentials(op["file_name"], task.device_id)
                operations.append(op)
            return _one("du", rpcs.change_du_state(operations, task.command_key or ""))
    raise ValueError(f"unknown task name {task.name!r}")


def _absorb_single(task: Task, key: str, response: dict[str, Any], ctx: StepContext) -> Absorbed:
    result = dict(task.result)
    match key:
        case "spv" | "delete":
            result["status"] = rpcs.read_status(response)
        case "gpa":
            attributes = rpcs.read_attributes(response)
            result["parameters"] = [{"name": n, **attrs} for n, attrs in attributes.items()]
        case "methods":
            result["methods"] = rpcs.read_method_list(response)
        case "reboot":
            result["command_key"] = task.command_key
            # Done when the device is back: 1 BOOT + M Reboot <key>.
            return Absorbed(progress=task.progress, result=result, outcome="pending_completion")
        case "reset":
            # Done when the device is back with 0 BOOTSTRAP. A factory-fresh CPE knows only the
            # shared pair again: its own credentials go.
            return Absorbed(progress=task.progress, result=result, outcome="pending_completion",
                            device_updates=forget_updates(ctx.device))
        case "schedule":
            result["command_key"] = task.command_key
        case "download" | "upload":
            status = rpcs.read_status(response)
            result.update(status=status, command_key=task.command_key,
                          start_time=response.get("start_time"), complete_time=response.get("complete_time"))
            if key == "upload":
                result["file_name"] = task.progress.get("upload_name")
            # Status 1: accepted, the CPE reports the outcome later in a TransferComplete.
            outcome: Literal["succeeded", "pending_completion"] = (
                "pending_completion" if status == 1 else "succeeded")
            return Absorbed(progress=task.progress, result=result, outcome=outcome)
        case "schedule_download":
            # No Status: the CPE always reports the outcome later, in a TransferComplete, at the
            # latest after its last window closes.
            result["command_key"] = task.command_key
            last_end = max((int(w["window_end"]) for w in task.args.get("time_windows", [])), default=0)
            return Absorbed(progress=task.progress, result=result, outcome="pending_completion",
                            extra_wait=float(last_end))
        case "cancel_transfer":
            result["cancelled"] = task.args["command_key"]
        case "queued":
            result["transfers"] = rpcs.read_queued_transfers(response)
        case "du":
            # Done when the CPE's DUStateChangeComplete with this CommandKey arrives.
            result["command_key"] = task.command_key
            return Absorbed(progress=task.progress, result=result, outcome="pending_completion")
    return Absorbed(progress=task.progress, result=result)


# --- getParameterValues: independent batches -------------------------------------------------


def _gpv_start(task: Task, ctx: StepContext) -> Step:
    names = task.args["parameter_names"]
    size = ctx.cfg.gpv_batch_size
    batches = [names[i:i + size] for i in range(0, len(names), size)]
    return Step(progress={}, rpcs=[Outgoing(f"gpv:{i}", rpcs.get_parameter_values(b), b)
                                   for i, b in enumerate(batches)], final=True)


def _gpv_absorb(task: Task, key: str, response: dict[str, Any], ctx: StepContext) -> Absorbed:
    found = [{"name": n, **v} for n, v in rpcs.read_values(response).items()]
    result = {"parameters": [*task.result.get("parameters", []), *found]}
    return Absorbed(progress=task.progress, result=result)


# --- addObject, optionally followed by values for the new instance ---------------------------


def _add_start(task: Task, ctx: StepContext) -> Step:
    a = task.args
    rpc = rpcs.add_object(a["object_name"], a.get("parameter_key", ""))
    then_set = bool(a.get("parameter_values"))
    return Step(progress={}, rpcs=[Outgoing("add", rpc, [a["object_name"]])], final=not then_set)


def _add_absorb(task: Task, key: str, response: dict[str, Any], ctx: StepContext) -> Absorbed:
    result = dict(task.result)
    if key == "add":
        number = rpcs.read_instance_number(response)
        result.update(instance_number=number, status=rpcs.read_status(response),
                      object=f"{task.args['object_name']}{number}." if number is not None else None)
    else:
        result["set_status"] = rpcs.read_status(response)
    return Absorbed(progress=task.progress, result=result)


def _add_proceed(task: Task, ctx: StepContext) -> Step:
    instance = task.result.get("object")
    if not instance or task.progress.get("values_sent"):
        return Step(progress=task.progress, rpcs=[], final=True)
    values = [rpcs.Value(instance + v["name"], v["value"], v["type"]) for v in task.args["parameter_values"]]
    return Step(progress={**task.progress, "values_sent": True},
                rpcs=[Outgoing("spv", rpcs.set_parameter_values(values, task.args.get("parameter_key", "")),
                               [v.name for v in values])], final=True)


# --- profileObjects: object instances identified by key parameters (profiles.plan_objects) ----
#
# Read each table (GetParameterValues of its path), then in one step: SetParameterValues on the
# instances that match, AddObject for the missing ones, DeleteObject for the unwanted ones; then
# the keys and values of the new instances. The instance number of an AddObject is recorded in
# the device state (``profile_applied["+" + entry id]``) with its answer, before anything else is
# planned: a retry, or the next session, uses that instance instead of creating another.

PROFILE_OBJECTS_TASK = "profileObjects"


def created_instances(device: DeviceState) -> dict[str, str]:
    return {k[1:]: v for k, v in device.profile_applied.items() if k.startswith("+")}


def _objects_start(task: Task, ctx: StepContext) -> Step:
    paths = sorted({o["path"] for o in task.args["objects"]})
    return Step(progress={"phase": "read", "paths": paths, "tables": {}},
                rpcs=[Outgoing(f"read:{i}", rpcs.get_parameter_values([p]), [p]) for i, p in enumerate(paths)],
                final=False)


def _objects_absorb(task: Task, key: str, response: dict[str, Any], ctx: StepContext) -> Absorbed:
    progress, result = dict(task.progress), dict(task.result)
    updates: dict[str, Any] = {}
    if key.startswith("read:"):
        path = progress["paths"][int(key[5:])]
        wanted = {n for o in task.args["objects"] if o["path"] == path for n, _, _ in (*o["keys"], *o["values"])}
        found = {n: (v["value"], v["type"]) for n, v in rpcs.read_values(response).items()}
        # Only the names the entries compare: a table of 64 rows stays a few kilobytes.
        tables = profiles.table_instances(path, found)
        progress["tables"] = {**progress["tables"], path: {
            i: {n: list(v) for n, v in row.items() if n in wanted} for i, row in tables.items()}}
    elif key.startswith("add:"):
        entry_id = key[4:]
        number = rpcs.read_instance_number(response)
        entry = next(o for o in task.args["objects"] if o["id"] == entry_id)
        if number is not None:
            instance = f"{entry['path']}{number}."
            progress["created"] = {**progress.get("created", {}), entry_id: instance}
            updates["profile_applied"] = {**ctx.device.profile_applied, "+" + entry_id: instance}
            result["objects"] = [*result.get("objects", []), {"created": instance}]
        result["add_status"] = max(int(result.get("add_status", 0)), rpcs.read_status(response))
    elif key.startswith("del:"):
        result["objects"] = [*result.get("objects", []), {"deleted": progress["deleting"][int(key[4:])]}]
    else:  # spv, fill
        result["status"] = max(int(result.get("status", 0)), rpcs.read_status(response))
    return Absorbed(progress=progress, result=result, device_updates=updates)


def _objects_proceed(task: Task, ctx: StepContext) -> Step:
    progress = dict(task.progress)
    entries = task.args["objects"]
    key = task.args.get("parameter_key", "")
    if progress["phase"] == "read":
        tables = {p: {i: {n: (v[0], v[1]) for n, v in row.items()} for i, row in t.items()}
                  for p, t in progress["tables"].items()}
        ops = profiles.plan_objects(entries, tables, created_instances(ctx.device))
        out: list[Outgoing] = []
        if ops.set_values:
            values = [rpcs.Value(n, v, t) for n, v, t in ops.set_values]
            out.append(Outgoing("spv", rpcs.set_parameter_values(values, key), [v.name for v in values]))
        by_id = {o["id"]: o for o in entries}
        out += [Outgoing(f"add:{i}", rpcs.add_object(by_id[i]["path"], key), [by_id[i]["path"]]) for i in ops.add]
        out += [Outgoing(f"del:{n}", rpcs.delete_object(p, key), [p]) for n, p in enumerate(ops.delete)]
        progress.update(phase="change", tables={}, adding=ops.add, deleting=ops.delete)
        return Step(progress=progress, rpcs=out, final=not ops.add)
    if progress["phase"] == "change" and progress.get("created"):
        by_id = {o["id"]: o for o in entries}
        values = [rpcs.Value(instance + n, v, t) for entry_id, instance in progress["created"].items()
                  for n, v, t in (*by_id[entry_id]["keys"], *by_id[entry_id]["values"])]
        progress["phase"] = "fill"
        return Step(progress=progress, rpcs=[Outgoing("fill", rpcs.set_parameter_values(values, key),
                                                      [v.name for v in values])], final=True)
    return Step(progress=progress, rpcs=[], final=True)


# --- getParameterNames: refresh a subtree with a walk -----------------------------------------


def walk_id(task: Task) -> str:
    """One walk per attempt: a retried walk starts from scratch, its old items are left to expire."""
    return f"{task.id}:{task.attempts}"


def _walk_start(task: Task, ctx: StepContext) -> Step:
    # A CPE that cannot answer NextLevel=true (quirk gpn_next_level=false) is asked for each
    # path's whole subtree at once (NextLevel=false) instead of level by level.
    whole = ctx.env.quirks(ctx.device).gpn_next_level is False
    walk, items = prov.walk_begin(walk_id(task), [task.args.get("parameter_path", "")], ctx.cfg,
                                  whole_subtrees=whole, read_values=task.args.get("read_values", True),
                                  depth=task.args.get("depth"))
    ctx.walks.add(items)
    return _walk_step(task, {"walk": walk}, ctx)


def _walk_step(task: Task, progress: dict[str, Any], ctx: StepContext) -> Step:
    control = progress["walk"]
    walk, out, final, items = prov.walk_next(control, ctx.walks.upcoming(control["id"], control["taken"]), ctx.cfg)
    ctx.walks.add(items)
    progress = {**progress, "walk": walk}
    if out:
        return Step(progress=progress, rpcs=[Outgoing(k, r, n) for k, r, n in out], final=final)
    return Step(progress=progress, rpcs=[], final=True, result={**task.result, **prov.walk_summary(walk)})


def _walk_absorb(task: Task, key: str, response: dict[str, Any], ctx: StepContext) -> Absorbed:
    walk = task.progress["walk"]
    if key.startswith("gpn:"):
        walk, items = prov.walk_absorb_names(walk, key[4:], rpcs.read_names(response), ctx.cfg)
    else:
        walk, items = prov.walk_absorb_values(walk, rpcs.read_values(response))
    ctx.walks.add(items)
    return Absorbed(progress={**task.progress, "walk": walk}, result=task.result)


def _walk_proceed(task: Task, ctx: StepContext) -> Step:
    return _walk_step(task, task.progress, ctx)


def _below_requested_path(task: Task, key: str) -> bool:
    path = task.args.get("parameter_path", "")
    return (path == "" or path.endswith(".")) and key != f"gpn:{path}"


# --- bootstrap provisioning ------------------------------------------------------------------


def _bootstrap_start(task: Task, ctx: StepContext) -> Step:
    root = ctx.device.data_model
    if root is None:
        # Nothing in the Inform told us the data model: ask for the root object first.
        next_level = ctx.env.quirks(ctx.device).gpn_next_level is not False
        return Step(progress={"phase": "root"},
                    rpcs=[Outgoing("root", rpcs.get_parameter_names("", next_level), [""])], final=False)
    return _bootstrap_main(task, root, ctx)


def _bootstrap_main(task: Task, root: str, ctx: StepContext) -> Step:
    out: list[Outgoing] = []
    username, password = ctx.device.pending_cr_username, ctx.device.pending_cr_password
    if username and password:
        values = prov.bootstrap_values(root, username, password, ctx.cfg)
        out.append(Outgoing("spv", rpcs.set_parameter_values(values, task.args.get("parameter_key", "")),
                            [v.name for v in values]))
    cpe_username, nonce = ctx.device.pending_cpe_username, ctx.device.pending_cpe_nonce
    if cpe_username and nonce and ctx.env.cpe_password is not None:
        values = prov.cpe_credential_values(root, cpe_username, ctx.env.cpe_password(cpe_username, nonce))
        out.append(Outgoing("cpe", rpcs.set_parameter_values(values, task.args.get("parameter_key", "")),
                            [v.name for v in values]))
    stun = prov.stun_values(root, ctx.cfg)
    if stun:
        out.append(Outgoing("stun", rpcs.set_parameter_values(stun, task.args.get("parameter_key", "")),
                            [v.name for v in stun]))
    progress: dict[str, Any] = {"phase": "main", "root": root}
    if prov.xmpp_wanted(root, ctx.cfg) and ctx.env.xmpp_password is not None:
        progress["xmpp"] = {"stage": "names"}
        out += _xmpp_rpcs(task, root, progress["xmpp"], ctx)
    walk, items = prov.walk_begin(walk_id(task), [root + sub for sub in task.args.get("subtrees", [])], ctx.cfg,
                                  whole_subtrees=True)
    ctx.walks.add(items)
    step = _walk_step(task, {**progress, "walk": walk}, ctx)
    # XMPP has steps to come after its first answer: the task is not final yet.
    return Step(progress=step.progress, rpcs=[*out, *step.rpcs],
                final=step.final and not step.rpcs and "xmpp" not in progress)


def _xmpp_rpcs(task: Task, root: str, state: dict[str, Any], ctx: StepContext) -> list[Outgoing]:
    """The RPC of the XMPP step the bootstrap is at (provisioning.py, "XMPP settings"), if any."""
    key = task.args.get("parameter_key", "")
    if state.get("stage") == "set" and ctx.env.xmpp_password is not None:
        device_id = ctx.device.id
        values = prov.xmpp_values(root, state, device_id, ctx.env.xmpp_password(device_id), ctx.cfg)
        return [Outgoing("xmpp:set", rpcs.set_parameter_values(values, key), [v.name for v in values])]
    request = prov.xmpp_request(root, state, key)
    if request is None:
        return []
    return [Outgoing(f"xmpp:{state['stage']}", request[0], request[1])]


def _bootstrap_absorb(task: Task, key: str, response: dict[str, Any], ctx: StepContext) -> Absorbed:
    progress = dict(task.progress)
    result = dict(task.result)
    updates: dict[str, Any] = {}
    if key == "root":
        root = prov.root_from_names(rpcs.read_names(response))
        progress["root"] = root
        if root:
            updates["data_model"] = root
        result["data_model"] = root
    elif key == "spv":
        # The CPE accepted the new credentials: from now on connection requests use them.
        device = ctx.device
        updates = {"cr_username": device.pending_cr_username, "cr_password": device.pending_cr_password,
                   "pending_cr_username": None, "pending_cr_password": None}
        result["connection_request_credentials"] = "set"
        result["periodic_inform_interval"] = ctx.cfg.periodic_inform_interval or None
        result["set_status"] = rpcs.read_status(response)
    elif key == "cpe":
        # The CPE took its own ACS credentials: the gateway accepts only those for it from now on.
        device = ctx.device
        updates = {"cpe_username": device.pending_cpe_username, "cpe_nonce": device.pending_cpe_nonce,
                   "pending_cpe_username": None, "pending_cpe_nonce": None}
        result["cpe_credentials"] = "set"
    elif key == "stun":
        # Annex G: the CPE will learn its UDPConnectionRequestAddress from the STUN server.
        result["stun"] = "enabled"
        updates = {"stun_enabled": True}
    elif key == "xmpp:names":
        progress["xmpp"] = prov.xmpp_found(progress["root"], rpcs.read_names(response))
    elif key in ("xmpp:add-connection", "xmpp:add-server"):
        progress["xmpp"] = prov.xmpp_added(progress["xmpp"], rpcs.read_instance_number(response))
    elif key == "xmpp:set":
        # Annex K: the CPE logs in with its new account and reports its JID (ConnReqJabberID) by
        # a value change; connection requests go over XMPP from then on.
        progress["xmpp"] = {**progress["xmpp"], "stage": "done"}
    else:
        return _walk_absorb(task, key, response, ctx)
    return Absorbed(progress=progress, result=result, device_updates=updates)


def _bootstrap_proceed(task: Task, ctx: StepContext) -> Step:
    if task.progress.get("phase") == "root":
        root = task.progress.get("root")
        if not root:
            return Step(progress=task.progress, rpcs=[], final=True,
                        result={**task.result, "error": "the CPE reported no root object"})
        return _bootstrap_main(task, root, ctx)
    step = _walk_step(task, task.progress, ctx)
    xmpp = _xmpp_rpcs(task, task.progress["root"], task.progress["xmpp"], ctx) if "xmpp" in task.progress else []
    if step.rpcs or xmpp:
        return Step(progress=step.progress, rpcs=[*xmpp, *step.rpcs], final=step.final and not xmpp)
    result = {**(step.result or {}), "data_model": task.progress.get("root")}
    if (outcome := prov.xmpp_outcome(task.progress.get("xmpp"))) is not None:
        result["xmpp"] = outcome
    return Step(progress=step.progress, rpcs=[], final=True, result=result)


# --- dispatch ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    start: Callable[[Task, StepContext], Step]
    absorb: Callable[[Task, str, dict[str, Any], StepContext], Absorbed]
    proceed: Callable[[Task, StepContext], Step] | None = None
    # Whether a fault on a step's RPC can be noted and passed over instead of failing the task.
    tolerates: Callable[[Task, str], bool] = lambda task, key: False


_SINGLE = Kind(_single_rpc, _absorb_single)
KINDS: dict[str, Kind] = {
    "getParameterValues": Kind(_gpv_start, _gpv_absorb),
    "getParameterNames": Kind(_walk_start, _walk_absorb, _walk_proceed,
                              # Below the requested path, a vanished object is no reason to fail.
                              tolerates=lambda task, key: _below_requested_path(task, key)),
    "addObject": Kind(_add_start, _add_absorb, _add_proceed),
    PROFILE_OBJECTS_TASK: Kind(_objects_start, _objects_absorb, _objects_proceed),
    BOOTSTRAP_TASK: Kind(_bootstrap_start, _bootstrap_absorb, _bootstrap_proceed,
                         # A CPE that will not change its ACS credentials keeps the shared pair:
                         # noted in the result's errors, the rest of the bootstrap goes on.
                         # Likewise a CPE without STUN (a fault on "stun"): it stays on HTTP/XMPP,
                         # and one without XMPP (a fault on an "xmpp:" step): it stays on HTTP/UDP.
                         tolerates=lambda task, key: key.startswith(("gpn:", "gpv:", "xmpp:"))
                         or key in ("cpe", "stun")),
    **{name: _SINGLE for name in ("setParameterValues", "deleteObject", "getParameterAttributes",
                                  "setParameterAttributes", "reboot", "factoryReset", "getRPCMethods",
                                  "scheduleInform", "download", "upload", "scheduleDownload",
                                  "cancelTransfer", "getQueuedTransfers", "getAllQueuedTransfers",
                                  "changeDUState")},
}


def start(task: Task, ctx: StepContext) -> Step:
    return KINDS[task.name].start(task, ctx)


def absorb(task: Task, key: str, response: dict[str, Any], ctx: StepContext) -> Absorbed:
    return KINDS[task.name].absorb(task, key, response, ctx)


def proceed(task: Task, ctx: StepContext) -> Step:
    kind = KINDS[task.name]
    if kind.proceed is None:
        return Step(progress=task.progress, rpcs=[], final=True)
    return kind.proceed(task, ctx)


def walk_of(task: Task) -> dict[str, Any] | None:
    """The control state of the task's walk, if it runs one."""
    walk = task.progress.get("walk")
    return walk if isinstance(walk, dict) and "id" in walk else None


def tolerate(task: Task, key: str, code: int | None, string: str) -> dict[str, Any] | None:
    """New progress when the task can carry on despite a fault on ``key``, else None."""
    if not KINDS[task.name].tolerates(task, key) or "walk" not in task.progress:
        return None
    progress = {**task.progress, "walk": prov.walk_skip(task.progress["walk"], key, code, string)}
    if key.startswith("xmpp:") and "xmpp" in progress:
        progress["xmpp"] = prov.xmpp_refused(key.removeprefix("xmpp:"), code, string)
    return progress
