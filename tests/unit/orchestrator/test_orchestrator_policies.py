"""Policies: device matching, the parameter query language, and their tasks at Inform time."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.orchestrator.policies import (
    DeviceFacts,
    Policy,
    PolicyMatch,
    PolicyTask,
    QueryError,
    check_query,
    due_policies,
    inform_events,
    matches,
    query_matches,
)
from services.orchestrator.state import PlanConfig
from services.orchestrator.tasks import TaskStatus
from tests.unit.orchestrator.orchestrator_builders import IGD, T0, Clock, Harness, inform

VALUES = {f"{IGD}DeviceInfo.SoftwareVersion": "1.9.82", f"{IGD}DeviceInfo.ProvisioningCode": "WKSS",
          f"{IGD}ManagementServer.PeriodicInformEnable": "1", f"{IGD}DeviceInfo.UpTime": "900"}
# As the Inform types them: values compare as the inventory stores them (numbers, booleans, text).
TYPES = {f"{IGD}ManagementServer.PeriodicInformEnable": "xsd:boolean", f"{IGD}DeviceInfo.UpTime": "xsd:unsignedInt"}


def _policy(name: str = "ntp", events: list[str] | None = None, priority: int = 100, **match: Any) -> Policy:
    return Policy(id=f"p-{name}", name=name, priority=priority, events=events or ["bootstrap"],  # type: ignore[arg-type]
                  match=PolicyMatch(**match), created_at=T0,
                  tasks=[PolicyTask(name="setParameterValues", args={"parameter_values": [
                      {"name": f"{IGD}Time.NTPServer1", "value": "pool.ntp.org", "type": "xsd:string"}]})])


@pytest.mark.parametrize(("query", "expected"), [
    ({"DeviceInfo.ProvisioningCode": "WKSS"}, True),  # relative to the device's root
    ({f"{IGD}DeviceInfo.ProvisioningCode": "WKSS"}, True),  # absolute
    ({"DeviceInfo.ProvisioningCode": {"$ne": "WKSS"}}, False),
    # Text compares by code point, as in the inventory's MongoDB (no "natural" order any more).
    ({"DeviceInfo.SoftwareVersion": {"$lt": "1.10"}}, False),
    ({"DeviceInfo.SoftwareVersion": {"$gte": "1.9.82", "$lt": "2"}}, True),
    ({"DeviceInfo.UpTime": {"$gt": 1000}}, False),  # numeric
    ({"DeviceInfo.UpTime": 900}, True),
    ({"ManagementServer.PeriodicInformEnable": True}, True),  # CPE booleans are 0/1 or true/false
    ({"DeviceInfo.ProvisioningCode": {"$in": ["A", "WKSS"]}}, True),
    ({"DeviceInfo.ProvisioningCode": {"$nin": ["A", "WKSS"]}}, False),
    ({"DeviceInfo.SoftwareVersion": {"$prefix": "1.9."}}, True),
    ({"DeviceInfo.UpTime": {"$gt": "1000"}}, False),  # a number is not text: no order across kinds
    ({"DeviceInfo.UpTime": "900"}, True),  # equality takes either form
    ({"oui": "09D021"}, False),  # no fields given here: only parameters
    ({"DeviceInfo.Missing": {"$exists": False}}, True),
    ({"DeviceInfo.Missing": {"$ne": "x"}}, True),  # like MongoDB: missing satisfies $ne
    ({"DeviceInfo.Missing": "x"}, False),
    ({"$or": [{"DeviceInfo.ProvisioningCode": "A"}, {"DeviceInfo.UpTime": {"$lte": 900}}]}, True),
    ({"$and": [{"DeviceInfo.ProvisioningCode": "WKSS"}, {"DeviceInfo.UpTime": {"$gt": 900}}]}, False),
])
def test_query_language(query: dict[str, Any], expected: bool) -> None:
    check_query(query)
    assert query_matches(query, VALUES, IGD, TYPES) is expected


def test_versions_with_thousands_of_digits_compare_without_failing() -> None:
    huge = {f"{IGD}DeviceInfo.SoftwareVersion": "1." + "9" * 5000 + ".0"}
    assert query_matches({"DeviceInfo.SoftwareVersion": {"$gt": "1.10"}}, huge, IGD) is True
    # An operand is at most 1,024 characters (the shared query language's bound); the CPE's value is not.
    assert query_matches({"DeviceInfo.SoftwareVersion": {"$lt": "2." + "0" * 1000 + "1"}}, huge, IGD) is True
    assert query_matches({"DeviceInfo.SoftwareVersion": {"$gte": "1.0009"}}, {f"{IGD}DeviceInfo.SoftwareVersion":
                                                                           "1.10"}, IGD) is True  # 10 >= 9


@pytest.mark.parametrize(("query", "message"), [
    ({"Device.X": {"$near": 1}}, "q.Device.X.$near: unknown operator '$near'"),
    ({"$nor": []}, "q: unknown operator '$nor' in place of a field"),
    ({"$or": []}, "q.$or: expected a non-empty list of queries"),
    ({"Device.X": {"$in": "a"}}, "q.Device.X.$in: expected a non-empty list"),
    ({"Device.X": {"$regex": "^a"}}, "q.Device.X.$regex: unknown operator '$regex'"),  # as the inventory
    ({"x": 1}, "q.x: unknown field 'x'"),
])
def test_a_bad_query_is_refused_with_a_precise_message(query: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("$", r"\$").replace("(", r"\(")):
        check_query(query)
    with pytest.raises(ValidationError):
        PolicyMatch(query=query)


def test_device_criteria_and_tags() -> None:
    facts = DeviceFacts(oui="09D021", product_class="IGD Simulator", software_version="1.9.82",
                        data_model=IGD, parameters=VALUES, tags=frozenset({"lab", "eu"}), parameter_types=TYPES)
    assert matches(PolicyMatch(oui="09D021", product_class=["Other", "IGD Simulator"]), facts)
    assert not matches(PolicyMatch(oui="ABCDEF"), facts)
    assert matches(PolicyMatch(tags=["lab"]), facts)
    assert not matches(PolicyMatch(tags=["lab", "us"]), facts)
    assert matches(PolicyMatch(software_version="1.9.82", query={"DeviceInfo.UpTime": {"$gt": 0}}), facts)


def test_inform_events_map_codes_to_policy_event_names() -> None:
    # M and vendor X codes stand for themselves (tests/unit/orchestrator/test_orchestrator_event_triggers.py).
    assert inform_events(["0 BOOTSTRAP", "1 BOOT", "M Reboot", "X 00256D Custom"], first_contact=True) == {
        "any", "bootstrap", "boot", "registered", "M Reboot", "X 00256D Custom"}
    assert inform_events(["4 VALUE CHANGE"], first_contact=False) == {"any", "value_change"}


def test_due_policies_are_enabled_matching_and_ordered_by_priority() -> None:
    facts = DeviceFacts(oui="09D021", data_model=IGD, parameters=VALUES)
    later, first, other = _policy("b", priority=50), _policy("a", priority=10), _policy("c", oui="FFFFFF")
    off = _policy("d").model_copy(update={"enabled": False})
    periodic = _policy("e", events=["periodic"])
    assert [p.name for p in due_policies([later, first, other, off, periodic], facts, {"any", "bootstrap"})] == [
        "a", "b"]


def test_policy_tasks_run_right_after_bootstrap_and_only_once_while_open(clock: Clock, cfg: PlanConfig) -> None:
    h = Harness(clock, cfg, policies=[_policy("ntp", events=["bootstrap", "boot"])])
    plan = h.inform(inform("0 BOOTSTRAP", "1 BOOT"))
    spvs = [p.rpc for p in plan.rpcs if p.rpc["method"] == "SetParameterValues"]
    assert len(spvs) == 2  # bootstrap credentials, then the policy's value
    assert spvs[1]["parameter_list"][0]["name"] == f"{IGD}Time.NTPServer1"
    task = next(t for t in h.tasks.values() if t.policy_id == "p-ntp")
    assert task.origin == "policy:ntp"

    h.end("timeout", unsent=[p.rpc_id for p in plan.rpcs])  # nothing went out
    plan = h.inform(inform("1 BOOT", session="s2"))
    assert len([t for t in h.tasks.values() if t.policy_id == "p-ntp"]) == 1  # still the same task
    assert h.tasks[task.id].status is TaskStatus.IN_PROGRESS


def test_policies_on_tags_see_the_tags_they_are_given(clock: Clock, cfg: PlanConfig) -> None:
    tagged = Harness(clock, cfg, policies=[_policy("lab-only", tags=["lab"])], tags=frozenset({"lab"}))
    untagged = Harness(clock, cfg, policies=[_policy("lab-only", tags=["lab"])])
    tagged.inform(inform("0 BOOTSTRAP"))
    untagged.inform(inform("0 BOOTSTRAP"))
    assert any(t.policy_id for t in tagged.tasks.values())
    assert not any(t.policy_id for t in untagged.tasks.values())
