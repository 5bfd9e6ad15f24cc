"""Bootstrap gives a TR-181 CPE its XMPP account and points its connection requests at it
(TR-069 Annex K) where the ACS has an XMPP server for CPEs: provisioning.py, "XMPP settings"."""

from __future__ import annotations

from typing import Any

from services.bus.events import SessionPlan
from services.orchestrator import cpecreds
from services.orchestrator import provisioning as prov
from services.orchestrator.tasks import TaskStatus
from tests.unit.orchestrator.orchestrator_builders import (
    DEVICE,
    Clock,
    Harness,
    gpn_response,
    gpv_response,
    inform,
    small_config,
)

XMPP = small_config(xmpp_cpe_server="xmpp.example.net:5223", xmpp_cpe_domain="cpes.example.net",
                    xmpp_acs_jid="acs@example.net")
TR181 = {"Device.DeviceInfo.SoftwareVersion": "1", "Device.ManagementServer.ConnectionRequestURL": "http://a/"}
CONN = "Device.XMPP.Connection."


class Cpe:
    """Answers every RPC as a CPE with the given XMPP rows would, recording what it was sent."""

    def __init__(self, names: list[str], instances: list[int] | None = None) -> None:
        self.names, self.instances, self.sent = names, list(instances or []), []

    def __call__(self, rpc: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(rpc)
        if rpc["method"] == "SetParameterValues":
            return {"method": "SetParameterValuesResponse", "status": 0}
        if rpc["method"] == "AddObject":
            return {"method": "AddObjectResponse", "instance_number": self.instances.pop(0), "status": 0}
        if rpc["method"] == "GetParameterNames":
            if rpc["parameter_path"] == CONN:
                return gpn_response(dict.fromkeys(self.names, True))
            return gpn_response({})
        return gpv_response({name: "x" for name in rpc["parameter_names"]})

    def xmpp_rpcs(self) -> list[tuple[str, str]]:
        out = []
        for rpc in self.sent:
            target = rpc.get("parameter_path") or rpc.get("object_name") or ""
            if target.startswith("Device.XMPP."):
                out.append((rpc["method"], target))
            elif rpc["method"] == "SetParameterValues" and any(
                    v["name"].startswith("Device.XMPP.") for v in rpc["parameter_list"]):
                out.append(("SetParameterValues", "xmpp"))
        return out

    def xmpp_values(self) -> dict[str, tuple[str, str]]:
        spv = next(r for r in self.sent if r["method"] == "SetParameterValues"
                   and any(v["name"].startswith("Device.XMPP.") for v in r["parameter_list"]))
        return {v["name"]: (v["value"]["value"], v["value"]["type"]) for v in spv["parameter_list"]}


def _bootstrap(h: Harness, cpe: Cpe, parameters: dict[str, str] | None = None) -> dict[str, Any]:
    plan: SessionPlan | None = h.inform(inform("0 BOOTSTRAP", parameters=TR181 if parameters is None else parameters))
    while plan is not None:
        plan = h.answer_all(plan, cpe)
    task = h.task_named("bootstrap")
    assert task.status is TaskStatus.SUCCEEDED, task
    return task.result


def test_an_existing_connection_gets_a_server_and_the_account(clock: Clock) -> None:
    h = Harness(clock, XMPP)
    cpe = Cpe([CONN, f"{CONN}1.", f"{CONN}1.Enable", f"{CONN}1.Server."], instances=[2])
    result = _bootstrap(h, cpe)
    assert cpe.xmpp_rpcs() == [("GetParameterNames", CONN), ("AddObject", f"{CONN}1.Server."),
                               ("SetParameterValues", "xmpp")]
    names = next(r for r in cpe.sent if r.get("parameter_path") == CONN)
    assert names["next_level"] is False  # one round trip for the whole table
    assert cpe.xmpp_values() == {
        f"{CONN}1.Username": (prov.xmpp_username(DEVICE), "xsd:string"),
        f"{CONN}1.Password": (f"xmpp-secret-of-{DEVICE}", "xsd:string"),
        f"{CONN}1.Domain": ("cpes.example.net", "xsd:string"),
        f"{CONN}1.Resource": ("cwmp", "xsd:string"),
        f"{CONN}1.ServerConnectAlgorithm": ("ServerTable", "xsd:string"),
        f"{CONN}1.Server.2.ServerAddress": ("xmpp.example.net", "xsd:string"),
        f"{CONN}1.Server.2.Port": ("5223", "xsd:unsignedInt"),
        f"{CONN}1.Server.2.Enable": ("true", "xsd:boolean"),
        f"{CONN}1.Enable": ("true", "xsd:boolean"),
        "Device.ManagementServer.ConnReqXMPPConnection": ("Device.XMPP.Connection.1", "xsd:string"),
        "Device.ManagementServer.ConnReqAllowedJabberIDs": ("acs@example.net", "xsd:string"),
    }
    assert result["xmpp"] == "provisioned"
    assert h.device is not None and h.device.cr_username  # the other bootstrap settings took too


def test_a_cpe_without_a_connection_gets_one_added(clock: Clock) -> None:
    h = Harness(clock, XMPP)
    cpe = Cpe([CONN], instances=[3, 1])
    result = _bootstrap(h, cpe)
    assert cpe.xmpp_rpcs() == [("GetParameterNames", CONN), ("AddObject", CONN), ("AddObject", f"{CONN}3.Server."),
                               ("SetParameterValues", "xmpp")]
    values = cpe.xmpp_values()
    assert values[f"{CONN}3.Server.1.ServerAddress"] == ("xmpp.example.net", "xsd:string")
    assert values["Device.ManagementServer.ConnReqXMPPConnection"][0] == "Device.XMPP.Connection.3"
    assert result["xmpp"] == "provisioned"


def test_the_lowest_connection_and_server_are_reused(clock: Clock) -> None:
    h = Harness(clock, XMPP)
    cpe = Cpe([CONN, f"{CONN}4.", f"{CONN}4.Server.", f"{CONN}4.Server.7.", f"{CONN}4.Server.5.",
               f"{CONN}4.Server.5.Port", f"{CONN}9.", f"{CONN}9.Server.1."])
    _bootstrap(h, cpe)
    assert cpe.xmpp_rpcs() == [("GetParameterNames", CONN), ("SetParameterValues", "xmpp")]
    assert f"{CONN}4.Server.5.ServerAddress" in cpe.xmpp_values()


def test_a_cpe_without_xmpp_faults_and_the_bootstrap_goes_on(clock: Clock) -> None:
    h = Harness(clock, XMPP)
    plan = h.inform(inform("0 BOOTSTRAP", parameters=TR181))
    cpe = Cpe([])
    follow: SessionPlan | None = None
    for planned in plan.rpcs:
        if planned.rpc.get("parameter_path") == CONN:
            follow = h.fault(planned.rpc_id, 9005, string="Invalid parameter name", method="GetParameterNames")
        else:
            follow = h.respond(planned.rpc_id, cpe(planned.rpc))
    while follow is not None:
        follow = h.answer_all(follow, cpe)
    task = h.task_named("bootstrap")
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result["xmpp"] == "refused: fault 9005 on names: Invalid parameter name"
    assert not [t for t in h.tasks.values() if t.origin == "self-heal"]  # a missing XMPP. is no stale model
    assert h.device is not None and h.device.cr_username


def test_a_refused_set_leaves_the_other_settings(clock: Clock) -> None:
    h = Harness(clock, XMPP)
    plan: SessionPlan | None = h.inform(inform("0 BOOTSTRAP", parameters=TR181))
    cpe = Cpe([CONN, f"{CONN}1.", f"{CONN}1.Server.1."])
    while plan is not None:
        follow = None
        for planned in plan.rpcs:
            rpc = planned.rpc
            if rpc["method"] == "SetParameterValues" and any(v["name"].startswith("Device.XMPP.")
                                                              for v in rpc["parameter_list"]):
                follow = h.fault(planned.rpc_id, 9007, string="Invalid parameter value", method="SetParameterValues")
            else:
                follow = h.respond(planned.rpc_id, cpe(rpc))
        plan = follow
    task = h.task_named("bootstrap")
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result["xmpp"].startswith("refused: fault 9007 on set")
    assert h.device is not None and h.device.cr_username


def test_the_xmpp_password_is_in_no_task_record(clock: Clock) -> None:
    h = Harness(clock, XMPP)
    _bootstrap(h, Cpe([CONN, f"{CONN}1.", f"{CONN}1.Server.1."]))
    secret = f"xmpp-secret-of-{DEVICE}"
    for task in h.tasks.values():
        assert secret not in repr(task.model_dump())
    assert h.device is not None and secret not in repr(h.device)
    assert all(secret not in repr(e) for e in h.events)


def test_a_tr098_cpe_and_an_acs_without_cpe_xmpp_send_nothing(clock: Clock) -> None:
    tr098 = Cpe([])
    _bootstrap(Harness(clock, XMPP), tr098, parameters={})
    assert tr098.xmpp_rpcs() == []
    unset = Cpe([])
    _bootstrap(Harness(Clock(), small_config(xmpp_cpe_domain="cpes.example.net")), unset)
    assert unset.xmpp_rpcs() == []


def test_usernames_are_jid_safe_and_distinct() -> None:
    assert prov.xmpp_username("00D09E-HG8245-ABC123") == "cpe-00d09e-hg8245-abc123"
    spaced = prov.xmpp_username("00D09E-Home%20Gateway-1")
    assert spaced.startswith("cpe-00d09e-home_20gateway-1-")
    assert set(spaced) <= set("abcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert prov.xmpp_username("A-B C-1") != prov.xmpp_username("A-B_C-1")


def test_the_password_is_stable_per_device_and_its_own() -> None:
    first = cpecreds.derive_xmpp_password("key", "dev-1")
    assert first == cpecreds.derive_xmpp_password("key", "dev-1") and len(first) == 32
    assert first != cpecreds.derive_xmpp_password("key", "dev-2")
    assert first != cpecreds.derive_xmpp_password("other-key", "dev-1")
    assert first != cpecreds.derive_password("key", "dev-1", "xmpp")


def test_an_addobject_answer_without_an_instance_number_ends_xmpp(clock: Clock) -> None:
    class NoNumber(Cpe):
        def __call__(self, rpc: dict[str, Any]) -> dict[str, Any]:
            if rpc["method"] == "AddObject":
                self.sent.append(rpc)
                return {"method": "AddObjectResponse", "status": 0}
            return super().__call__(rpc)

    h = Harness(clock, XMPP)
    cpe = NoNumber([CONN])
    result = _bootstrap(h, cpe)
    assert cpe.xmpp_rpcs() == [("GetParameterNames", CONN), ("AddObject", CONN)]
    assert result["xmpp"] == "refused: AddObject answered no instance number"
