"""Bootstrap provisioning, as in the seed walk-through: credentials, periodic informs, discovery."""

from __future__ import annotations

from typing import Any

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

DI, MS = f"{IGD}DeviceInfo.", f"{IGD}ManagementServer."


def _walk_answers(rpc: dict[str, Any]) -> dict[str, Any]:
    """A tiny TR-098 device: two subtrees, one nested object."""
    if rpc["method"] == "SetParameterValues":
        return {"method": "SetParameterValuesResponse", "status": 1}
    if rpc["method"] == "GetParameterNames":
        tree = {
            DI: {f"{DI}Manufacturer": False, f"{DI}SoftwareVersion": False, f"{DI}X_Vendor.": False},
            f"{DI}X_Vendor.": {f"{DI}X_Vendor.Mode": True},
            MS: {f"{MS}URL": True, f"{MS}PeriodicInformInterval": True},
        }
        return gpn_response(tree[rpc["parameter_path"]])
    assert rpc["method"] == "GetParameterValues"
    return gpv_response({name: f"value of {name}" for name in rpc["parameter_names"]})


def test_first_plan_sets_unique_credentials_and_periodic_inform_and_starts_the_walk(
        clock: Clock, cfg: PlanConfig) -> None:
    h = Harness(clock, cfg)
    plan = h.inform(inform("0 BOOTSTRAP", "1 BOOT"))

    assert [p.rpc["method"] for p in plan.rpcs] == ["SetParameterValues", "GetParameterNames", "GetParameterNames"]
    assert plan.more is True  # the values to read depend on these answers
    assert plan.in_reply_to and plan.session_id == "s1" and plan.gateway_id == "gw-1"
    spv = plan.rpcs[0].rpc
    values = {v["name"]: (v["value"]["value"], v["value"]["type"]) for v in spv["parameter_list"]}
    assert h.device is not None
    assert values[f"{MS}ConnectionRequestUsername"] == (h.device.pending_cr_username, "xsd:string")
    assert values[f"{MS}ConnectionRequestPassword"] == (h.device.pending_cr_password, "xsd:string")
    assert values[f"{MS}PeriodicInformEnable"] == ("true", "xsd:boolean")
    assert values[f"{MS}PeriodicInformInterval"] == ("300", "xsd:unsignedInt")
    # Each known subtree in one round trip (NextLevel=false), not a level-by-level walk.
    assert [(p.rpc["parameter_path"], p.rpc["next_level"]) for p in plan.rpcs[1:]] == [(DI, False), (MS, False)]
    # Not usable for connection requests until the CPE accepted them.
    assert h.device.cr_username is None
    assert h.device.connection_request_url == "http://A:10016/"
    assert h.device.data_model == IGD


def test_the_walk_goes_level_by_level_and_reads_values_as_batches_fill(clock: Clock, cfg: PlanConfig) -> None:
    h = Harness(clock, cfg)
    plan = h.inform(inform("0 BOOTSTRAP", "1 BOOT"))
    second = h.answer_all(plan, _walk_answers)
    assert second is not None and second.in_reply_to != plan.in_reply_to
    # The next level, and the values of each full batch (gpv_batch_size=2) of names found so far.
    assert [(p.rpc["method"], p.rpc.get("parameter_path"), len(p.rpc.get("parameter_names", [])))
            for p in second.rpcs] == [("GetParameterValues", None, 2), ("GetParameterNames", f"{DI}X_Vendor.", 0),
                                      ("GetParameterValues", None, 2)]
    assert second.more is True

    third = h.answer_all(second, _walk_answers)
    assert third is not None
    # Nothing left to walk: the names still short of a batch are read.
    assert [(p.rpc["method"], p.rpc["parameter_names"]) for p in third.rpcs] == [
        ("GetParameterValues", [f"{DI}X_Vendor.Mode"])]
    assert third.more is False

    assert h.answer_all(third, _walk_answers) is None  # more=False: the gateway ends the session
    task = h.task_named("bootstrap")
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result["connection_request_credentials"] == "set"
    found = {p["name"]: p for p in task.result["parameters"]}
    assert found[f"{DI}X_Vendor.Mode"] == {"name": f"{DI}X_Vendor.Mode", "writable": True,
                                           "value": f"value of {DI}X_Vendor.Mode", "type": "xsd:string"}
    # The password is in no task the API can show.
    assert h.device is not None and h.device.cr_password
    assert h.device.cr_password not in repr(task.public())
    assert h.device.cr_username and h.device.pending_cr_username is None
    assert f"{DI}X_Vendor." in task.result["objects"]


