"""Profile object instances identified by key parameters: created once, updated, deleted."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from services.orchestrator import planner
from services.orchestrator import profiles as P
from services.orchestrator.state import PlanConfig
from services.orchestrator.tasks import TaskStatus
from tests.unit.orchestrator.orchestrator_builders import IGD, T0, Clock, Harness, inform, response

TABLE = f"{IGD}WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.PortMapping."
PORT_8080 = {"path": "WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.PortMapping.",
             "keys": [{"name": "ExternalPort", "value": 8080}, {"name": "PortMappingProtocol", "value": "TCP"}],
             "values": [{"name": "InternalClient", "value": "192.168.1.{serial_number}"},
                        {"name": "InternalPort", "value": 80}, {"name": "PortMappingEnabled", "value": True}]}


class Table:
    """The CPE side of one table, as the simulator keeps it: numbers never reused."""

    def __init__(self, rows: dict[int, dict[str, tuple[str, str]]] | None = None) -> None:
        self.rows = rows or {}
        self.next = max(self.rows, default=0) + 1
        self.adds = 0

    def answer(self, rpc: dict[str, Any]) -> dict[str, Any]:
        method = rpc["method"]
        if method == "GetParameterValues":
            (path,) = rpc["parameter_names"]
            assert path == TABLE
            return {"method": "GetParameterValuesResponse", "parameter_list": [
                {"name": f"{TABLE}{n}.{k}", "value": {"value": v, "type": t}}
                for n, row in sorted(self.rows.items()) for k, (v, t) in row.items()]}
        if method == "AddObject":
            assert rpc["object_name"] == TABLE
            number, self.next = self.next, self.next + 1
            self.adds += 1
            self.rows[number] = {"ExternalPort": ("0", "xsd:unsignedInt"), "PortMappingProtocol": ("TCP", "xsd:string"),
                                 "InternalClient": ("", "xsd:string"), "InternalPort": ("0", "xsd:unsignedInt"),
                                 "PortMappingEnabled": ("false", "xsd:boolean")}
            return {"method": "AddObjectResponse", "instance_number": number, "status": 0}
        if method == "DeleteObject":
            number = int(rpc["object_name"][len(TABLE):].rstrip("."))
            del self.rows[number]
            return {"method": "DeleteObjectResponse", "status": 0}
        if method == "SetParameterValues":
            for entry in rpc["parameter_list"]:
                number, _, name = entry["name"][len(TABLE):].partition(".")
                self.rows[int(number)][name] = (entry["value"]["value"], entry["value"]["type"])
            return {"method": "SetParameterValuesResponse", "status": 0}
        raise AssertionError(method)


def _profile(*objects: dict[str, Any], name: str = "pm", priority: int = 10) -> P.Profile:
    return P.Profile(id=f"id-{name}", name=name, priority=priority, selector={},
                     objects=[P.DesiredObject(**o) for o in objects], created_at=T0, updated_at=T0)


def _harness(clock: Clock, cfg: PlanConfig, *profiles: P.Profile) -> Harness:
    h = Harness(clock, dataclasses.replace(cfg, bootstrap_provisioning=False))
    h.profile_input = P.ProfileInput(P.ProfileSet(profiles))
    return h


def _run(h: Harness, table: Table, session: str) -> list[str]:
    """One whole session; the methods the CPE was sent."""
    sent: list[str] = []
    plan = h.inform(inform("2 PERIODIC", session=session))
    while plan is not None and plan.rpcs:
        sent += [p.rpc["method"] for p in plan.rpcs]
        plan = h.answer_all(plan, table.answer, session=session)
    if session in h.sessions:
        h.end(session=session)
    return sent


def test_a_missing_instance_is_created_once_with_its_keys_and_values(clock: Clock, cfg: PlanConfig) -> None:
    h = _harness(clock, cfg, _profile(PORT_8080))
    table = Table()
    assert _run(h, table, "s1") == ["GetParameterValues", "AddObject", "SetParameterValues"]
    assert table.rows == {1: {"ExternalPort": ("8080", "xsd:unsignedInt"), "PortMappingProtocol": ("TCP", "xsd:string"),
                              "InternalClient": ("192.168.1.000000000012", "xsd:string"),
                              "InternalPort": ("80", "xsd:unsignedInt"), "PortMappingEnabled": ("true", "xsd:boolean")}}
    assert h.device is not None and h.device.profile_status["id-pm"]["state"] == "compliant"
    applied = [e for e in h.events if e.kind == "profile_applied"]
    assert applied[-1].details["objects"] == [{"created": f"{TABLE}1."}]
    # Converged: later sessions send nothing, and never a second instance.
    assert _run(h, table, "s2") == [] and _run(h, table, "s3") == []
    assert table.adds == 1


def test_a_redelivered_add_object_response_is_not_a_second_instance(clock: Clock, cfg: PlanConfig) -> None:
    h = _harness(clock, cfg, _profile(PORT_8080))
    table = Table()
    plan = h.inform(inform("2 PERIODIC"))
    plan = h.answer_all(plan, table.answer)
    assert plan is not None and [p.rpc["method"] for p in plan.rpcs] == ["AddObject"]
    add = plan.rpcs[0]
    event = response(add.rpc_id, table.answer(add.rpc))

    def deliver() -> Any:
        state = h.sessions["s1"]
        assert h.device is not None
        return h.apply(planner.on_response(event, state, h.device, [h.tasks[i] for i in state.task_ids],
                                           clock.env(), h.cfg))

    fill = deliver()
    assert fill is not None and [p.rpc["method"] for p in fill.rpcs] == ["SetParameterValues"]
    assert h.device is not None and f"{TABLE}1." in h.device.profile_applied.values()
    again = deliver()  # Kafka delivers the same answer twice
    assert again is not None and again.rpcs == fill.rpcs  # the same plan, replayed, not a new one
    h.answer_all(fill, table.answer)
    h.end()
    assert table.adds == 1 and list(table.rows) == [1]
    assert h.device.profile_status["id-pm"]["state"] == "compliant"


def test_an_instance_created_in_a_session_that_broke_off_is_reused(clock: Clock, cfg: PlanConfig) -> None:
    h = _harness(clock, cfg, _profile(PORT_8080))
    table = Table()
    plan = h.inform(inform("2 PERIODIC"))
    plan = h.answer_all(plan, table.answer)
    assert plan is not None
    fill = h.answer_all(plan, table.answer)  # AddObject answered: the instance exists, keys still 0
    assert fill is not None and [p.rpc["method"] for p in fill.rpcs] == ["SetParameterValues"]
    h.end(outcome="dropped", unanswered=[fill.rpcs[0].rpc_id])  # the CPE went away before the values
    task = next(t for t in h.tasks.values() if t.name == "profileObjects")
    assert task.status is TaskStatus.PENDING
    clock.advance(3600)
    # The next session reads the table, finds the instance it created (ExternalPort still 0), sets it.
    assert _run(h, table, "s2") == ["GetParameterValues", "SetParameterValues"]
    assert table.adds == 1 and table.rows[1]["ExternalPort"] == ("8080", "xsd:unsignedInt")
    assert h.device is not None and h.device.profile_status["id-pm"]["state"] == "compliant"


def test_an_existing_instance_with_the_keys_is_updated_not_duplicated(clock: Clock, cfg: PlanConfig) -> None:
    h = _harness(clock, cfg, _profile(PORT_8080))
    table = Table({4: {"ExternalPort": ("8080", "xsd:unsignedInt"), "PortMappingProtocol": ("TCP", "xsd:string"),
                       "InternalClient": ("192.168.1.000000000012", "xsd:string"),
                       "InternalPort": ("8000", "xsd:unsignedInt"), "PortMappingEnabled": ("1", "xsd:boolean")},
                   5: {"ExternalPort": ("22", "xsd:unsignedInt"), "PortMappingProtocol": ("TCP", "xsd:string")}})
    plan = h.inform(inform("2 PERIODIC"))
    change = h.answer_all(plan, table.answer)
    assert change is not None
    (spv,) = [p.rpc for p in change.rpcs]
    # Only what differs (a boolean "1" is true), on the instance that matches the keys.
    assert [(v["name"], v["value"]["value"]) for v in spv["parameter_list"]] == [(f"{TABLE}4.InternalPort", "80")]
    h.answer_all(change, table.answer)
    h.end()
    assert table.adds == 0 and set(table.rows) == {4, 5}


def test_no_instance_with_these_values_deletes_every_match(clock: Clock, cfg: PlanConfig) -> None:
    disabled = {"path": PORT_8080["path"], "keys": [{"name": "PortMappingEnabled", "value": False}],
                "present": False}
    h = _harness(clock, cfg, _profile(disabled))
    table = Table({1: {"PortMappingEnabled": ("false", "xsd:boolean")},
                   2: {"PortMappingEnabled": ("true", "xsd:boolean")},
                   3: {"PortMappingEnabled": ("0", "xsd:boolean")}})
    assert _run(h, table, "s1") == ["GetParameterValues", "DeleteObject", "DeleteObject"]
    assert list(table.rows) == [2]
    assert _run(h, table, "s2") == []


def test_preview_counts_object_entries_as_changes(clock: Clock, cfg: PlanConfig) -> None:
    profile = _profile(PORT_8080)
    pset = P.ProfileSet([profile])
    out = P.decide(pset, {"_id": "d"}, {"serial_number": "7"}, IGD, P.ProfileState(), {}, P.Variables(), set(),
                   [], T0)
    (task,) = out.tasks
    assert task[0] == "profileObjects" and task[1]["objects"][0]["path"] == TABLE
    assert out.state.status["id-pm"]["state"] == "pending"
    (entry,) = out.effective.objects.values()
    done = P.ProfileState(applied={"#" + entry.id: entry.digest()})
    again = P.decide(pset, {"_id": "d"}, {"serial_number": "7"}, IGD, done, {}, P.Variables(), set(), [], T0)
    assert again.tasks == [] and again.state.status["id-pm"]["state"] == "compliant"


def test_bad_object_entries_are_refused() -> None:
    with pytest.raises(ValidationError, match="absent instance has no values"):
        P.DesiredObject(path="NAT.PortMapping.", keys=[{"name": "Enable", "value": False}],  # type: ignore[list-item]
                        values=[{"name": "Alias", "value": "x"}], present=False)  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="must be an object path"):
        P.DesiredObject(path="NAT.PortMapping", keys=[{"name": "Enable", "value": False}])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        P.DesiredObject(path="NAT.PortMapping.", keys=[])


def test_secret_values_of_an_entry_are_masked_in_the_task(clock: Clock, cfg: PlanConfig) -> None:
    entry = {**PORT_8080, "values": [{"name": "InternalClient", "value": "{vars.host}"},
                                     {"name": "X_Password", "value": "hunter2"}]}
    h = _harness(clock, cfg, _profile(entry))
    h.profile_input = P.ProfileInput(P.ProfileSet([_profile(entry)]), P.Variables({"host": "10.0.0.9"},
                                                                                  frozenset({"host"})))
    h.inform(inform("2 PERIODIC"))
    task = next(t for t in h.tasks.values() if t.name == "profileObjects")
    (shown,) = P.redact_task_args(task)["objects"]
    assert shown["values"] == [["InternalClient", P.REDACTED, "xsd:string"], ["X_Password", P.REDACTED, "xsd:string"]]
    assert task.args["objects"][0]["values"][0][1] == "10.0.0.9"  # sent as it is
    # The API's view of the task (GET /tasks/{id}) shows neither.
    public = task.public()["args"]["objects"][0]
    assert public["values"] == shown["values"] and "10.0.0.9" not in str(task.public())
    assert "hunter2" not in str(task.public())
