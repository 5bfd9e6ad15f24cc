"""CPE faults: recorded per task, retried with backoff, healed on 9005, given up on with a reason."""

from __future__ import annotations

from datetime import timedelta

from services.orchestrator.state import PlanConfig
from services.orchestrator.tasks import TaskStatus
from tests.unit.orchestrator.orchestrator_builders import IGD, Clock, Harness, gpn_response, inform, make_task

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
    assert h.device is not None
    h.device = h.device.model_copy(update={"known_names": [
        f"{IGD}WANDevice.1.WANConnectionDevice.2.WANIPConnection.1.", NAME, f"{IGD}DeviceInfo.SoftwareVersion"]})
    task = h.add(make_task("getParameterValues", {"parameter_names": [NAME]}))
    plan = h.inform(inform("2 PERIODIC"))
    h.fault(plan.rpcs[0].rpc_id, 9005, string="Invalid parameter name")

    assert h.tasks[task.id].status is TaskStatus.PENDING  # the name may come back: retry later
    healer = next(t for t in h.tasks.values() if t.origin == "self-heal")
    parent = f"{IGD}WANDevice.1.WANConnectionDevice.2.WANIPConnection.1."
    assert (healer.name, healer.args["parameter_path"], healer.status) == ("getParameterNames", parent,
                                                                           TaskStatus.PENDING)
    assert h.device.known_names == [f"{IGD}DeviceInfo.SoftwareVersion"]

    # The next session rediscovers the path; a second 9005 on it does not queue a second healer.
    plan = h.inform(inform("2 PERIODIC", session="s2"))
    assert (plan.rpcs[0].rpc["method"], plan.rpcs[0].rpc["parameter_path"]) == ("GetParameterNames", parent)
    h.fault(plan.rpcs[0].rpc_id, 9005, session="s2", method="GetParameterNames")
    healers = [t for t in h.tasks.values() if t.origin == "self-heal"]
    # The vanished instance's own parent table is rediscovered next: healing climbs the tree.
    assert sorted(t.args["parameter_path"] for t in healers) == [
        f"{IGD}WANDevice.1.WANConnectionDevice.2.WANIPConnection.", parent]


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
