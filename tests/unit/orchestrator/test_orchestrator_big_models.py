"""Big data models: a walk's plans, task and session documents stay the same size whatever the
size of the model; its parameters live in walk items, not in the task."""

from __future__ import annotations

import json
from typing import Any

from services.bus.events import SessionPlan
from services.orchestrator import steps
from services.orchestrator.state import PlanConfig
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

HOSTS = f"{IGD}LANDevice.1.Hosts.Host."


def _hosts(count: int) -> Any:
    """A CPE with ``count`` host entries of 4 parameters each."""
    def answer(rpc: dict[str, Any]) -> dict[str, Any]:
        if rpc["method"] == "GetParameterValues":
            return gpv_response({n: "x" for n in rpc["parameter_names"]})
        path = rpc["parameter_path"]
        if path == HOSTS:
            return gpn_response({f"{HOSTS}{i}.": False for i in range(1, count + 1)})
        return gpn_response({f"{path}{leaf}": False for leaf in ("IPAddress", "MACAddress", "HostName", "Active")})
    return answer


def _size(document: Any) -> int:
    return len(json.dumps(document, default=str))


def _walk(count: int, cfg: PlanConfig) -> tuple[Harness, list[SessionPlan], list[int]]:
    h = Harness(Clock(), cfg)
    h.inform(inform("1 BOOT", session="s0"))
    for task in list(h.tasks.values()):
        h.tasks[task.id] = task.model_copy(update={"status": TaskStatus.SUCCEEDED})
    h.end(session="s0")
    h.add(make_task("getParameterNames", {"parameter_path": HOSTS}, task_id="walk"))
    plans = [h.inform(inform("2 PERIODIC"))]
    written: list[int] = []  # the task and session documents after each answer
    answer = _hosts(count)
    while plans[-1].rpcs:
        follow = None
        for planned in plans[-1].rpcs:
            follow = h.respond(planned.rpc_id, answer(planned.rpc))
            written.append(_size(h.tasks["walk"].to_document()) + _size(h.sessions["s1"].to_document()))
        if follow is None:
            break
        plans.append(follow)
    return h, plans, written


def test_a_walk_plans_a_bounded_number_of_rpcs_and_writes_bounded_documents() -> None:
    cfg = small_config(gpv_batch_size=32, walk_result_inline=100_000)
    small_h, small_plans, small_written = _walk(300, cfg)
    big_h, big_plans, big_written = _walk(1000, cfg)
    for h, count in ((small_h, 300), (big_h, 1000)):
        task = h.tasks["walk"]
        assert task.status is TaskStatus.SUCCEEDED
        assert len(task.result["parameters"]) == 4 * count
    assert max(len(p.rpcs) for p in big_plans) == cfg.walk_fanout
    assert max(_size(p.model_dump()) for p in big_plans) <= 1.2 * max(_size(p.model_dump()) for p in small_plans)
    # The documents written per answer while the walk runs (the last one holds the result).
    assert max(big_written[:-1]) <= 1.2 * max(small_written[:-1])


def test_a_big_walk_leaves_its_parameters_in_its_items() -> None:
    cfg = small_config(gpv_batch_size=32, walk_result_inline=100)
    h, _, _ = _walk(200, cfg)
    task = h.tasks["walk"]
    assert task.status is TaskStatus.SUCCEEDED
    walk_id = task.result["parameters_stored"]
    assert (task.result["parameters_count"], task.result["objects_count"]) == (800, 200)
    assert "parameters" not in task.result and _size(task.to_document()) < 2000
    values = [v for i in h.walk_items.values() if i["walk"] == walk_id for v in i.get("values", [])]
    assert len(values) == 800


def test_a_walk_stops_at_its_parameter_cap() -> None:
    cfg = small_config(gpv_batch_size=32, walk_max_parameters=100)
    h, _, _ = _walk(200, cfg)
    task = h.tasks["walk"]
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result["truncated"] is True and len(task.result["parameters"]) == 100


def test_a_walk_an_earlier_version_started_is_started_afresh() -> None:
    cfg = small_config()
    h = Harness(Clock(), cfg)
    h.inform(inform("1 BOOT", session="s0"))
    for task in list(h.tasks.values()):
        h.tasks[task.id] = task.model_copy(update={"status": TaskStatus.SUCCEEDED})
    h.end(session="s0")
    h.add(make_task("getParameterNames", {"parameter_path": HOSTS}, task_id="walk"))
    plan = h.inform(inform("2 PERIODIC"))
    old = {"frontier": [], "seen": [HOSTS], "leaves": [], "objects": [], "values": [], "gpns": 1,
           "values_requested": False, "truncated": False, "errors": [], "max_dots": 12, "next_level": True}
    task = h.tasks["walk"]
    h.tasks["walk"] = task.model_copy(update={"progress": {**task.progress, "walk": old}})
    follow = h.respond(plan.rpcs[0].rpc_id, _hosts(2)(plan.rpcs[0].rpc))
    back = h.tasks["walk"]
    # Given back without charging the attempt, and planned again at once in the same session.
    assert (back.status, back.attempts) == (TaskStatus.IN_PROGRESS, 1)
    assert steps.walk_of(back) is not None
    assert follow is not None and [p.rpc["parameter_path"] for p in follow.rpcs] == [HOSTS]
