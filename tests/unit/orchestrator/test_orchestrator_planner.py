"""Per-session planning of queued tasks: one plan per Inform, batches, ordering, dependent steps."""

from __future__ import annotations

from typing import Any

from services.orchestrator import planner
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
    response,
    small_config,
)


def _known_device(clock: Clock, cfg: PlanConfig) -> Harness:
    """A device that was provisioned already: its next Informs carry no bootstrap work."""
    h = Harness(clock, cfg)
    h.inform(inform("1 BOOT", session="s0"))
    for task in list(h.tasks.values()):
        h.tasks[task.id] = task.model_copy(update={"status": TaskStatus.SUCCEEDED})
    h.end(session="s0")
    return h


def _gpv(rpc: dict[str, Any]) -> dict[str, Any]:
    return gpv_response({name: f"v:{name}" for name in rpc["parameter_names"]})


def test_an_inform_with_nothing_due_gets_an_empty_final_plan(clock: Clock, cfg: PlanConfig) -> None:
    h = _known_device(clock, cfg)
    event = inform("2 PERIODIC")
    plan = h.inform(event)
    assert plan.rpcs == [] and plan.more is False
    assert plan.in_reply_to == event.event_id
    assert "s1" not in h.sessions  # nothing to remember about a session with nothing to do


def test_queued_values_are_read_in_batches_in_the_first_plan(clock: Clock, cfg: PlanConfig) -> None:
    h = _known_device(clock, cfg)
    names = [f"{IGD}DeviceInfo.P{i}" for i in range(5)]
    task = h.add(make_task("getParameterValues", {"parameter_names": names}))

    plan = h.inform(inform("6 CONNECTION REQUEST"))
    assert [p.rpc["parameter_names"] for p in plan.rpcs] == [names[0:2], names[2:4], names[4:]]
    assert plan.more is False
    assert h.tasks[task.id].status is TaskStatus.IN_PROGRESS and h.tasks[task.id].attempts == 1

    assert h.answer_all(plan, _gpv) is None
    done = h.tasks[task.id]
    assert done.status is TaskStatus.SUCCEEDED
    assert [p["name"] for p in done.result["parameters"]] == names
    assert done.result["parameters"][0] == {"name": names[0], "value": f"v:{names[0]}", "type": "xsd:string"}
    assert [(e.kind, e.details["task_id"]) for e in h.events] == [("task_succeeded", task.id)]


def test_tasks_run_in_creation_order_and_reboot_waits_for_the_rest(clock: Clock, cfg: PlanConfig) -> None:
    h = _known_device(clock, cfg)
    h.add(make_task("reboot", {}, task_id="a-reboot", created=clock.now))
    clock.advance(1)
    h.add(make_task("getRPCMethods", {}, task_id="b-methods", created=clock.now))
    clock.advance(1)
    h.add(make_task("setParameterValues", {"parameter_values": [
        {"name": f"{IGD}ManagementServer.PeriodicInformInterval", "value": "60", "type": "xsd:unsignedInt"}]},
        task_id="c-spv", created=clock.now))

    plan = h.inform(inform("2 PERIODIC"))
    assert [p.rpc["method"] for p in plan.rpcs] == ["GetRPCMethods", "SetParameterValues"]
    assert plan.more is True  # the Reboot is still to come in this session

    answers = {"GetRPCMethods": {"method": "GetRPCMethodsResponse", "method_list": ["Inform"]},
               "SetParameterValues": {"method": "SetParameterValuesResponse", "status": 0}}
    last = h.answer_all(plan, lambda rpc: answers[rpc["method"]])
    assert last is not None
    assert [p.rpc["method"] for p in last.rpcs] == ["Reboot"]
    assert last.rpcs[0].rpc["command_key"] == h.tasks["a-reboot"].command_key
    assert last.more is False
    assert h.tasks["b-methods"].result == {"methods": ["Inform"]}
    assert h.tasks["c-spv"].result == {"status": 0}


def test_add_object_then_set_values_on_the_new_instance(clock: Clock, cfg: PlanConfig) -> None:
    h = _known_device(clock, cfg)
    table = f"{IGD}WANDevice.1.WANConnectionDevice.1.WANPPPConnection."
    task = h.add(make_task("addObject", {"object_name": table, "parameter_key": "k1", "parameter_values": [
        {"name": "Enable", "value": "true", "type": "xsd:boolean"}]}))

    plan = h.inform(inform("2 PERIODIC"))
    assert [p.rpc for p in plan.rpcs] == [{"method": "AddObject", "object_name": table, "parameter_key": "k1"}]
    assert plan.more is True
    follow = h.respond(plan.rpcs[0].rpc_id, {"method": "AddObjectResponse", "instance_number": 3, "status": 0})
    assert follow is not None and follow.more is False
    assert follow.rpcs[0].rpc["parameter_list"] == [
        {"name": f"{table}3.Enable", "value": {"value": "true", "type": "xsd:boolean"}}]
    h.respond(follow.rpcs[0].rpc_id, {"method": "SetParameterValuesResponse", "status": 0})
    done = h.tasks[task.id]
    assert done.status is TaskStatus.SUCCEEDED
    assert done.result == {"instance_number": 3, "status": 0, "object": f"{table}3.", "set_status": 0}


