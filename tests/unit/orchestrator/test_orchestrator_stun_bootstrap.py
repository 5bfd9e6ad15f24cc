"""Bootstrap turns STUN on (TR-069 Annex G) where the ACS has a STUN server and the CPE has STUN."""

from __future__ import annotations

from typing import Any

from services.bus.events import SessionPlan
from services.orchestrator.tasks import TaskStatus
from tests.unit.orchestrator.orchestrator_builders import (
    IGD,
    Clock,
    Harness,
    gpn_response,
    gpv_response,
    inform,
    small_config,
)

STUN = small_config(stun_server="stun.example.net", stun_port=3479, stun_min_keepalive=45)


def _stun_rpc(plan: SessionPlan) -> dict[str, Any] | None:
    for planned in plan.rpcs:
        names = [v["name"] for v in planned.rpc.get("parameter_list", [])]
        if any(name.endswith("ManagementServer.STUNEnable") for name in names):
            return planned.rpc
    return None


def _values(rpc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {v["name"]: (v["value"]["value"], v["value"]["type"]) for v in rpc["parameter_list"]}


def _answers(rpc: dict[str, Any]) -> dict[str, Any]:
    if rpc["method"] == "SetParameterValues":
        return {"method": "SetParameterValuesResponse", "status": 0}
    if rpc["method"] == "GetParameterNames":
        return gpn_response({})
    return gpv_response({name: "x" for name in rpc["parameter_names"]})


def test_a_tr098_bootstrap_sets_the_stun_server_in_its_own_rpc(clock: Clock) -> None:
    h = Harness(clock, STUN)
    plan = h.inform(inform("0 BOOTSTRAP", "1 BOOT"))
    rpc = _stun_rpc(plan)
    assert rpc is not None
    ms = f"{IGD}ManagementServer."
    assert _values(rpc) == {
        f"{ms}STUNEnable": ("true", "xsd:boolean"),
        f"{ms}STUNServerAddress": ("stun.example.net", "xsd:string"),
        f"{ms}STUNServerPort": ("3479", "xsd:unsignedInt"),
        f"{ms}STUNMinimumKeepAlivePeriod": ("45", "xsd:unsignedInt"),
        f"{ms}STUNMaximumKeepAlivePeriod": ("-1", "xsd:int"),
    }
    # Not in the credentials' SetParameterValues: a CPE without STUN must still take those.
    credentials = plan.rpcs[0].rpc
    assert f"{ms}ConnectionRequestUsername" in _values(credentials) and credentials is not rpc


def test_a_tr181_bootstrap_sets_it_under_device(clock: Clock) -> None:
    h = Harness(clock, STUN)
    plan = h.inform(inform("0 BOOTSTRAP", parameters={"Device.DeviceInfo.SoftwareVersion": "1",
                                                      "Device.ManagementServer.ConnectionRequestURL": "http://a/"}))
    rpc = _stun_rpc(plan)
    assert rpc is not None
    assert _values(rpc)["Device.ManagementServer.STUNServerAddress"] == ("stun.example.net", "xsd:string")


def test_stun_credentials_go_only_when_configured(clock: Clock) -> None:
    h = Harness(clock, small_config(stun_server="192.0.2.1", stun_username="cpes", stun_password="stun-secret"))
    rpc = _stun_rpc(h.inform(inform("0 BOOTSTRAP")))
    assert rpc is not None
    values = _values(rpc)
    assert values[f"{IGD}ManagementServer.STUNUsername"] == ("cpes", "xsd:string")
    assert values[f"{IGD}ManagementServer.STUNPassword"] == ("stun-secret", "xsd:string")
    assert "stun-secret" not in repr(h.cfg)


def test_no_stun_server_no_stun_rpc(clock: Clock) -> None:
    h = Harness(clock, small_config())
    plan = h.inform(inform("0 BOOTSTRAP"))
    assert _stun_rpc(plan) is None
    assert [p.rpc["method"] for p in plan.rpcs].count("SetParameterValues") == 1


def test_the_cpe_taking_it_shows_in_the_bootstrap_result(clock: Clock) -> None:
    h = Harness(clock, STUN)
    plan: SessionPlan | None = h.inform(inform("0 BOOTSTRAP"))
    while plan is not None:
        plan = h.answer_all(plan, _answers)
    task = h.task_named("bootstrap")
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result["stun"] == "enabled"


def test_a_cpe_without_stun_faults_and_the_bootstrap_goes_on(clock: Clock) -> None:
    h = Harness(clock, STUN)
    plan = h.inform(inform("0 BOOTSTRAP"))
    stun_id = next(p.rpc_id for p in plan.rpcs if p.rpc is _stun_rpc(plan))
    follow: SessionPlan | None = None
    for planned in plan.rpcs:
        if planned.rpc_id == stun_id:
            follow = h.fault(stun_id, 9005, string="Invalid parameter name", method="SetParameterValues")
        else:
            follow = h.respond(planned.rpc_id, _answers(planned.rpc))
    while follow is not None:
        follow = h.answer_all(follow, _answers)
    task = h.task_named("bootstrap")
    assert task.status is TaskStatus.SUCCEEDED
    assert "stun" not in task.result
    assert {"rpc": "stun", "code": 9005, "string": "Invalid parameter name"} in task.result["errors"]
    assert h.device is not None and h.device.cr_username  # the credentials still took