def test_an_inform_without_parameters_asks_for_the_root_object_first(clock: Clock, cfg: PlanConfig) -> None:
    h = Harness(clock, cfg)
    plan = h.inform(inform("0 BOOTSTRAP", parameters={}))
    assert [(p.rpc["method"], p.rpc["parameter_path"], p.rpc["next_level"]) for p in plan.rpcs] == [
        ("GetParameterNames", "", True)]
    assert plan.more is True
    follow = h.respond(plan.rpcs[0].rpc_id, gpn_response({"Device.": False}))
    assert follow is not None
    assert follow.rpcs[0].rpc["method"] == "SetParameterValues"
    assert follow.rpcs[0].rpc["parameter_list"][0]["name"] == "Device.ManagementServer.ConnectionRequestUsername"
    assert [p.rpc.get("parameter_path") for p in follow.rpcs[1:]] == ["Device.DeviceInfo.",
                                                                      "Device.ManagementServer."]
    assert h.device is not None and h.device.data_model == "Device."


def test_bootstrap_of_a_known_device_drops_its_old_work_but_not_a_transfer_it_reports(
        clock: Clock, cfg: PlanConfig) -> None:
    h = Harness(clock, cfg)
    h.inform(inform("1 BOOT"))
    h.end()
    old_creds = (h.device.pending_cr_username, h.device.pending_cr_password) if h.device else None
    queued = h.add(make_task("reboot", {}, task_id="queued"))
    download = h.add(make_task("download", {"file_name": "cfg.xml"}, task_id="dl", command_key="dl.1",
                               status=TaskStatus.PENDING_COMPLETION))

    plan = h.inform(inform("0 BOOTSTRAP", "1 BOOT", "7 TRANSFER COMPLETE", ("M Download", "dl.1"),
                           session="s2"))

    assert h.tasks[queued.id].status is TaskStatus.CANCELLED
    assert "0 BOOTSTRAP" in h.tasks[queued.id].reason
    assert [e.kind for e in h.events if e.details.get("task_id") == queued.id] == ["task_cancelled"]
    assert h.tasks[download.id].status is TaskStatus.PENDING_COMPLETION  # its TransferComplete follows
    assert h.device is not None
    assert (h.device.pending_cr_username, h.device.pending_cr_password) != old_creds
    assert plan.rpcs[0].rpc["method"] == "SetParameterValues"


def test_first_contact_without_bootstrap_provisions_but_keeps_work_queued_before_it(
        clock: Clock, cfg: PlanConfig) -> None:
    h = Harness(clock, cfg)
    queued = h.add(make_task("getRPCMethods", {}, task_id="early"))
    plan = h.inform(inform("1 BOOT"))
    methods = [p.rpc["method"] for p in plan.rpcs]
    assert methods[0] == "SetParameterValues"  # provisioning first
    assert methods[-1] == "GetRPCMethods"  # then what the operator queued before we ever saw it
    assert h.tasks[queued.id].status is TaskStatus.IN_PROGRESS


def test_a_failed_credential_set_is_retried_and_credentials_stay_unused(clock: Clock, cfg: PlanConfig) -> None:
    h = Harness(clock, cfg)
    plan = h.inform(inform("0 BOOTSTRAP"))
    h.fault(plan.rpcs[0].rpc_id, 9002, string="Internal error", method="SetParameterValues")
    task = h.task_named("bootstrap")
    assert task.status is TaskStatus.PENDING and task.next_attempt_at is not None
    assert h.device is not None and h.device.cr_username is None and h.device.pending_cr_password


def test_periodic_inform_setting_zero_leaves_periodic_informs_alone(clock: Clock) -> None:
    h = Harness(clock, PlanConfig(periodic_inform_interval=0))
    plan = h.inform(inform("0 BOOTSTRAP"))
    names = [v["name"] for v in plan.rpcs[0].rpc["parameter_list"]]
    assert names == [f"{MS}ConnectionRequestUsername", f"{MS}ConnectionRequestPassword"]


def test_names_short_of_a_batch_are_read_in_the_same_plan_when_no_walk_is_out(clock: Clock, cfg: PlanConfig) -> None:
    def flat(rpc: dict[str, Any]) -> dict[str, Any]:
        if rpc["method"] == "GetParameterNames":
            tree = {DI: {f"{DI}Manufacturer": False, f"{DI}SoftwareVersion": False, f"{DI}UpTime": False},
                    MS: {f"{MS}URL": True, f"{MS}PeriodicInformInterval": True}}
            return gpn_response(tree[rpc["parameter_path"]])
        return _walk_answers(rpc)

    h = Harness(clock, cfg)
    plan = h.inform(inform("0 BOOTSTRAP", "1 BOOT"))
    second = h.answer_all(plan, flat)
    assert second is not None
    # Five names, batches of two: the last one goes with the full batches, not a round trip later.
    assert [len(p.rpc["parameter_names"]) for p in second.rpcs] == [2, 2, 1] and second.more is False
    assert h.answer_all(second, flat) is None
    task = h.task_named("bootstrap")
    assert task.status is TaskStatus.SUCCEEDED and len(task.result["parameters"]) == 5
    assert all("value" in p for p in task.result["parameters"])
