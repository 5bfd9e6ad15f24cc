"""Firmware upgrade as in the seed: Download with a unique CommandKey, TransferComplete closes it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.orchestrator import planner
from services.orchestrator.state import PlanConfig
from services.orchestrator.tasks import TaskStatus
from tests.unit.orchestrator.orchestrator_builders import IGD, SEED_PARAMETERS, Clock, Harness, inform, make_task

DOWNLOAD_ARGS: dict[str, Any] = {
    "file_name": "fw 2.0.bin", "file_type": "1 Firmware Upgrade Image", "file_size": 83687,
    "url": "http://files.test/download/fw%202.0.bin", "target_file_name": "", "delay_seconds": 0,
    "version": "Rev 2.0",
}
ACCEPTED = {"method": "DownloadResponse", "status": 1, "start_time": "0001-01-01T00:00:00Z",
            "complete_time": "0001-01-01T00:00:00Z"}


def _download_sent(clock: Clock, cfg: PlanConfig) -> tuple[Harness, dict[str, Any]]:
    h = Harness(clock, cfg)
    h.inform(inform("1 BOOT", session="s0"))
    for task in list(h.tasks.values()):
        h.tasks[task.id] = task.model_copy(update={"status": TaskStatus.SUCCEEDED})
    h.end(session="s0")
    h.add(make_task("download", dict(DOWNLOAD_ARGS), task_id="fw-task-0123456789abcdef0123"))
    plan = h.inform(inform("6 CONNECTION REQUEST"))
    assert len(plan.rpcs) == 1
    return h, plan.rpcs[0].model_dump()


def test_the_download_carries_file_facts_minted_credentials_and_a_unique_command_key(
        clock: Clock, cfg: PlanConfig) -> None:
    h, planned = _download_sent(clock, cfg)
    rpc = planned["rpc"]
    task = h.task_named("download")
    assert rpc == {"method": "Download", "command_key": task.command_key, "file_type": "1 Firmware Upgrade Image",
                   "url": "http://files.test/download/fw%202.0.bin", "username": "dl-user-fw 2.0.bin",
                   "password": "dl-pass", "file_size": 83687, "target_file_name": "", "delay_seconds": 0,
                   "success_url": "", "failure_url": ""}
    assert task.command_key and len(task.command_key) <= 32
    # The minted password is in the plan only: not in the task the API shows.
    assert "dl-pass" not in repr(task.public())


def test_status_1_waits_for_transfer_complete_then_succeeds_and_announces_the_upgrade(
        clock: Clock, cfg: PlanConfig) -> None:
    h, planned = _download_sent(clock, cfg)
    h.respond(planned["rpc_id"], ACCEPTED)
    h.end()
    task = h.task_named("download")
    assert task.status is TaskStatus.PENDING_COMPLETION
    assert task.completion_deadline == clock.now + timedelta(seconds=600)

    clock.advance(120)
    upgraded = {**SEED_PARAMETERS, f"{IGD}DeviceInfo.SoftwareVersion": "Rev 2.0"}
    key = task.command_key or ""
    plan = h.inform(inform("1 BOOT", "7 TRANSFER COMPLETE", ("M Download", key), parameters=upgraded,
                           session="s2"))
    assert plan.rpcs == []
    h.transfer_complete(key, 0)

    done = h.task_named("download")
    assert done.status is TaskStatus.SUCCEEDED
    assert done.result["transfer"]["fault_code"] == 0
    kinds = {e.kind: e.details for e in h.events}
    assert kinds["task_succeeded"]["task_id"] == done.id
    assert kinds["firmware_upgraded"] == {"task_id": done.id, "file_name": "fw 2.0.bin",
                                          "from": "Rev 1.9.82.342.17", "to": "Rev 2.0"}


def test_a_transfer_complete_with_a_fault_fails_the_task_with_the_cpes_code(clock: Clock, cfg: PlanConfig) -> None:
    h, planned = _download_sent(clock, cfg)
    h.respond(planned["rpc_id"], ACCEPTED)
    key = h.task_named("download").command_key or ""
    h.transfer_complete(key, 9010, "Download failure: checksum")
    done = h.task_named("download")
    assert done.status is TaskStatus.FAILED
    assert (done.faults[-1].code, done.faults[-1].string) == (9010, "Download failure: checksum")
    assert done.reason == "the CPE reported the transfer failed: 9010 Download failure: checksum"
    assert [e.kind for e in h.events] == ["task_failed"]


def test_status_0_means_done_at_once(clock: Clock, cfg: PlanConfig) -> None:
    h, planned = _download_sent(clock, cfg)
    h.respond(planned["rpc_id"], {**ACCEPTED, "status": 0})
    done = h.task_named("download")
    assert done.status is TaskStatus.SUCCEEDED
    assert [e.kind for e in h.events] == ["task_succeeded", "firmware_upgraded"]
    assert h.events[1].details["to"] == "Rev 2.0"  # from the file's metadata


def test_a_refused_download_is_a_fault_not_a_pending_transfer(clock: Clock, cfg: PlanConfig) -> None:
    h, planned = _download_sent(clock, cfg)
    h.fault(planned["rpc_id"], 9013, method="Download", string="Unsupported protocol")
    done = h.task_named("download")
    assert done.status is TaskStatus.FAILED and "retrying would not help" in done.reason


def test_an_unknown_command_key_is_acknowledged_and_changes_nothing(clock: Clock, cfg: PlanConfig) -> None:
    h, planned = _download_sent(clock, cfg)
    h.respond(planned["rpc_id"], ACCEPTED)
    h.transfer_complete("someone-elses-key", 0)
    assert h.task_named("download").status is TaskStatus.PENDING_COMPLETION
    assert "unknown CommandKey" in h.notes[-1]


def test_the_sweep_times_out_a_silent_transfer_and_a_late_answer_still_settles_it(
        clock: Clock, cfg: PlanConfig) -> None:
    h, planned = _download_sent(clock, cfg)
    h.respond(planned["rpc_id"], ACCEPTED)
    clock.advance(601)
    changed, events = planner.sweep(list(h.tasks.values()), clock.env(), stale_after=3600)
    for task in changed:
        h.tasks[task.id] = task
    timed_out = h.task_named("download")
    assert timed_out.status is TaskStatus.FAILED
    assert timed_out.reason == "no TransferComplete within the download timeout"
    assert [e.kind for e in events] == ["task_failed"]

    h.transfer_complete(timed_out.command_key or "", 0)
    assert h.task_named("download").status is TaskStatus.SUCCEEDED


def test_the_sweep_expires_queued_work_and_frees_tasks_of_vanished_sessions(clock: Clock) -> None:
    queued = make_task("reboot", {}, task_id="q", expires_at=clock.now + timedelta(seconds=10))
    orphan = make_task("getRPCMethods", {}, task_id="o", status=TaskStatus.IN_PROGRESS, attempts=1,
                       session_id="gone")
    fresh = make_task("getRPCMethods", {}, task_id="f", status=TaskStatus.IN_PROGRESS, attempts=1,
                      session_id="live", updated_at=clock.now + timedelta(seconds=590))
    clock.advance(600)
    changed, events = planner.sweep([queued, orphan, fresh], clock.env(), stale_after=300)
    by_id = {t.id: t for t in changed}
    assert set(by_id) == {"q", "o"}
    assert by_id["q"].status is TaskStatus.EXPIRED
    assert (by_id["o"].status, by_id["o"].attempts) == (TaskStatus.PENDING, 0)
    assert [(e.kind, e.details["task_id"]) for e in events] == [("task_expired", "q")]  # a freed task ended not
