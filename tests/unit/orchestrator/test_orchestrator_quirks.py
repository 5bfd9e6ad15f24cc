"""The orchestrator's part of the per-vendor quirks: GetParameterNames walks of CPEs that cannot
answer NextLevel=true ask for whole subtrees instead (NextLevel=false), for matching devices only."""

from __future__ import annotations

import dataclasses
from typing import Any

from services.common.quirks import QuirkEntry, QuirkMatch, Quirks, select
from services.orchestrator.state import Env
from services.orchestrator.tasks import TaskStatus
from tests.unit.orchestrator.orchestrator_builders import (
    IGD,
    Clock,
    Harness,
    gpn_response,
    gpv_response,
    inform,
    make_task,
    small_config,
)

HOSTS = f"{IGD}LANDevice.1.Hosts."
TABLE = [QuirkEntry(id="q1", name="no-next-level", match=QuirkMatch(oui="09D021", product_class="IGD Simulator"),
                    quirks=Quirks(gpn_next_level=False))]


class QuirkClock(Clock):
    def __init__(self, table: list[QuirkEntry]) -> None:
        super().__init__()
        self.table = table

    def env(self) -> Env:
        def quirks_of(oui: str, product_class: str, version: str | None) -> Quirks:
            entry = select(self.table, oui, product_class, version)
            return entry.quirks if entry else Quirks()
        return dataclasses.replace(super().env(), quirks_of=quirks_of)


def _cpe(rpc: dict[str, Any]) -> dict[str, Any]:
    """A CPE with two hosts; it answers NextLevel=false with the whole subtree."""
    if rpc["method"] == "GetParameterValues":
        return gpv_response({n: "x" for n in rpc["parameter_names"]})
    path, next_level = rpc["parameter_path"], rpc["next_level"]
    tree = {f"{HOSTS}Host.": False, f"{HOSTS}Host.1.": False, f"{HOSTS}Host.1.IPAddress": False,
            f"{HOSTS}Host.2.": False, f"{HOSTS}Host.2.IPAddress": False, f"{HOSTS}HostNumberOfEntries": False}
    under = {n: w for n, w in tree.items() if n.startswith(path)}
    if next_level:
        depth = path.count(".")
        under = {n: w for n, w in under.items() if n != path and n.rstrip(".").count(".") == depth}
    return gpn_response(under)


def _walk(table: list[QuirkEntry]) -> tuple[Harness, list[dict[str, Any]]]:
    h = Harness(QuirkClock(table), small_config(gpv_batch_size=32))
    h.inform(inform("1 BOOT", session="s0"))
    for task in list(h.tasks.values()):
        h.tasks[task.id] = task.model_copy(update={"status": TaskStatus.SUCCEEDED})
    h.end(session="s0")
    h.add(make_task("getParameterNames", {"parameter_path": HOSTS}, task_id="walk"))
    plan = h.inform(inform("2 PERIODIC"))
    sent: list[dict[str, Any]] = []
    while plan is not None and plan.rpcs:
        follow = None
        for planned in plan.rpcs:
            sent.append(planned.rpc)
            follow = h.respond(planned.rpc_id, _cpe(planned.rpc))
        plan = follow
    return h, sent


def test_a_device_without_next_level_is_walked_with_whole_subtrees() -> None:
    h, sent = _walk(TABLE)
    gpns = [r for r in sent if r["method"] == "GetParameterNames"]
    assert [(r["parameter_path"], r["next_level"]) for r in gpns] == [(HOSTS, False)]
    task = h.tasks["walk"]
    assert task.status is TaskStatus.SUCCEEDED
    assert {p["name"] if isinstance(p, dict) else p[0] for p in task.result["parameters"]} >= {
        f"{HOSTS}Host.1.IPAddress", f"{HOSTS}Host.2.IPAddress"}


def test_other_devices_are_walked_level_by_level() -> None:
    other = [e.model_copy(update={"match": QuirkMatch(oui="AAAAAA")}) for e in TABLE]
    for table in (other, []):
        h, sent = _walk(table)
        gpns = [r for r in sent if r["method"] == "GetParameterNames"]
        assert gpns[0] == {"method": "GetParameterNames", "parameter_path": HOSTS, "next_level": True}
        assert len(gpns) > 1 and all(r["next_level"] for r in gpns)
        assert h.tasks["walk"].status is TaskStatus.SUCCEEDED


def test_the_root_object_is_asked_for_without_next_level_where_the_quirks_say() -> None:
    """A bootstrap whose Inform names no data model asks GetParameterNames("") for the root."""
    other = [e.model_copy(update={"match": QuirkMatch(oui="AAAAAA")}) for e in TABLE]
    for table, next_level in ((TABLE, False), (other, True)):
        h = Harness(QuirkClock(table), small_config())
        plan = h.inform(inform("0 BOOTSTRAP", "1 BOOT", parameters={"X.Unknown": "1"}))
        gpns = [p.rpc for p in plan.rpcs if p.rpc["method"] == "GetParameterNames"]
        assert gpns == [{"method": "GetParameterNames", "parameter_path": "", "next_level": next_level}]
