"""CPE faults: recorded per task, retried with backoff, healed on 9005, given up on with a reason."""

from __future__ import annotations

from datetime import timedelta

from services.bus.events import SessionPlan
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
)

NAME = f"{IGD}WANDevice.1.WANConnectionDevice.2.WANIPConnection.1.ExternalIPAddress"


def _provisioned(clock: Clock, cfg: PlanConfig) -> Harness:
    h = Harness(clock, cfg)
    h.inform(inform("1 BOOT", session="s0"))
    for task in list(h.tasks.values()):
        h.tasks[task.id] = task.model_copy(update={"status": TaskStatus.SUCCEEDED})
    h.end(session="s0")
    return h


def test_a_transient_fault_is_recorded_and_retried_with_exponential_backoff(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    task = h.add(make_task("getRPCMethods", {}))
    plan = h.inform(inform("2 PERIODIC", session="a"))
    h.fault(plan.rpcs[0].rpc_id, 9002, session="a", string="Internal error", method="GetRPCMethods")

    failed_once = h.tasks[task.id]
    assert failed_once.status is TaskStatus.PENDING
    assert [(f.code, f.string, f.method) for f in failed_once.faults] == [(9002, "Internal error", "GetRPCMethods")]
    assert failed_once.next_attempt_at == clock.now + timedelta(seconds=60)

    clock.advance(30)  # too early: the task is not offered again
    assert h.inform(inform("2 PERIODIC", session="b")).rpcs == []
    clock.advance(31)
    plan = h.inform(inform("2 PERIODIC", session="c"))
    assert [p.rpc["method"] for p in plan.rpcs] == ["GetRPCMethods"]
    h.fault(plan.rpcs[0].rpc_id, 9002, session="c", method="GetRPCMethods")
    assert h.tasks[task.id].next_attempt_at == clock.now + timedelta(seconds=120)  # doubled


def test_a_task_that_keeps_failing_stops_and_says_why(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    task = h.add(make_task("getRPCMethods", {}, max_attempts=3))
    for attempt in range(3):
        plan = h.inform(inform("2 PERIODIC", session=f"s{attempt + 1}"))
        assert len(plan.rpcs) == 1, f"attempt {attempt + 1} should be planned"
        h.fault(plan.rpcs[0].rpc_id, 9004, session=f"s{attempt + 1}", string="Resources exceeded")
        clock.advance(3600)
    done = h.tasks[task.id]
    assert done.status is TaskStatus.FAILED
    assert done.reason == "gave up after 3 attempts; last fault: 9004 Resources exceeded"
    assert len(done.faults) == 3
    assert [e.kind for e in h.events] == ["task_failed"]
    assert h.events[0].details["fault"] == {"code": 9004, "string": "Resources exceeded"}


def test_a_fault_that_asking_again_cannot_fix_fails_at_once(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    task = h.add(make_task("setParameterValues", {"parameter_values": [
        {"name": f"{IGD}DeviceInfo.ProvisioningCode", "value": "X", "type": "xsd:string"}]}))
    plan = h.inform(inform("2 PERIODIC"))
    h.fault(plan.rpcs[0].rpc_id, 9003, method="SetParameterValues", string="Invalid arguments",
            parameter_faults=[(f"{IGD}DeviceInfo.ProvisioningCode", 9008)])
    done = h.tasks[task.id]
    assert done.status is TaskStatus.FAILED
    assert "retrying would not help" in done.reason
    assert done.faults[0].parameter_faults == [
        {"parameter_name": f"{IGD}DeviceInfo.ProvisioningCode", "fault_code": 9008, "fault_string": ""}]


def test_9005_forgets_the_stale_path_and_rediscovers_its_parent(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    task = h.add(make_task("getParameterValues", {"parameter_names": [NAME]}))
    plan = h.inform(inform("2 PERIODIC"))
    h.fault(plan.rpcs[0].rpc_id, 9005, string="Invalid parameter name")

    assert h.tasks[task.id].status is TaskStatus.PENDING  # the name may come back: it waits for the walk
    healer = next(t for t in h.tasks.values() if t.origin == "self-heal")
    parent = f"{IGD}WANDevice.1.WANConnectionDevice.2.WANIPConnection.1."
    assert (healer.name, healer.args["parameter_path"], healer.status) == ("getParameterNames", parent,
                                                                           TaskStatus.PENDING)

    # The next session rediscovers the path; the parent itself is gone (9005): the name is absent,
    # the task fails at once, and healing does not climb to the grandparent.
    plan = h.inform(inform("2 PERIODIC", session="s2"))
    assert (plan.rpcs[0].rpc["method"], plan.rpcs[0].rpc["parameter_path"]) == ("GetParameterNames", parent)
    h.fault(plan.rpcs[0].rpc_id, 9005, session="s2", method="GetParameterNames")
    assert [t.args["parameter_path"] for t in h.tasks.values() if t.origin == "self-heal"] == [parent]
    done = h.tasks[task.id]
    assert (done.status, done.reason, done.attempts) == (TaskStatus.FAILED, f"no such parameter: {NAME}", 1)
    assert [e.kind for e in h.events if e.details.get("task_id") == task.id] == ["task_failed"]


def _walk_answers(h: Harness, plan: SessionPlan, names: dict[str, bool], session: str) -> SessionPlan | None:
    """Answer a self-heal walk's GetParameterNames with ``names`` and its GetParameterValues with 'x'."""
    follow: SessionPlan | None = plan
    while follow is not None and follow.rpcs:
        last = None
        for planned in follow.rpcs:
            rpc = planned.rpc
            if rpc["method"] == "GetParameterNames":
                path = rpc["parameter_path"]
                answer = gpn_response({n: w for n, w in names.items() if n.startswith(path) and n != path
                                       and n[len(path):].rstrip(".").count(".") == 0})
            else:
                answer = gpv_response({n: "x" for n in rpc["parameter_names"]})
            last = h.respond(planned.rpc_id, answer, session)
        follow = last
    return follow


def test_a_name_the_fresh_walk_does_not_find_fails_at_once_and_one_walk_serves_all(
        clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    info = f"{IGD}DeviceInfo."
    first = h.add(make_task("setParameterValues", {"parameter_values": [
        {"name": f"{info}NoSuchThing", "value": "1", "type": "xsd:string"}]}, task_id="t1"))
    plan = h.inform(inform("2 PERIODIC", session="a"))
    h.fault(plan.rpcs[0].rpc_id, 9003, session="a", method="SetParameterValues",
            parameter_faults=[(f"{info}NoSuchThing", 9005)])
    h.end(session="a")
    # A second task of a missing name in the same subtree, before the walk ran: no second walk.
    second = h.add(make_task("getParameterValues", {"parameter_names": [f"{info}AlsoMissing"]}, task_id="t2",
                             created=clock.now))
    plan = h.inform(inform("2 PERIODIC", session="b"))
    gpv = next(p for p in plan.rpcs if p.rpc["method"] == "GetParameterValues")
    h.fault(gpv.rpc_id, 9005, session="b")
    healers = [t for t in h.tasks.values() if t.origin == "self-heal"]
    assert [t.args["parameter_path"] for t in healers] == [info]
    assert all(h.tasks[i].progress["heal"]["waiting"] == [healers[0].id] for i in ("t1", "t2"))

    walk = next(p for p in plan.rpcs if p.rpc["method"] == "GetParameterNames")
    _walk_answers(h, SessionPlan(**{**plan.model_dump(), "rpcs": [walk]}),
                  {f"{info}Manufacturer": False, f"{info}SoftwareVersion": False}, session="b")
    assert h.tasks[healers[0].id].status is TaskStatus.SUCCEEDED
    for task, name in ((first, "NoSuchThing"), (second, "AlsoMissing")):
        done = h.tasks[task.id]
        assert (done.status, done.reason) == (TaskStatus.FAILED, f"no such parameter: {info}{name}")
        assert done.attempts == 1  # no retries, no backoff


def test_a_name_the_walk_confirms_is_tried_again_at_once(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    name = f"{IGD}LANDevice.1.Hosts.HostNumberOfEntries"
    task = h.add(make_task("getParameterValues", {"parameter_names": [name]}))
    plan = h.inform(inform("2 PERIODIC", session="a"))
    h.fault(plan.rpcs[0].rpc_id, 9005, session="a")
    assert h.tasks[task.id].next_attempt_at is not None
    h.end(session="a")
    plan = h.inform(inform("2 PERIODIC", session="b"))
    assert [p.rpc["method"] for p in plan.rpcs] == ["GetParameterNames"]
    _walk_answers(h, plan, {name: False}, session="b")
    back = h.tasks[task.id]
    assert (back.status, back.next_attempt_at, back.progress) == (TaskStatus.PENDING, None, {})
    h.end(session="b")
    plan = h.inform(inform("2 PERIODIC", session="c"))  # no backoff left to wait for
    assert [p.rpc["method"] for p in plan.rpcs] == ["GetParameterValues"]


def test_self_heal_walks_are_bounded_per_device(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    names = [f"{IGD}LANDevice.1.WLANConfiguration.{i}.SSID" for i in range(1, 7)]
    for i, name in enumerate(names):
        h.add(make_task("getParameterValues", {"parameter_names": [name]}, task_id=f"t{i}"))
    plan = h.inform(inform("2 PERIODIC"))
    assert len(plan.rpcs) == 6
    for planned in plan.rpcs:
        h.fault(planned.rpc_id, 9005)
    healers = [t for t in h.tasks.values() if t.origin == "self-heal"]
    assert len(healers) == 3
    # A walk of an ancestor covers the subtrees below it.
    h.end()
    h.add(make_task("getParameterValues", {"parameter_names": [f"{IGD}LANDevice.1.WLANConfiguration.1.Enable"]},
                    task_id="t9", created=clock.now))
    plan = h.inform(inform("2 PERIODIC", session="s2"))
    gpv = next(p for p in plan.rpcs if p.rpc["method"] == "GetParameterValues")
    h.fault(gpv.rpc_id, 9005, session="s2")
    assert len([t for t in h.tasks.values() if t.origin == "self-heal"]) == 3


def test_names_of_the_other_data_model_fail_at_once_without_an_rpc(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)  # a TR-098 device
    task = h.add(make_task("setParameterValues", {"parameter_values": [
        {"name": "Device.DeviceInfo.ProvisioningCode", "value": "X", "type": "xsd:string"}]}))
    plan = h.inform(inform("2 PERIODIC"))
    assert plan.rpcs == []
    done = h.tasks[task.id]
    assert done.status is TaskStatus.FAILED and done.attempts == 1
    assert done.reason.startswith("wrong data model root: 'Device.DeviceInfo.ProvisioningCode'")
    assert not [t for t in h.tasks.values() if t.origin == "self-heal"]

    walk = h.add(make_task("getParameterNames", {"parameter_path": "Device.Hosts."}, task_id="walk",
                           created=clock.now))
    assert h.inform(inform("2 PERIODIC", session="s2")).rpcs == []
    assert h.tasks[walk.id].status is TaskStatus.FAILED
    assert not [i for i in h.walk_items.values() if i["walk"].startswith("walk:")]  # nothing of it written


def test_9005_inside_a_set_names_the_parameters_to_heal(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    h.add(make_task("setParameterValues", {"parameter_values": [
        {"name": NAME, "value": "1.2.3.4", "type": "xsd:string"},
        {"name": f"{IGD}DeviceInfo.ProvisioningCode", "value": "X", "type": "xsd:string"}]}))
    plan = h.inform(inform("2 PERIODIC"))
    h.fault(plan.rpcs[0].rpc_id, 9003, method="SetParameterValues", parameter_faults=[(NAME, 9005)])
    task = h.task_named("setParameterValues")
    assert task.status is TaskStatus.PENDING  # 9005 inside: retryable
    assert [t.args["parameter_path"] for t in h.tasks.values() if t.origin == "self-heal"] == [
        f"{IGD}WANDevice.1.WANConnectionDevice.2.WANIPConnection.1."]


def test_a_walk_passes_over_a_subtree_that_vanished_below_the_requested_path(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    path = f"{IGD}LANDevice."
    h.add(make_task("getParameterNames", {"parameter_path": path, "read_values": False}))
    plan = h.inform(inform("2 PERIODIC"))
    follow = h.respond(plan.rpcs[0].rpc_id, gpn_response({f"{path}1.": False, f"{path}2.": False}))
    assert follow is not None and len(follow.rpcs) == 2
    h.fault(follow.rpcs[0].rpc_id, 9005, method="GetParameterNames")
    h.respond(follow.rpcs[1].rpc_id, gpn_response({f"{path}2.Enable": True}))
    task = h.task_named("getParameterNames")
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result["errors"] == [{"rpc": f"gpn:{path}1.", "code": 9005, "string": ""}]
    assert task.result["parameters"] == [{"name": f"{path}2.Enable", "writable": True}]


def test_unsent_rpcs_give_the_task_back_without_charging_an_attempt(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    task = h.add(make_task("getRPCMethods", {}))
    plan = h.inform(inform("2 PERIODIC"))
    h.end("timeout", unsent=[plan.rpcs[0].rpc_id])
    back = h.tasks[task.id]
    assert (back.status, back.attempts, back.next_attempt_at, back.faults) == (TaskStatus.PENDING, 0, None, [])
    assert h.sessions == {}


def test_an_rpc_sent_but_never_answered_counts_as_a_failed_attempt(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    task = h.add(make_task("getRPCMethods", {}))
    h.inform(inform("2 PERIODIC"))
    h.end("dropped")
    back = h.tasks[task.id]
    assert back.status is TaskStatus.PENDING and back.attempts == 1
    assert back.faults[-1].code is None
    assert back.faults[-1].string == "session ended (dropped) before the CPE answered GetRPCMethods"
    assert back.next_attempt_at is not None


def test_a_plan_the_gateway_never_sent_costs_no_attempt(clock: Clock, cfg: PlanConfig) -> None:
    """The gateway lists what it sent and got no answer for; a late plan's RPCs are not in it."""
    h = _provisioned(clock, cfg)
    task = h.add(make_task("getRPCMethods", {}))
    h.inform(inform("2 PERIODIC"))
    h.end("timeout", unanswered=[])
    back = h.tasks[task.id]
    assert (back.status, back.attempts, back.faults) == (TaskStatus.PENDING, 0, [])


def test_the_rpc_the_gateway_sent_without_answer_is_charged(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    task = h.add(make_task("getRPCMethods", {}))
    plan = h.inform(inform("2 PERIODIC"))
    h.end("dropped", unanswered=[plan.rpcs[0].rpc_id])
    back = h.tasks[task.id]
    assert back.status is TaskStatus.PENDING and back.attempts == 1


def test_a_walk_cut_short_by_a_late_plan_is_retried_from_scratch(clock: Clock, cfg: PlanConfig) -> None:
    h = _provisioned(clock, cfg)
    path = f"{IGD}LANDevice."
    task = h.add(make_task("getParameterNames", {"parameter_path": path}))
    plan = h.inform(inform("2 PERIODIC"))
    follow = h.respond(plan.rpcs[0].rpc_id, gpn_response({f"{path}1.": False}))
    assert follow is not None
    h.end("timeout", unsent=[p.rpc_id for p in follow.rpcs])
    back = h.tasks[task.id]
    # Something was answered, so the attempt counts; but nothing failed, so no backoff.
    assert back.status is TaskStatus.PENDING and back.attempts == 1 and back.progress == {}
    assert back.next_attempt_at is None
