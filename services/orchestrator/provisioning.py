"""Bootstrap provisioning and data-model discovery, as pure functions.

On ``0 BOOTSTRAP`` (or the first contact of a device we do not know) the ACS gives the CPE
unique connection request credentials and the periodic inform settings, then learns the parts of
its data model operators care about: GetParameterNames of each configured subtree (NextLevel=false,
one round trip), then GetParameterValues in batches. Refreshing an arbitrary subtree on request
walks it with NextLevel=true, one level per plan (every object of a level in the same plan).

The walk state is a plain JSON-able dict kept in ``task.progress`` so that it survives between
the Kafka round trips of one session. Names are stored in lists, not as document keys, because
parameter names contain dots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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


def forget_under(known: list[str], path: str) -> list[str]:
    """The discovered-name cache without ``path`` and everything below it (it went stale)."""
    return [name for name in known if not name.startswith(path)]


# --- the GetParameterNames walk -------------------------------------------------------------


def walk_begin(paths: Iterable[str], cfg: PlanConfig, *, whole_subtrees: bool = False) -> dict[str, Any]:
    """Start a walk of ``paths``.

    ``whole_subtrees`` asks each path with NextLevel=false: one round trip returns the subtree.
    Right for small subtrees known in advance (bootstrap's DeviceInfo., ManagementServer.): a
    level-by-level walk of the same subtrees costs about ten Kafka round trips per device, which
    a fleet booting at once turns into a queue. Unknown or large subtrees are walked level by
    level, so that no single answer gets too big for the CPE (checklist Q10).
    """
    paths = list(dict.fromkeys(paths))
    frontier = [p for p in paths if p == "" or p.endswith(".")]
    # A full parameter name has nothing to walk: read it directly.
    leaves = [[p, False] for p in paths if p and not p.endswith(".")]
    shallowest = min((p.count(".") for p in frontier), default=0)
    return {"frontier": frontier, "seen": list(frontier), "leaves": leaves, "objects": [],
            "values": [], "gpns": 0, "values_requested": False, "truncated": False, "errors": [],
            "max_dots": shallowest + cfg.walk_max_depth, "next_level": not whole_subtrees}


def walk_next(state: dict[str, Any], cfg: PlanConfig, *, read_values: bool,
              ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any], list[str]]], bool]:
    """The next RPCs of the walk as (key, rpc, names) and whether none will follow them."""
    state = dict(state)
    frontier = list(state["frontier"])
    if frontier and state["gpns"] >= cfg.walk_max_rpcs:
        state["truncated"] = True
        frontier = []
    if frontier:
        take = frontier[: cfg.walk_fanout]
        state["frontier"] = frontier[cfg.walk_fanout:]
        state["gpns"] += len(take)
        next_level = state.get("next_level", True)
        return state, [(f"gpn:{path}", rpcs.get_parameter_names(path, next_level), [path]) for path in take], False
    state["frontier"] = []
    if read_values and not state["values_requested"] and state["leaves"]:
        state["values_requested"] = True
        names = [name for name, _ in state["leaves"]]
        size = cfg.gpv_batch_size
        batches = [names[i:i + size] for i in range(0, len(names), size)]
        return state, [(f"gpv:{i}", rpcs.get_parameter_values(batch), batch)
                       for i, batch in enumerate(batches)], True
    return state, [], True


def walk_absorb_names(state: dict[str, Any], path: str, names: Mapping[str, bool]) -> dict[str, Any]:
    """Add one GetParameterNames answer for ``path`` to the walk."""
    state = dict(state)
    leaves = dict((name, writable) for name, writable in state["leaves"])
    seen = set(state["seen"])
    frontier = list(state["frontier"])
    objects = list(state["objects"])
    depth = path.count(".")
    under = {name: w for name, w in names.items() if name.startswith(path) and name != path}
    # Some CPEs ignore NextLevel=true and send the whole subtree: then there is nothing left to
    # walk below this path, and walking its objects again would only repeat the same answer.
    whole_subtree = any(name.rstrip(".").count(".") > depth for name in under)
    for name, writable in under.items():
        if name.endswith("."):
            if name not in seen:
                seen.add(name)
                objects.append(name)
                if not whole_subtree and name.count(".") <= state["max_dots"]:
                    frontier.append(name)
        else:
            leaves[name] = writable
    state.update(leaves=[[n, w] for n, w in leaves.items()], seen=sorted(seen), frontier=frontier,
                 objects=objects)
    return state


def walk_absorb_values(state: dict[str, Any], values: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    state = dict(state)
    state["values"] = [*state["values"], *([name, v["value"], v["type"]] for name, v in values.items())]
    return state


def walk_skip(state: dict[str, Any], key: str, code: int | None, string: str) -> dict[str, Any]:
    """A subtree or batch the CPE refused: note it and carry on with the rest."""
    state = dict(state)
    state["errors"] = [*state["errors"], {"rpc": key, "code": code, "string": string}][-20:]
    return state


def walk_result(state: dict[str, Any]) -> dict[str, Any]:
    writable = dict((name, w) for name, w in state["leaves"])
    values = {name: (value, vtype) for name, value, vtype in state["values"]}
    parameters = []
    for name in sorted(set(writable) | set(values)):
        entry: dict[str, Any] = {"name": name, "writable": writable.get(name, False)}
        if name in values:
            entry["value"], entry["type"] = values[name]
        parameters.append(entry)
    result: dict[str, Any] = {"parameters": parameters, "objects": sorted(state["objects"])}
    if state["truncated"]:
        result["truncated"] = True
    if state["errors"]:
        result["errors"] = state["errors"]
    return result


def walk_names(state: dict[str, Any]) -> list[str]:
    """Every name the walk found (objects and leaves), for the device's name cache."""
    return [*state["objects"], *(name for name, _ in state["leaves"])]