def test_a_refresh_walks_the_subtree_and_reads_its_values(clock: Clock, cfg: PlanConfig) -> None:
    h = _known_device(clock, cfg)
    path = f"{IGD}WANDevice.1.WANConnectionDevice."
    task = h.add(make_task("getParameterNames", {"parameter_path": path, "read_values": True}))
    plan = h.inform(inform("2 PERIODIC"))
    assert [(p.rpc["parameter_path"], p.rpc["next_level"]) for p in plan.rpcs] == [(path, True)]
    second = h.respond(plan.rpcs[0].rpc_id, gpn_response({f"{path}1.": True}))
    assert second is not None and second.rpcs[0].rpc["parameter_path"] == f"{path}1."
    third = h.respond(second.rpcs[0].rpc_id, gpn_response({f"{path}1.WANIPConnectionNumberOfEntries": False}))
    assert third is not None and third.more is False
    assert third.rpcs[0].rpc["parameter_names"] == [f"{path}1.WANIPConnectionNumberOfEntries"]
    h.respond(third.rpcs[0].rpc_id, gpv_response({f"{path}1.WANIPConnectionNumberOfEntries": "1"}))
    result = h.tasks[task.id].result
    assert result["objects"] == [f"{path}1."]
    assert result["parameters"] == [{"name": f"{path}1.WANIPConnectionNumberOfEntries", "writable": False,
                                     "value": "1", "type": "xsd:string"}]


def test_a_cpe_that_ignores_next_level_is_not_walked_twice(clock: Clock, cfg: PlanConfig) -> None:
    h = _known_device(clock, cfg)
    path = f"{IGD}LANDevice."
    h.add(make_task("getParameterNames", {"parameter_path": path, "read_values": False}))
    plan = h.inform(inform("2 PERIODIC"))
    follow = h.respond(plan.rpcs[0].rpc_id, gpn_response({
        f"{path}1.": False, f"{path}1.LANEthernetInterfaceNumberOfEntries": False, f"{path}1.Hosts.": False}))
    assert follow is not None and follow.rpcs == []  # whole subtree came back at once: done
    assert h.task_named("getParameterNames").status is TaskStatus.SUCCEEDED


def test_work_beyond_the_plan_limit_follows_in_the_same_session(clock: Clock) -> None:
    h = _known_device(clock, small_config(max_rpcs_per_plan=2))
    for i in range(3):
        h.add(make_task("getRPCMethods", {}, task_id=f"t{i}", created=clock.now))
        clock.advance(1)
    plan = h.inform(inform("2 PERIODIC"))
    assert len(plan.rpcs) == 2 and plan.more is True
    rest = h.answer_all(plan, lambda rpc: {"method": "GetRPCMethodsResponse", "method_list": []})
    assert rest is not None and len(rest.rpcs) == 1 and rest.more is False
    assert h.tasks["t2"].status is TaskStatus.IN_PROGRESS


def test_an_expired_task_is_not_sent(clock: Clock, cfg: PlanConfig) -> None:
    h = _known_device(clock, cfg)
    task = h.add(make_task("reboot", {}, expires_at=clock.now))
    clock.advance(1)
    plan = h.inform(inform("2 PERIODIC"))
    assert plan.rpcs == []
    assert h.tasks[task.id].status is TaskStatus.EXPIRED
    (event,) = [e for e in h.events if e.details.get("task_id") == task.id]
    assert (event.kind, event.details["reason"]) == ("task_expired", "expired before the device could run it")


def test_a_redelivered_answer_changes_nothing_and_replays_the_plan_it_triggered(
        clock: Clock, cfg: PlanConfig) -> None:
    h = _known_device(clock, cfg)
    path = f"{IGD}LANDevice."
    h.add(make_task("getParameterNames", {"parameter_path": path, "read_values": False}))
    plan = h.inform(inform("2 PERIODIC"))
    rpc_id = plan.rpcs[0].rpc_id
    answer = gpn_response({f"{path}1.": False})
    first = h.respond(rpc_id, answer)
    again = h.respond(rpc_id, answer)
    assert first is not None and again is None  # a new event id: not the trigger, nothing to replay
    assert h.notes[-1] == "duplicate answer ignored"
    # The same event delivered twice gets the same plan again.
    event = response(first.rpcs[0].rpc_id, gpn_response({}))
    state = h.sessions["s1"]
    assert h.device is not None
    tasks = [h.tasks[i] for i in state.task_ids]
    once = planner.on_response(event, state, h.device, tasks, clock.env(), cfg)
    h.apply(once)
    twice = planner.on_response(event, h.sessions["s1"], h.device, [h.tasks[i] for i in state.task_ids],
                                clock.env(), cfg)
    assert once.plan is not None and twice.plan is not None
    assert twice.plan.rpcs == once.plan.rpcs and twice.plan.in_reply_to == once.plan.in_reply_to
    assert twice.tasks == [] and twice.new_tasks == []


def test_an_answer_for_a_task_cancelled_meanwhile_is_ignored(clock: Clock, cfg: PlanConfig) -> None:
    h = _known_device(clock, cfg)
    task = h.add(make_task("getRPCMethods", {}))
    plan = h.inform(inform("2 PERIODIC"))
    h.tasks[task.id] = h.tasks[task.id].model_copy(update={"status": TaskStatus.CANCELLED})
    h.respond(plan.rpcs[0].rpc_id, {"method": "GetRPCMethodsResponse", "method_list": []})
    assert h.tasks[task.id].status is TaskStatus.CANCELLED
    assert "moved on" in h.notes[-1]


def test_a_new_inform_closes_a_session_that_never_reported_its_end(clock: Clock, cfg: PlanConfig) -> None:
    h = _known_device(clock, cfg)
    task = h.add(make_task("getRPCMethods", {}))
    h.inform(inform("2 PERIODIC", session="lost"))
    assert h.tasks[task.id].attempts == 1
    plan = h.inform(inform("1 BOOT", session="s1"))
    # The lost session's RPC was never answered; we do not know it was sent: no attempt charged.
    assert h.tasks[task.id].attempts == 1 and h.tasks[task.id].session_id == "s1"
    assert [p.rpc["method"] for p in plan.rpcs] == ["GetRPCMethods"]
    assert set(h.sessions) == {"s1"}
