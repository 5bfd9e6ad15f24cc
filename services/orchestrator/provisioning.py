"""Bootstrap provisioning and data-model discovery, as pure functions.

On ``0 BOOTSTRAP`` (or the first contact of a device we do not know) the ACS gives the CPE
unique connection request credentials and the periodic inform settings, then learns the parts of
its data model operators care about: GetParameterNames of each configured subtree (NextLevel=false,
one round trip), then GetParameterValues in batches. Refreshing an arbitrary subtree on request
walks it with NextLevel=true, level by level, at most ``walk_fanout`` RPCs per plan.

The walk state survives between the Kafka round trips of one session: a small control dict in
``task.progress`` and items of their own (see below). Names are stored in lists, not as document
keys, because parameter names contain dots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from services.orchestrator import rpcs
from services.orchestrator.state import TR098_ROOT, TR181_ROOT, PlanConfig


def detect_data_model(names: Iterable[str]) -> str | None:
    """The data model root from the Inform's parameter names: TR-098 or TR-181 (None if unknown)."""
    for name in names:
        if name.startswith(TR098_ROOT):
            return TR098_ROOT
        if name.startswith(TR181_ROOT):
            return TR181_ROOT
    return None


def root_from_names(names: Iterable[str]) -> str | None:
    """The root object out of a GetParameterNames("", NextLevel=true) answer."""
    objects = [name for name in names if name.endswith(".") and name.count(".") == 1]
    for preferred in (TR181_ROOT, TR098_ROOT):
        if preferred in objects:
            return preferred
    return objects[0] if objects else None


def bootstrap_values(root: str, username: str, password: str, cfg: PlanConfig) -> list[rpcs.Value]:
    """SetParameterValues of the bootstrap: connection request credentials and periodic informs."""
    ms = f"{root}ManagementServer."
    values = [rpcs.Value(f"{ms}ConnectionRequestUsername", username),
              rpcs.Value(f"{ms}ConnectionRequestPassword", password)]
    if cfg.periodic_inform_interval > 0:
        values += [rpcs.Value(f"{ms}PeriodicInformEnable", "true", "xsd:boolean"),
                   rpcs.Value(f"{ms}PeriodicInformInterval", str(cfg.periodic_inform_interval),
                              "xsd:unsignedInt")]
    return values


def stun_values(root: str, cfg: PlanConfig) -> list[rpcs.Value]:
    """SetParameterValues turning STUN on (TR-069 Annex G), or nothing when the ACS has no STUN server.

    A separate RPC, for the same all-or-nothing reason as :func:`cpe_credential_values`: a CPE without
    STUN (9005 on STUNEnable) keeps its connection request credentials. STUNUsername/STUNPassword go
    only when configured: a CPE with an empty STUNUsername sends no MESSAGE-INTEGRITY.
    """
    if not cfg.stun_server:
        return []
    ms = f"{root}ManagementServer."
    values = [rpcs.Value(f"{ms}STUNEnable", "true", "xsd:boolean"),
              rpcs.Value(f"{ms}STUNServerAddress", cfg.stun_server),
              rpcs.Value(f"{ms}STUNServerPort", str(cfg.stun_port), "xsd:unsignedInt")]
    if cfg.stun_username:
        values += [rpcs.Value(f"{ms}STUNUsername", cfg.stun_username),
                   rpcs.Value(f"{ms}STUNPassword", cfg.stun_password)]
    values += [rpcs.Value(f"{ms}STUNMinimumKeepAlivePeriod", str(cfg.stun_min_keepalive), "xsd:unsignedInt"),
               rpcs.Value(f"{ms}STUNMaximumKeepAlivePeriod", str(cfg.stun_max_keepalive), "xsd:int")]
    return values


# --- XMPP settings of the CPE (TR-069 Annex K, TR-181 Device.XMPP.) ------------------------------
#
# Bootstrap gives a TR-181 CPE an XMPP account on the operator's XMPP server and points its
# connection requests at it, in up to four steps of one session, each waiting for the last:
#   names          GetParameterNames Device.XMPP.Connection. (NextLevel=false): what exists;
#   add-connection AddObject Device.XMPP.Connection. when the CPE has no connection yet;
#   add-server     AddObject Device.XMPP.Connection.{i}.Server. when that connection has no server;
#   set            one SetParameterValues: the account, the server, ConnReqXMPPConnection and
#                  ConnReqAllowedJabberIDs (its own RPC: a refusal leaves the other bootstrap
#                  settings in place).
# A fault on any step (9005: no Device.XMPP.) ends it as "refused"; the bootstrap goes on. The CPE
# registers its account in-band on the XMPP server (prosody with allow_registration), or the
# operator creates the accounts beforehand (docs/orchestrator.md).
XMPP_RESOURCE = "cwmp"
_JID_LOCAL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def xmpp_wanted(root: str, cfg: PlanConfig) -> bool:
    """Whether bootstrap provisions XMPP: the ACS has an XMPP server for CPEs and the CPE is TR-181."""
    return bool(cfg.xmpp_cpe_server and cfg.xmpp_cpe_domain) and root == TR181_ROOT


