"""ScheduleDownload, CancelTransfer, Get(All)QueuedTransfers and ChangeDUState: validated,
planned and settled like the other tasks; DUStateChangeComplete, AutonomousDUStateChangeComplete
and AutonomousTransferComplete."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from services.bus.events import CpeRequestReceived
from services.orchestrator import planner, requestdownload, rpcs, specs
from services.orchestrator.state import DeviceState, PlanConfig
from services.orchestrator.tasks import TaskStatus
from tests.unit.orchestrator.orchestrator_builders import DEVICE, REF, Clock, Harness, inform, make_task

UUID = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
SCHEDULE_ARGS: dict[str, Any] = {
    "file_name": "fw.bin", "file_type": "1 Firmware Upgrade Image", "file_size": 1000,
    "url": "http://files.test/download/fw.bin", "target_file_name": "", "version": "2.0",
    "time_windows": [{"window_start": 0, "window_end": 300, "window_mode": "1 At Any Time", "user_message": "",
                      "max_retries": 0}],
}
SPEC = TypeAdapter(specs.TaskSpec)


def _sent(clock: Clock, cfg: PlanConfig, name: str, args: dict[str, Any]) -> tuple[Harness, dict[str, Any]]:
    h = Harness(clock, cfg)
    h.inform(inform("1 BOOT", session="s0"))
    for task in list(h.tasks.values()):
        h.tasks[task.id] = task.model_copy(update={"status": TaskStatus.SUCCEEDED})
    h.end(session="s0")
    h.add(make_task(name, args, task_id="t-0123456789abcdef0123456789"))
    plan = h.inform(inform("6 CONNECTION REQUEST"))
    assert len(plan.rpcs) == 1
    return h, plan.rpcs[0].model_dump()


def _cpe_request(method: str, rpc: dict[str, Any]) -> CpeRequestReceived:
    return CpeRequestReceived(**REF, session_id="s2", method=method, rpc={"method": method, **rpc})


def _op_result(code: int = 0, state: str = "Installed") -> dict[str, Any]:
    return {"uuid": UUID, "deployment_unit_ref": "Device.SoftwareModules.DeploymentUnit.1", "version": "1.0",
            "current_state": state, "resolved": True,
            "execution_unit_ref_list": "Device.SoftwareModules.ExecutionUnit.1",
            "start_time": "2024-05-01T12:00:00Z", "complete_time": "2024-05-01T12:00:05Z",
            "fault": {"fault_code": code, "fault_string": "Unknown DU" if code else ""}}


# --- specs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "message"), [
    ({"name": "scheduleDownload", "file_name": "f", "time_windows": []}, "at least 1"),
    ({"name": "scheduleDownload", "file_name": "f", "time_windows": [{"window_start": 10, "window_end": 5}]},
     "window_end must not be before"),
    ({"name": "scheduleDownload", "file_name": "f", "time_windows": [
        {"window_start": 0, "window_end": 100}, {"window_start": 50, "window_end": 200}]}, "second time window"),
    ({"name": "scheduleDownload", "file_name": "f", "time_windows": [{"window_start": 0, "window_end": 1}] * 3},
     "at most 2"),
    ({"name": "scheduleDownload", "file_name": "f",
      "time_windows": [{"window_start": 0, "window_end": 1, "window_mode": "5 Whenever"}]}, "window_mode"),
    ({"name": "cancelTransfer"}, "commandKey"),
    ({"name": "changeDUState", "operations": []}, "at least 1"),
    ({"name": "changeDUState", "operations": [{"type": "install"}]}, "needs the file_name"),
    ({"name": "changeDUState", "operations": [{"type": "uninstall", "file_name": "x", "uuid": UUID}]},
     "takes no file_name"),
    ({"name": "changeDUState", "operations": [{"type": "uninstall"}]}, "needs the uuid"),
    ({"name": "changeDUState", "operations": [{"type": "update", "uuid": "nope"}]}, "is not a UUID"),
    ({"name": "changeDUState", "operations": [{"type": "install", "url": "ftp://x/y"}]}, "http"),
    ({"name": "changeDUState", "operations": [{"type": "install", "url": "http://x/y", "password": "s"}]},
     "password"),
])
def test_bad_transfer_and_du_tasks_are_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SPEC.validate_python(body)


def test_task_args_of_a_change_du_state_leave_absent_fields_out() -> None:
    spec = SPEC.validate_python({"name": "changeDUState", "operations": [
        {"type": "install", "fileName": "app.ipk"}, {"type": "uninstall", "uuid": UUID}]})
    assert specs.task_args(spec) == {"operations": [{"type": "install", "file_name": "app.ipk"},
                                                    {"type": "uninstall", "uuid": UUID}]}


# --- ScheduleDownload --------------------------------------------------------------------------


def test_schedule_download_sends_windows_and_waits_for_transfer_complete_past_the_last_window(
        clock: Clock, cfg: PlanConfig) -> None:
    args = {**SCHEDULE_ARGS, "time_windows": [
        {"window_start": 0, "window_end": 300, "window_mode": "1 At Any Time", "user_message": "", "max_retries": 0},
        {"window_start": 600, "window_end": 900, "window_mode": "3 When Idle", "user_message": "", "max_retries": 2}]}
    h, planned = _sent(clock, cfg, "scheduleDownload", args)
    task = h.task_named("scheduleDownload")
    assert planned["rpc"] == {
        "method": "ScheduleDownload", "command_key": task.command_key, "file_type": "1 Firmware Upgrade Image",
        "url": "http://files.test/download/fw.bin", "username": "dl-user-fw.bin", "password": "dl-pass",
        "file_size": 1000, "target_file_name": "", "time_window_list": args["time_windows"]}
    h.respond(planned["rpc_id"], {"method": "ScheduleDownloadResponse"})
    task = h.task_named("scheduleDownload")
    assert task.status is TaskStatus.PENDING_COMPLETION
    # The usual download timeout (600 s in the test config), counted from the end of the last window.
    assert task.completion_deadline == clock.now + timedelta(seconds=600 + 900)
    h.end()
    h.transfer_complete(task.command_key or "", 0)
    done = h.task_named("scheduleDownload")
    assert done.status is TaskStatus.SUCCEEDED and done.result["transfer"]["fault_code"] == 0
    assert [e.kind for e in h.events][-2:] == ["task_succeeded", "firmware_upgraded"]


def test_a_schedule_download_refused_with_9020_fails_at_once(clock: Clock, cfg: PlanConfig) -> None:
    h, planned = _sent(clock, cfg, "scheduleDownload", dict(SCHEDULE_ARGS))
    h.fault(planned["rpc_id"], 9020, string="Time window failure", method="ScheduleDownload")
    task = h.task_named("scheduleDownload")
    # 9020 may succeed with other windows: it is retried, not given up on at once.
    assert task.status is TaskStatus.PENDING and task.faults[-1].code == 9020


# --- CancelTransfer and queued transfers -------------------------------------------------------


def test_cancel_transfer_sends_the_command_key_and_succeeds(clock: Clock, cfg: PlanConfig) -> None:
    h, planned = _sent(clock, cfg, "cancelTransfer", {"command_key": "dl-key.1"})
    assert planned["rpc"] == {"method": "CancelTransfer", "command_key": "dl-key.1"}
    h.respond(planned["rpc_id"], {"method": "CancelTransferResponse"})
    task = h.task_named("cancelTransfer")
    assert task.status is TaskStatus.SUCCEEDED and task.result == {"cancelled": "dl-key.1"}


def test_cancel_not_permitted_fails_the_task_with_9021(clock: Clock, cfg: PlanConfig) -> None:
    h, planned = _sent(clock, cfg, "cancelTransfer", {"command_key": "dl-key.1"})
    h.fault(planned["rpc_id"], 9021, string="Cancelation of file transfer not permitted", method="CancelTransfer")
    task = h.task_named("cancelTransfer")
    assert task.faults[-1].code == 9021 and task.status is not TaskStatus.SUCCEEDED


@pytest.mark.parametrize(("name", "method"), [("getQueuedTransfers", "GetQueuedTransfers"),
                                              ("getAllQueuedTransfers", "GetAllQueuedTransfers")])
def test_queued_transfers_are_the_result(clock: Clock, cfg: PlanConfig, name: str, method: str) -> None:
    h, planned = _sent(clock, cfg, name, {})
    assert planned["rpc"] == {"method": method}
    listed = [{"command_key": "a", "state": 1, "is_download": True, "file_type": "1 Firmware Upgrade Image",
               "file_size": 10, "target_file_name": ""}, {"command_key": "b", "state": 2}]
    h.respond(planned["rpc_id"], {"method": method + "Response", "transfer_list": listed})
    task = h.task_named(name)
    assert task.status is TaskStatus.SUCCEEDED and task.result == {"transfers": listed}


# --- ChangeDUState and DUStateChangeComplete ---------------------------------------------------


DU_ARGS = {"operations": [{"type": "install", "file_name": "app.ipk", "url": "http://files.test/download/app.ipk"},
                          {"type": "uninstall", "uuid": UUID}]}


def _du_accepted(clock: Clock, cfg: PlanConfig) -> Harness:
    h, planned = _sent(clock, cfg, "changeDUState", DU_ARGS)
    task = h.task_named("changeDUState")
    assert planned["rpc"] == {"method": "ChangeDUState", "command_key": task.command_key, "operations": [
        {"type": "InstallOpStruct", "url": "http://files.test/download/app.ipk", "username": "dl-user-app.ipk",
         "password": "dl-pass"},
        {"type": "UninstallOpStruct", "uuid": UUID}]}
    assert "dl-pass" not in repr(task.public())
    h.respond(planned["rpc_id"], {"method": "ChangeDUStateResponse"})
    assert h.task_named("changeDUState").status is TaskStatus.PENDING_COMPLETION
    h.end()
    return h


def _du_complete(h: Harness, method: str, rpc: dict[str, Any]) -> None:
    assert h.device is not None
    key = rpc.get("command_key")
    task = next((t for t in h.tasks.values() if key and t.command_key == key), None)
    h.apply(planner.on_du_state_change_complete(_cpe_request(method, rpc), h.device, task,
                                                [t for t in h.tasks.values() if t.open], h.clock.env(), h.cfg))


def test_du_state_change_complete_settles_the_task_and_refreshes_software_modules(
        clock: Clock, cfg: PlanConfig) -> None:
    h = _du_accepted(clock, cfg)
    key = h.task_named("changeDUState").command_key
    _du_complete(h, "DUStateChangeComplete", {"command_key": key, "results": [
        _op_result(), {**_op_result(), "current_state": "Uninstalled"}]})
    task = h.task_named("changeDUState")
    assert task.status is TaskStatus.SUCCEEDED
    assert [op["current_state"] for op in task.result["operations"]] == ["Installed", "Uninstalled"]
    changed = next(e for e in h.events if e.kind == "software_modules_changed")
    assert changed.details["task_id"] == task.id and changed.details["autonomous"] is False
    assert changed.details["results"][0]["execution_unit_refs"] == ["Device.SoftwareModules.ExecutionUnit.1"]
    refresh = [t for t in h.tasks.values() if t.origin == planner.SOFTWARE_MODULES_ORIGIN]
    assert [(t.name, t.args["parameter_path"], t.status) for t in refresh] == [
        ("getParameterNames", "InternetGatewayDevice.SoftwareModules.", TaskStatus.PENDING)]
    # A second report while that walk is open queues no second walk.
    _du_complete(h, "AutonomousDUStateChangeComplete", {"results": [{**_op_result(),
                                                                     "operation_performed": "Install"}]})
    assert len([t for t in h.tasks.values() if t.origin == planner.SOFTWARE_MODULES_ORIGIN]) == 1


def test_a_failed_operation_fails_the_change_du_state_task(clock: Clock, cfg: PlanConfig) -> None:
    h = _du_accepted(clock, cfg)
    key = h.task_named("changeDUState").command_key
    _du_complete(h, "DUStateChangeComplete", {"command_key": key, "results": [_op_result(), _op_result(9028)]})
    task = h.task_named("changeDUState")
    assert task.status is TaskStatus.FAILED
    assert task.reason == "1 of 2 operations failed; first: 9028 Unknown DU"
    assert task.faults[-1].code == 9028 and task.faults[-1].method == "DUStateChangeComplete"


def test_an_autonomous_du_change_settles_no_task_but_is_announced(clock: Clock, cfg: PlanConfig) -> None:
    h = _du_accepted(clock, cfg)
    _du_complete(h, "AutonomousDUStateChangeComplete",
                 {"results": [{**_op_result(), "operation_performed": "Uninstall"}]})
    assert h.task_named("changeDUState").status is TaskStatus.PENDING_COMPLETION
    changed = next(e for e in h.events if e.kind == "software_modules_changed")
    assert changed.details["autonomous"] is True and changed.details["results"][0]["operation"] == "Uninstall"


def test_without_du_state_change_complete_the_sweep_fails_the_task(clock: Clock, cfg: PlanConfig) -> None:
    h = _du_accepted(clock, cfg)
    clock.advance(601)
    changed, events = planner.sweep(list(h.tasks.values()), clock.env(), 600)
    failed = next(t for t in changed if t.name == "changeDUState")
    assert failed.status is TaskStatus.FAILED
    assert failed.reason == "no DUStateChangeComplete within the download timeout"
    assert [e.details["task_id"] for e in events if e.kind == "task_failed"] == [failed.id]


def test_autonomous_transfer_complete_is_announced() -> None:
    clock = Clock()
    decision = planner.on_autonomous_transfer_complete(_cpe_request("AutonomousTransferComplete", {
        "announce_url": "", "transfer_url": "http://vendor.test/fw.bin", "is_download": True,
        "file_type": "1 Firmware Upgrade Image", "file_size": 5, "target_file_name": "",
        "fault_struct": {"fault_code": 0, "fault_string": ""},
        "start_time": "2024-05-01T12:00:00Z", "complete_time": "2024-05-01T12:00:05Z"}),
        DeviceState(id=DEVICE), clock.env(), PlanConfig())
    (event,) = decision.events
    assert event.kind == "autonomous_transfer_completed"
    assert event.details["transfer_url"] == "http://vendor.test/fw.bin" and event.details["fault_code"] == 0


# --- RequestDownload rule ----------------------------------------------------------------------


def test_the_request_download_rule_serves_the_newest_file_of_the_type_meant_for_the_device() -> None:
    ask = requestdownload.read_ask(DEVICE, {"file_type": "3 Vendor Configuration File",
                                            "file_type_arg": [{"name": "Version", "value": "1"}]},
                                   "09D021", "IGD Simulator")
    assert ask.file_type_args == {"Version": "1"}
    files = [
        {"name": "old.cfg", "file_type": "3 Vendor Configuration File", "uploaded_at": "2024-01-01T00:00:00Z"},
        {"name": "new.cfg", "file_type": "3 Vendor Configuration File", "uploaded_at": "2024-03-01T00:00:00Z"},
        {"name": "other-oui.cfg", "file_type": "3 Vendor Configuration File", "oui": "AAAAAA",
         "uploaded_at": "2024-09-01T00:00:00Z"},
        {"name": "fw.bin", "file_type": "1 Firmware Upgrade Image", "uploaded_at": "2024-09-01T00:00:00Z"},
        {"name": "up.cfg", "file_type": "3 Vendor Configuration File", "kind": "upload",
         "uploaded_at": "2024-09-01T00:00:00Z"},
    ]
    chosen = requestdownload.newest_matching(ask, files)
    assert chosen is not None and chosen["name"] == "new.cfg"
    assert requestdownload.newest_matching(
        requestdownload.Ask(DEVICE, "2 Web Content", {}, "09D021", "IGD Simulator"), files) is None


def test_a_software_modules_walk_on_a_cpe_without_them_fails_without_walking_the_root(
        clock: Clock, cfg: PlanConfig) -> None:
    h = _du_accepted(clock, cfg)
    _du_complete(h, "AutonomousDUStateChangeComplete",
                 {"results": [{**_op_result(), "operation_performed": "Install"}]})
    plan = h.inform(inform("2 PERIODIC", session="s3"))
    (planned,) = plan.rpcs
    assert planned.rpc == {"method": "GetParameterNames", "parameter_path": "InternetGatewayDevice.SoftwareModules.",
                           "next_level": True}
    # One attempt (max_attempts=1): a 9005 fails it at once, and a failed task spawns no self-heal.
    h.fault(planned.rpc_id, 9005, session="s3", method="GetParameterNames")
    walk = next(t for t in h.tasks.values() if t.origin == planner.SOFTWARE_MODULES_ORIGIN)
    assert walk.status is TaskStatus.FAILED
    assert not [t for t in h.tasks.values() if t.origin == planner.HEAL_ORIGIN]


def test_du_passwords_are_redacted_for_logs() -> None:
    rpc = rpcs.change_du_state([{"type": "install", "url": "http://f.test/a", "username": "u", "password": "s3cret"}],
                               "k")
    assert "s3cret" not in repr(rpcs.redacted(rpc)) and "s3cret" in repr(rpc)
