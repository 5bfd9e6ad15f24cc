"""Reboot and FactoryReset succeed when the device comes back, not on their RPC's answer."""

from __future__ import annotations

from datetime import timedelta

from services.orchestrator import planner
from services.orchestrator.state import PlanConfig
from services.orchestrator.tasks import REBOOT_TIMEOUT_REASON, RESET_TIMEOUT_REASON, TaskStatus
from tests.unit.orchestrator.orchestrator_builders import Clock, Harness, inform, make_task, small_config


def _known_device(clock: Clock, cfg: PlanConfig) -> Harness:
    h = Harness(clock, cfg)
    h.inform(inform("1 BOOT", session="s0"))
    for task in list(h.tasks.values()):
        h.tasks[task.id] = task.model_copy(update={"status": TaskStatus.SUCCEEDED})
    h.end(session="s0")
    return h


def test_a_reboot_waits_for_the_boot_that_carries_its_command_key(clock: Clock) -> None:
    cfg = small_config(reboot_timeout=120)
    h = _known_device(clock, cfg)
    task = h.add(make_task("reboot", {}))
    plan = h.inform(inform("2 PERIODIC", session="a"))
    key = plan.rpcs[0].rpc["command_key"]
    h.respond(plan.rpcs[0].rpc_id, {"method": "RebootResponse"}, session="a")
    waiting = h.tasks[task.id]
    assert waiting.status is TaskStatus.PENDING_COMPLETION
    assert waiting.completion_deadline == clock.now + timedelta(seconds=120)
    assert h.events == []  # nothing succeeded yet
    h.end(session="a")

    clock.advance(5)  # a boot for another reason (power cut) settles nothing
    h.inform(inform("1 BOOT", ("M Reboot", "someone-else.1"), session="b"))
    assert h.tasks[task.id].status is TaskStatus.PENDING_COMPLETION
    h.inform(inform(("M Reboot", key), session="c"))  # the key without 1 BOOT: not a boot
    assert h.tasks[task.id].status is TaskStatus.PENDING_COMPLETION

    h.inform(inform("1 BOOT", ("M Reboot", key), session="d"))
    done = h.tasks[task.id]
    assert done.status is TaskStatus.SUCCEEDED
    assert done.result["command_key"] == key and "M Reboot" in done.result["events"]
    assert [(e.kind, e.details["task_id"]) for e in h.events] == [("task_succeeded", task.id)]


def test_a_reboot_the_device_does_not_come_back_from_fails_after_the_timeout(clock: Clock) -> None:
    cfg = small_config(reboot_timeout=120)
    h = _known_device(clock, cfg)
    task = h.add(make_task("reboot", {}))
    plan = h.inform(inform("2 PERIODIC", session="a"))
    h.respond(plan.rpcs[0].rpc_id, {"method": "RebootResponse"}, session="a")
    clock.advance(119)
    changed, _ = planner.sweep([h.tasks[task.id]], clock.env(), 600)
    assert changed == []
    clock.advance(1)
    changed, events = planner.sweep([h.tasks[task.id]], clock.env(), 600)
    assert [(t.status, t.reason) for t in changed] == [(TaskStatus.FAILED, REBOOT_TIMEOUT_REASON)]
    assert [(e.kind, e.details["reason"]) for e in events] == [("task_failed", REBOOT_TIMEOUT_REASON)]


def test_a_factory_reset_succeeds_on_the_bootstrap_that_follows_it(clock: Clock, cfg: PlanConfig) -> None:
    h = _known_device(clock, cfg)
    task = h.add(make_task("factoryReset", {}))
    plan = h.inform(inform("2 PERIODIC", session="a"))
    assert [p.rpc["method"] for p in plan.rpcs] == ["FactoryReset"]
    h.respond(plan.rpcs[0].rpc_id, {"method": "FactoryResetResponse"}, session="a")
    assert h.tasks[task.id].status is TaskStatus.PENDING_COMPLETION
    assert h.tasks[task.id].completion_deadline == clock.now + timedelta(seconds=cfg.reboot_timeout)
    h.end(session="a")

    plan = h.inform(inform("0 BOOTSTRAP", "1 BOOT", session="b"))
    done = h.tasks[task.id]
    # Not cancelled with the old identity's work: the bootstrap is the reset's own outcome.
    assert done.status is TaskStatus.SUCCEEDED, done.reason
    assert ("task_succeeded", task.id) in [(e.kind, e.details.get("task_id")) for e in h.events]
    assert plan.rpcs  # and the device is provisioned afresh

    other = _known_device(Clock(), cfg)
    stuck = other.add(make_task("factoryReset", {}))
    plan = other.inform(inform("2 PERIODIC", session="a"))
    other.respond(plan.rpcs[0].rpc_id, {"method": "FactoryResetResponse"}, session="a")
    other.clock.advance(cfg.reboot_timeout)
    changed, _ = planner.sweep([other.tasks[stuck.id]], other.clock.env(), 600)
    assert [t.reason for t in changed] == [RESET_TIMEOUT_REASON]