def xmpp_username(device_id: str) -> str:
    """The localpart of the device's JID: ``cpe-`` and its id, lowercased, in characters every XMPP
    server takes; an id that had to be changed for that gets a digest of itself, so that two
    devices never share an account."""
    lowered = device_id.lower()
    safe = "".join(c if c in _JID_LOCAL_SAFE else "_" for c in lowered)
    if safe != lowered:
        safe += "-" + hashlib.sha256(device_id.encode()).hexdigest()[:8]
    return f"cpe-{safe}"


def xmpp_request(root: str, state: Mapping[str, Any], parameter_key: str) -> tuple[dict[str, Any], list[str]] | None:
    """The RPC of the XMPP step ``state`` is at (and the names it touches), or None when it is over.
    ``set`` is built by :func:`xmpp_values`, which needs the password."""
    stage = state.get("stage")
    connections = f"{root}XMPP.Connection."
    if stage == "names":
        return rpcs.get_parameter_names(connections, False), [connections]
    if stage == "add-connection":
        return rpcs.add_object(connections, parameter_key), [connections]
    if stage == "add-server":
        servers = f"{connections}{state['connection']}.Server."
        return rpcs.add_object(servers, parameter_key), [servers]
    return None


def xmpp_found(root: str, names: Iterable[str]) -> dict[str, Any]:
    """The next XMPP step after the names under Device.XMPP.Connection.: reuse the connection of the
    lowest instance number (and its lowest server), add what is missing."""
    prefix = f"{root}XMPP.Connection."
    connections: dict[int, set[int]] = {}
    for name in names:
        parts = name[len(prefix):].split(".") if name.startswith(prefix) else []
        if parts and parts[0].isdigit():
            servers = connections.setdefault(int(parts[0]), set())
            if len(parts) > 2 and parts[1] == "Server" and parts[2].isdigit():
                servers.add(int(parts[2]))
    if not connections:
        return {"stage": "add-connection"}
    connection = min(connections)
    if not connections[connection]:
        return {"stage": "add-server", "connection": connection}
    return {"stage": "set", "connection": connection, "server": min(connections[connection])}


def xmpp_added(state: Mapping[str, Any], instance: int | None) -> dict[str, Any]:
    """The next XMPP step after an AddObject answered ``instance``."""
    if instance is None:
        return {**state, "stage": "refused", "reason": "AddObject answered no instance number"}
    if state["stage"] == "add-connection":
        # A CPE may create a server row with the connection; the names step of the next bootstrap
        # would reuse it, this one adds its own.
        return {"stage": "add-server", "connection": instance}
    return {**state, "stage": "set", "server": instance}


def xmpp_refused(step: str, code: int | None, string: str) -> dict[str, Any]:
    """The XMPP state after the CPE faulted ``step``: over, and why."""
    return {"stage": "refused", "reason": f"fault {code} on {step}: {string}"[:200]}


def xmpp_values(root: str, state: Mapping[str, Any], device_id: str, password: str,
                cfg: PlanConfig) -> list[rpcs.Value]:
    """The SetParameterValues of the ``set`` step: the account on the connection, the server,
    the connection requests pointed at it, and only the ACS allowed to send them."""
    connection = f"{root}XMPP.Connection.{state['connection']}"
    server = f"{connection}.Server.{state['server']}."
    host, _, port = cfg.xmpp_cpe_server.rpartition(":")
    ms = f"{root}ManagementServer."
    return [
        rpcs.Value(f"{connection}.Username", xmpp_username(device_id)),
        rpcs.Value(f"{connection}.Password", password),
        rpcs.Value(f"{connection}.Domain", cfg.xmpp_cpe_domain),
        rpcs.Value(f"{connection}.Resource", XMPP_RESOURCE),
        rpcs.Value(f"{connection}.ServerConnectAlgorithm", "ServerTable"),
        rpcs.Value(f"{server}ServerAddress", host.strip("[]")),
        rpcs.Value(f"{server}Port", port, "xsd:unsignedInt"),
        rpcs.Value(f"{server}Enable", "true", "xsd:boolean"),
        rpcs.Value(f"{connection}.Enable", "true", "xsd:boolean"),
        # TR-181 references name the object without its trailing dot.
        rpcs.Value(f"{ms}ConnReqXMPPConnection", connection),
        rpcs.Value(f"{ms}ConnReqAllowedJabberIDs", cfg.xmpp_acs_jid),
    ]


def xmpp_outcome(state: Mapping[str, Any] | None) -> str | None:
    """What the bootstrap's result says about XMPP: provisioned, refused (why), or nothing."""
    if not state:
        return None
    if state.get("stage") == "done":
        return "provisioned"
    if state.get("stage") == "refused":
        return f"refused: {state.get('reason', 'fault')}"
    return None


def cpe_credential_values(root: str, username: str, password: str) -> list[rpcs.Value]:
    """SetParameterValues of the device's own ACS credentials (ManagementServer.Username/Password).

    A separate RPC from :func:`bootstrap_values`: SetParameterValues is all or nothing, and a CPE
    that refuses to change its ACS credentials should still get its connection request ones.
    """
    ms = f"{root}ManagementServer."
    return [rpcs.Value(f"{ms}Username", username), rpcs.Value(f"{ms}Password", password)]


def pending_cpe_credentials(device_id: str, new_secret: Callable[[], str], cfg: PlanConfig) -> dict[str, Any]:
    """Device updates that mint the device's own ACS credentials at bootstrap (if configured).

    The username is the device id (TR-069 3.4.4's convention, so the gateway can tell whose they
    are); the password is derived from a fresh nonce when the RPC is built, never stored.
    """
    if not cfg.provision_cpe_credentials:
        return {}
    return {"pending_cpe_username": device_id, "pending_cpe_nonce": new_secret()}


def parent_path(name: str) -> str:
    """``A.B.C`` -> ``A.B.``; ``A.B.3.`` -> ``A.B.``; a root (``A.``) has no parent: ``""``."""
    trimmed = name[:-1] if name.endswith(".") else name
    cut = trimmed.rfind(".")
    return trimmed[: cut + 1] if cut >= 0 else ""


def heal_paths(names: Iterable[str], limit: int = 3) -> list[str]:
    """Parent paths to rediscover after a 9005 on ``names``: never a root, at most ``limit``."""
    out: list[str] = []
    for name in names:
        parent = parent_path(name)
        if parent.count(".") >= 2 and parent not in out:
            out.append(parent)
        if len(out) >= limit:
            break
    return out


# --- the GetParameterNames walk -------------------------------------------------------------
#
# A walk's state is split so that no write grows with the data model:
#
# - ``control`` (in ``task.progress["walk"]``): counters, cursors, the last errors and fewer than
#   ``gpv_batch_size`` names waiting for a GetParameterValues. Small, whatever the model's size.
# - items (collection ``orchestrator_walks``, written as the decision's ``walk_writes``):
#   ``rpc`` items, the queue of RPCs still to send (``seq`` = position), and ``rec`` items, what
#   each answer found (names and writability, objects, values). One answer adds items in
#   proportion to that answer, never the whole walk.
#
# A plan takes at most ``walk_fanout`` queued RPCs of a walk (GetParameterNames and
# GetParameterValues alike); the rest follow in the next plans. The result is built from the
# ``rec`` items once the walk is over (see :func:`walk_result`).

WALK_ITEM_RPC = "rpc"
WALK_ITEM_RECORD = "rec"


class WalkBuffer:
    """The walk items a decision sees: those loaded for it (the next queued RPCs of each walk)
    plus those it writes itself. Pure bookkeeping; the service loads and writes them."""

    def __init__(self, loaded: Mapping[str, Sequence[dict[str, Any]]] | None = None) -> None:
        self.queue: dict[str, list[dict[str, Any]]] = {k: list(v) for k, v in (loaded or {}).items()}
        self.writes: list[dict[str, Any]] = []

    def add(self, items: Iterable[dict[str, Any]]) -> None:
        for item in items:
            self.writes.append(item)
            if item["type"] == WALK_ITEM_RPC:
                self.queue.setdefault(item["walk"], []).append(item)

    def discard(self, walk_id: str) -> None:
        """Forget the items of a walk that will not run after all."""
        self.queue.pop(walk_id, None)
        self.writes = [i for i in self.writes if i["walk"] != walk_id]

    def upcoming(self, walk_id: str, from_seq: int) -> list[dict[str, Any]]:
        return sorted((i for i in self.queue.get(walk_id, []) if i["seq"] >= from_seq), key=lambda i: i["seq"])

    def records(self, walk_id: str) -> list[dict[str, Any]]:
        return [i for i in self.writes if i["walk"] == walk_id and i["type"] == WALK_ITEM_RECORD]


def _rpc_item(control: dict[str, Any], kind: str, names: list[str]) -> dict[str, Any]:
    seq = control["queued"]
    control["queued"] = seq + 1
    return {"_id": f"{control['id']}:q{seq}", "walk": control["id"], "type": WALK_ITEM_RPC, "seq": seq,
            "kind": kind, "names": names}


def _record(control: dict[str, Any], **fields: Any) -> dict[str, Any]:
    seq = control["records"]
    control["records"] = seq + 1
    return {"_id": f"{control['id']}:r{seq}", "walk": control["id"], "type": WALK_ITEM_RECORD, "seq": seq,
            **fields}


def walk_begin(walk_id: str, paths: Iterable[str], cfg: PlanConfig, *, whole_subtrees: bool = False,
               read_values: bool = True, depth: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start a walk of ``paths``: its control state and its first items.

    ``whole_subtrees`` asks each path with NextLevel=false: one round trip returns the subtree.
    Right for small subtrees known in advance (bootstrap's DeviceInfo., ManagementServer.): a
    level-by-level walk of the same subtrees costs about ten Kafka round trips per device, which
    a fleet booting at once turns into a queue. Unknown or large subtrees are walked level by
    level, so that no single answer gets too big for the CPE (checklist Q10). ``depth``: how many
    levels below the shallowest path are walked (default ``walk_max_depth``).
    """
    paths = list(dict.fromkeys(paths))
    frontier = [p for p in paths if p == "" or p.endswith(".")]
    # A full parameter name has nothing to walk: read it directly.
    leaves = [p for p in paths if p and not p.endswith(".")]
    shallowest = min((p.count(".") for p in frontier), default=0)
    control: dict[str, Any] = {
        "id": walk_id, "queued": 0, "taken": 0, "records": 0, "gpns": 0, "parameters": 0, "objects": 0,
        "buffer": [], "truncated": False, "errors": [], "max_dots": shallowest + (depth or cfg.walk_max_depth),
        "next_level": not whole_subtrees, "read_values": read_values}
    items = [_rpc_item(control, "gpn", [path]) for path in frontier]
    if leaves:
        items += _found(control, {name: False for name in leaves}, [], cfg)
    return control, items


def _found(control: dict[str, Any], leaves: Mapping[str, bool], objects: list[str],
           cfg: PlanConfig) -> list[dict[str, Any]]:
    """Record what one answer found, and queue the reads of its values (batches of gpv_batch_size)."""
    room = max(0, cfg.walk_max_parameters - control["parameters"])
    names = list(leaves)
    if len(names) > room:
        names = names[:room]
        control["truncated"] = True
    control["parameters"] += len(names)
    control["objects"] += len(objects)
    items: list[dict[str, Any]] = []
    if names or objects:
        items.append(_record(control, params=[[n, leaves[n]] for n in names], objects=objects))
    if control["read_values"] and names:
        buffer = [*control["buffer"], *names]
        size = cfg.gpv_batch_size
        while len(buffer) >= size:
            items.append(_rpc_item(control, "gpv", buffer[:size]))
            buffer = buffer[size:]
        control["buffer"] = buffer
    return items


def walk_next(control: dict[str, Any], upcoming: Sequence[dict[str, Any]], cfg: PlanConfig,
              ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any], list[str]]], bool, list[dict[str, Any]]]:
    """The walk's next RPCs as (key, rpc, names), whether none will follow them, and new items.

    ``upcoming``: the queued RPC items from ``control["taken"]`` on, in order (at least the next
    ``walk_fanout`` of them, or all that are left).
    """
    control = dict(control)
    items: list[dict[str, Any]] = []
    out: list[tuple[str, dict[str, Any], list[str]]] = []
    by_seq = {i["seq"]: i for i in upcoming}
    if control["taken"] >= control["queued"] and control["buffer"]:
        # Nothing else queued: read the names still waiting for a batch to fill.
        flush = _rpc_item(control, "gpv", control["buffer"])
        control["buffer"] = []
        items.append(flush)
        by_seq[flush["seq"]] = flush
    more_names = False
    while len(out) < cfg.walk_fanout and control["taken"] < control["queued"]:
        item = by_seq.get(control["taken"])
        if item is None:
            raise ValueError(f"walk {control['id']}: queued RPC {control['taken']} was not loaded")
        control["taken"] += 1
        if item["kind"] == "gpn":
            if control["gpns"] >= cfg.walk_max_rpcs:
                control["truncated"] = True
                continue
            control["gpns"] += 1
            more_names = True
            path = item["names"][0]
            out.append((f"gpn:{path}", rpcs.get_parameter_names(path, control["next_level"]), [path]))
        else:
            out.append((f"gpv:{item['seq']}", rpcs.get_parameter_values(item["names"]), item["names"]))
    if not more_names and control["taken"] >= control["queued"] and control["buffer"] and len(out) < cfg.walk_fanout:
        # No GetParameterNames is out, so no name will join the names still waiting: read them
        # in this plan rather than one round trip later (a bootstrap's walk is then two plans).
        flush = _rpc_item(control, "gpv", control["buffer"])
        control["buffer"] = []
        control["taken"] += 1
        items.append(flush)
        out.append((f"gpv:{flush['seq']}", rpcs.get_parameter_values(flush["names"]), flush["names"]))
    final = not more_names and control["taken"] >= control["queued"] and not control["buffer"]
    return control, out, final, items


def walk_absorb_names(control: dict[str, Any], path: str, names: Mapping[str, bool],
                      cfg: PlanConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Take one GetParameterNames answer for ``path``: the new items it makes."""
    control = dict(control)
    depth = path.count(".")
    under = {name: w for name, w in names.items() if name.startswith(path) and name != path}
    # Some CPEs ignore NextLevel=true and send the whole subtree: then there is nothing left to
    # walk below this path, and walking its objects again would only repeat the same answer.
    whole_subtree = any(name.rstrip(".").count(".") > depth for name in under)
    objects = [name for name in under if name.endswith(".")]
    leaves = {name: w for name, w in under.items() if not name.endswith(".")}
    items = _found(control, leaves, objects, cfg)
    if not whole_subtree:
        items += [_rpc_item(control, "gpn", [name]) for name in objects if name.count(".") <= control["max_dots"]]
    return control, items


def walk_absorb_values(control: dict[str, Any], values: Mapping[str, Mapping[str, str]],
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    control = dict(control)
    found = [[name, v["value"], v["type"]] for name, v in values.items()]
    return control, ([_record(control, values=found)] if found else [])


def walk_skip(state: dict[str, Any], key: str, code: int | None, string: str) -> dict[str, Any]:
    """A subtree or batch the CPE refused: note it and carry on with the rest."""
    state = dict(state)
    state["errors"] = [*state["errors"], {"rpc": key, "code": code, "string": string}][-20:]
    return state


def walk_summary(control: dict[str, Any]) -> dict[str, Any]:
    """What the walk's result says before its items are read (counts, truncation, errors)."""
    result: dict[str, Any] = {}
    if control["truncated"]:
        result["truncated"] = True
    if control["errors"]:
        result["errors"] = control["errors"]
    return result


def walk_result(control: dict[str, Any], records: Iterable[dict[str, Any]], inline_limit: int,
                ) -> dict[str, Any]:
    """The result of a finished walk from its ``rec`` items.

    At most ``inline_limit`` parameters go into the task's result; a bigger walk's result says
    how many it found and where they are (``parameters_stored``: the API reads them from there).
    """
    result = walk_summary(control)
    if control["parameters"] > inline_limit:
        result.update(parameters_count=control["parameters"], objects_count=control["objects"],
                      parameters_stored=control["id"])
        return result
    parameters, objects = walk_parameters(records)
    result.update(parameters=parameters, objects=objects)
    return result


def walk_parameters(records: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    writable: dict[str, bool] = {}
    values: dict[str, tuple[str, str]] = {}
    objects: list[str] = []
    for record in sorted(records, key=lambda r: r["seq"]):
        writable.update((name, w) for name, w in record.get("params", []))
        objects += record.get("objects", [])
        values.update((name, (value, vtype)) for name, value, vtype in record.get("values", []))
    parameters = []
    for name in sorted(set(writable) | set(values)):
        entry: dict[str, Any] = {"name": name, "writable": writable.get(name, False)}
        if name in values:
            entry["value"], entry["type"] = values[name]
        parameters.append(entry)
    return parameters, sorted(set(objects))
