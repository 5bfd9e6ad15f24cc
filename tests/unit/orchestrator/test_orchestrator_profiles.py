"""Configuration profiles in the planner: merge by priority, plan the difference, drift, report-only."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from services.orchestrator import profiles as P
from services.orchestrator.state import PlanConfig
from services.orchestrator.tasks import TaskStatus
from tests.unit.orchestrator.orchestrator_builders import IGD, SEED_PARAMETERS, T0, Clock, Harness, inform

NTP = f"{IGD}Time.NTPServer1"
INTERVAL = f"{IGD}ManagementServer.PeriodicInformInterval"


def _profile(name: str, priority: int, parameters: list[dict[str, Any]], selector: dict[str, Any] | None = None,
             mode: str = "enforce", **extra: Any) -> P.Profile:
    return P.Profile(id=f"id-{name}", name=name, priority=priority, selector=selector or {}, mode=mode,  # type: ignore[arg-type]
                     parameters=[P.DesiredParameter(**p) for p in parameters], created_at=T0, updated_at=T0,
                     **extra)


def _harness(clock: Clock, cfg: PlanConfig, *profiles: P.Profile, variables: P.Variables | None = None) -> Harness:
    cfg = dataclasses.replace(cfg, bootstrap_provisioning=False)  # only the profiles' RPCs
    h = Harness(clock, cfg)
    h.profile_input = P.ProfileInput(P.ProfileSet(profiles), variables or P.Variables())
    return h


def _spv(plan: Any) -> list[dict[str, Any]]:
    return [p.rpc for p in plan.rpcs if p.rpc["method"] == "SetParameterValues"
            and p.rpc["parameter_key"] == P.PARAMETER_KEY]


def _accept(rpc: dict[str, Any]) -> dict[str, Any]:
    method = rpc["method"]
    if method == "SetParameterValues":
        return {"method": "SetParameterValuesResponse", "status": 0}
    if method == "SetParameterAttributes":
        return {"method": "SetParameterAttributesResponse"}
    if method == "GetParameterNames":
        return {"method": "GetParameterNamesResponse", "parameter_list": []}
    return {"method": method + "Response"}


def _session(h: Harness, *codes: str, session: str, parameters: dict[str, str] | None = None) -> Any:
    plan = h.inform(inform(*codes, session=session, parameters=parameters))
    while plan is not None and plan.rpcs:
        follow = h.answer_all(plan, _accept, session=session)
        plan = follow if follow is not None and follow.rpcs else None
    h.end(session=session) if session in h.sessions else None
    return plan


def test_higher_priority_wins_per_parameter_and_templates_fill_in(clock: Clock, cfg: PlanConfig) -> None:
    low = _profile("low", 10, [{"name": "Time.NTPServer1", "value": "low.example"},
                               {"name": "ManagementServer.PeriodicInformInterval", "value": 600}])
    high = _profile("high", 20, [{"name": "Time.NTPServer1", "value": "ntp-{serial_number}.{oui}"}])
    h = _harness(clock, cfg, low, high)
    plan = h.inform(inform("2 PERIODIC"))
    (spv,) = _spv(plan)
    values = {v["name"]: (v["value"]["value"], v["value"]["type"]) for v in spv["parameter_list"]}
    assert values == {NTP: ("ntp-000000000012.09D021", "xsd:string"), INTERVAL: ("600", "xsd:unsignedInt")}
    h.answer_all(plan, _accept)
    h.end()
    assert h.device is not None
    assert {s["state"] for s in h.device.profile_status.values()} == {"compliant"}
    assert [e.kind for e in h.events if e.kind.startswith("profile")] == ["profile_applied"]
    # The next routine Inform plans nothing: the difference is empty.
    plan = h.inform(inform("2 PERIODIC", session="s2"))
    assert plan.rpcs == []


def test_drift_is_corrected_in_enforce_mode_and_reported_in_report_mode(clock: Clock, cfg: PlanConfig) -> None:
    for mode in ("enforce", "report"):
        h = _harness(clock, cfg, _profile("ntp", 1, [{"name": "Time.NTPServer1", "value": "pool.ntp.org"}],
                                          mode=mode))
        _session(h, "2 PERIODIC", session="s1", parameters={**SEED_PARAMETERS, NTP: "pool.ntp.org"})
        assert h.device is not None and h.device.profile_status["id-ntp"]["state"] == "compliant"
        changed = {**SEED_PARAMETERS, NTP: "evil.example"}
        plan = h.inform(inform("4 VALUE CHANGE", session="s2", parameters=changed))
        drift = [e for e in h.events if e.kind == "drift_detected"]
        assert drift and drift[-1].details["parameter"] == NTP and drift[-1].details["value"] == "evil.example"
        if mode == "enforce":
            assert [v["value"]["value"] for s in _spv(plan) for v in s["parameter_list"]] == ["pool.ntp.org"]
            assert drift[-1].details["corrected"] is True
        else:
            assert _spv(plan) == [] and drift[-1].details["corrected"] is False
            assert h.device.profile_status["id-ntp"]["state"] == "drifted"


def test_report_mode_never_sets_anything(clock: Clock, cfg: PlanConfig) -> None:
    h = _harness(clock, cfg, _profile("ntp", 1, [{"name": "Time.NTPServer1", "value": "x"}], mode="report"))
    plan = h.inform(inform("2 PERIODIC"))
    assert _spv(plan) == []
    assert h.device is not None and h.device.profile_status["id-ntp"]["state"] == "pending"


def test_selector_decides_and_variables_fill_per_device(clock: Clock, cfg: PlanConfig) -> None:
    pppoe = _profile("pppoe", 5, [
        {"name": "WANDevice.1.WANConnectionDevice.1.WANPPPConnection.1.Username", "value": "{vars.user}"},
        {"name": "WANDevice.1.WANConnectionDevice.1.WANPPPConnection.1.Password", "value": "{vars.pass}"}],
        selector={"product_class": "IGD Simulator", "DeviceInfo.ProvisioningCode": "WKSS"})
    other = _profile("other", 6, [{"name": "Time.NTPServer1", "value": "x"}], selector={"product_class": "Else"})
    h = _harness(clock, cfg, pppoe, other, variables=P.Variables({"user": "alice", "pass": "s3cret"},
                                                                 frozenset({"pass"})))
    plan = h.inform(inform("2 PERIODIC"))
    (spv,) = _spv(plan)
    assert [v["value"]["value"] for v in spv["parameter_list"]] == ["alice", "s3cret"]
    task = next(t for t in h.tasks.values() if t.origin == P.PROFILE_ORIGIN)
    shown = P.redact_task_args(task)
    assert [v["value"] for v in shown["parameter_values"]] == ["alice", P.REDACTED]
    assert set(h.device.profile_status) == {"id-pppoe"} if h.device else False

    # Without the variables the parameters stay out, and the profile is pending ("unresolved").
    bare = _harness(clock, cfg, pppoe)
    assert _spv(bare.inform(inform("2 PERIODIC"))) == []
    assert bare.device is not None and bare.device.profile_status["id-pppoe"]["state"] == "pending"


def test_a_refused_value_fails_once_and_is_not_retried_until_the_profile_changes(clock: Clock,
                                                                                  cfg: PlanConfig) -> None:
    profile = _profile("ntp", 1, [{"name": "Time.NTPServer1", "value": "x"}])
    h = _harness(clock, cfg, profile)
    plan = h.inform(inform("2 PERIODIC"))
    (rpc_id,) = [p.rpc_id for p in plan.rpcs]
    h.fault(rpc_id, 9007, method="SetParameterValues", string="Invalid parameter value")
    h.end()
    assert [e.kind for e in h.events if e.kind.startswith("profile")] == ["profile_failed"]
    assert h.device is not None and h.device.profile_status["id-ntp"]["state"] == "failing"
    assert h.device.profile_status["id-ntp"]["fault"]["code"] == 9007
    assert h.inform(inform("2 PERIODIC", session="s2")).rpcs == []
    h.end(session="s2") if "s2" in h.sessions else None
    changed = profile.model_copy(update={"parameters": [P.DesiredParameter(name="Time.NTPServer1", value="y")],
                                         "version": 2})
    h.profile_input = P.ProfileInput(P.ProfileSet([changed]))
    plan = h.inform(inform("2 PERIODIC", session="s3"))
    assert [v["value"]["value"] for s in _spv(plan) for v in s["parameter_list"]] == ["y"]


def test_bootstrap_forgets_what_was_applied(clock: Clock, cfg: PlanConfig) -> None:
    h = _harness(clock, cfg, _profile("ntp", 1, [{"name": "Time.NTPServer1", "value": "x"}]))
    _session(h, "2 PERIODIC", session="s1")
    assert h.inform(inform("2 PERIODIC", session="s2")).rpcs == []
    h.end(session="s2") if "s2" in h.sessions else None
    plan = h.inform(inform("0 BOOTSTRAP", session="s3"))
    assert [v["value"]["value"] for s in _spv(plan) for v in s["parameter_list"]] == ["x"]


def test_actions_run_on_their_events_once_while_open(clock: Clock, cfg: PlanConfig) -> None:
    action = P.ProfileAction(events=["boot"], tasks=[{"name": "getParameterValues",  # type: ignore[list-item]
                                                      "args": {"parameter_names": [f"{IGD}DeviceInfo."]}}])
    h = _harness(clock, cfg, _profile("act", 1, [], actions=[action]))
    assert h.inform(inform("2 PERIODIC")).rpcs == []
    plan = h.inform(inform("1 BOOT", session="s2"))
    assert [p.rpc["method"] for p in plan.rpcs] == ["GetParameterValues"]
    assert next(t for t in h.tasks.values() if t.policy_id == "id-act:0").origin == "profile:act"


def test_bad_profiles_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown template"):
        P.DesiredParameter(name="Device.X.Y", value="{nope}")
    with pytest.raises(ValidationError, match="unknown operator"):
        P.ProfileBody(name="x", priority=1, selector={"oui": {"$regex": "."}})
    with pytest.raises(ValidationError, match="given twice"):
        P.ProfileBody(name="x", priority=1, parameters=[{"name": "Device.A.B", "value": 1},  # type: ignore[list-item]
                                                        {"name": "A.B", "value": 2}])


def test_many_profiles_are_indexed_by_their_equalities() -> None:
    many = [_profile(f"p{i}", i, [{"name": "Time.NTPServer1", "value": str(i)}],
                     selector={"product_class": f"class-{i % 100}"}) for i in range(1000)]
    pset = P.ProfileSet(many)
    found = pset.applicable({"_id": "d", "product_class": "class-7", "params": {}})
    assert len(found) == 10 and [c.profile.priority for c in found] == sorted(
        (i for i in range(1000) if i % 100 == 7), reverse=True)
    assert TaskStatus.PENDING  # the enum the tasks use (imported for the type checker)


def test_the_index_finds_exactly_what_evaluating_every_selector_finds() -> None:
    from services.inventory.query import device_document, matches

    selectors: list[dict[str, Any]] = [
        {}, {"product_class": "A"}, {"product_class": {"$in": ["A", "B"]}}, {"tags": "lab"},
        {"tags": {"$in": ["eu", "us"]}}, {"DeviceInfo.ProvisioningCode": "RES"},
        {"DeviceInfo.UpTime": 5}, {"DeviceInfo.UpTime": {"$gt": 3}}, {"oui": "X", "product_class": "B"},
        {"$or": [{"product_class": "C"}, {"tags": "lab"}]}, {"$or": [{"product_class": "C"}, {"oui": {"$ne": "X"}}]},
        {"product_class": {"$ne": "A"}}, {"ManagementServer.PeriodicInformEnable": True},
    ]
    pset = P.ProfileSet([_profile(f"s{i}", i, [], selector=s) for i, s in enumerate(selectors)])
    assert len(pset._rest) < len(selectors) / 2  # most are indexed
    for pc in ("A", "B", "C"):
        for tags in ([], ["lab"], ["eu", "x"]):
            for uptime, code in (("5", "RES"), ("2", "BUS")):
                document = device_document(
                    {"id": "d", "oui": "X" if pc != "C" else "Y", "product_class": pc, "tags": tags},
                    [(f"{IGD}DeviceInfo.UpTime", uptime, "xsd:unsignedInt"),
                     (f"{IGD}DeviceInfo.ProvisioningCode", code, "xsd:string"),
                     (f"{IGD}ManagementServer.PeriodicInformEnable", "1", "xsd:boolean")])
                expected = sorted((c.profile.priority for c in pset.all if matches(c.filter, document)), reverse=True)
                assert [c.profile.priority for c in pset.applicable(document)] == expected, (pc, tags, uptime)


def test_firmware_is_downloaded_only_below_its_version(clock: Clock, cfg: PlanConfig) -> None:
    firmware = P.ProfileFirmware(file_name="fw-2.10.bin", version="2.10.0", file_type="1 Firmware Upgrade Image",
                                 file_size=1000, url="http://files/download/fw-2.10.bin")
    sw = f"{IGD}DeviceInfo.SoftwareVersion"
    for version, expected in (("2.9.5", ["Download"]), ("2.10.0", []), ("10.0", [])):  # natural order
        h = _harness(clock, cfg, _profile("fw", 1, [], firmware=firmware))
        plan = h.inform(inform("2 PERIODIC", parameters={**SEED_PARAMETERS, sw: version}))
        assert [p.rpc["method"] for p in plan.rpcs] == expected, version
        state = h.device.profile_status["id-fw"]["state"] if h.device else None
        assert state == ("pending" if expected else "compliant")
    # Refused: not asked again until the profile changes.
    h = _harness(clock, cfg, _profile("fw", 1, [], firmware=firmware))
    plan = h.inform(inform("2 PERIODIC", parameters={**SEED_PARAMETERS, sw: "1.0"}))
    h.fault(plan.rpcs[0].rpc_id, 9013, method="Download", string="Unsupported protocol")  # permanent
    h.end()
    assert h.device is not None and h.device.profile_status["id-fw"]["state"] == "failing"
    assert h.inform(inform("2 PERIODIC", session="s2", parameters={**SEED_PARAMETERS, sw: "1.0"})).rpcs == []
    # Report-only: nothing is downloaded.
    h = _harness(clock, cfg, _profile("fw", 1, [], firmware=firmware, mode="report"))
    assert h.inform(inform("2 PERIODIC", parameters={**SEED_PARAMETERS, sw: "1.0"})).rpcs == []


def test_versions_compare_as_numbers_part_by_part_whatever_their_length() -> None:
    assert P.below("3.0.9", "3.1.0") and P.below("3.1.0", "3.10.0") and not P.below("3.10.0", "3.1.0")
    assert not P.below("2.010", "2.9") and not P.below(None, "1.0") and not P.below("1.0", "1.0")
    huge = "1." + "9" * 5000
    assert P.below("1.10", huge) and not P.below(huge, "1.10")


def _status_one(rpc: dict[str, Any]) -> dict[str, Any]:
    if rpc["method"] == "SetParameterValues":
        return {"method": "SetParameterValuesResponse", "status": 1}
    return _accept(rpc)


def _read(values: dict[str, str]) -> Any:
    def answer(rpc: dict[str, Any]) -> dict[str, Any]:
        if rpc["method"] == "GetParameterValues":
            return {"method": "GetParameterValuesResponse", "parameter_list": [
                {"name": n, "value": {"value": values[n], "type": "xsd:string"}} for n in rpc["parameter_names"]]}
        return _accept(rpc)
    return answer


def _methods(plan: Any) -> list[str]:
    return [p.rpc["method"] for p in plan.rpcs]


def test_status_one_is_pending_until_a_read_confirms_it(clock: Clock, cfg: PlanConfig) -> None:
    h = _harness(clock, cfg, _profile("ntp", 1, [{"name": "Time.NTPServer1", "value": "pool.ntp.org"}]))
    plan = h.inform(inform("2 PERIODIC"))
    h.answer_all(plan, _status_one)
    h.end()
    assert h.device is not None
    entry = h.device.profile_status["id-ntp"]
    assert entry["state"] == "pending"  # not compliant: the CPE applies it later
    # The next session reads it back (and sends nothing else): the value is there, compliant.
    plan = h.inform(inform("2 PERIODIC", session="s2"))
    assert _methods(plan) == ["GetParameterValues"] and plan.rpcs[0].rpc["parameter_names"] == [NTP]
    h.answer_all(plan, _read({NTP: "pool.ntp.org"}), session="s2")
    h.end(session="s2")
    assert h.device.profile_status["id-ntp"]["state"] == "compliant"
    assert h.inform(inform("2 PERIODIC", session="s3")).rpcs == []
    assert h.device.profile_status["id-ntp"]["state"] == "compliant"


def test_status_one_read_back_old_waits_for_the_reboot_then_resends(clock: Clock, cfg: PlanConfig) -> None:
    h = _harness(clock, cfg, _profile("ntp", 1, [{"name": "Time.NTPServer1", "value": "pool.ntp.org"}]))
    plan = h.inform(inform("2 PERIODIC"))
    h.answer_all(plan, _status_one)
    h.end()
    plan = h.inform(inform("2 PERIODIC", session="s2"))
    h.answer_all(plan, _read({NTP: "old.example"}), session="s2")  # not applied before the reboot
    h.end(session="s2")
    assert h.device is not None and h.device.profile_status["id-ntp"]["state"] == "pending"
    # Neither re-sent nor read again until the device boots.
    assert h.inform(inform("2 PERIODIC", session="s3")).rpcs == []
    h.end(session="s3") if "s3" in h.sessions else None
    plan = h.inform(inform("1 BOOT", session="s4"))
    assert _methods(plan) == ["GetParameterValues"]
    h.answer_all(plan, _read({NTP: "old.example"}), session="s4")  # still old after the reboot
    h.end(session="s4")
    # Then it is due again: sent once more.
    plan = h.inform(inform("2 PERIODIC", session="s5"))
    assert [v["value"]["value"] for s in _spv(plan) for v in s["parameter_list"]] == ["pool.ntp.org"]


def test_status_one_confirmed_by_the_inform_itself(clock: Clock, cfg: PlanConfig) -> None:
    h = _harness(clock, cfg, _profile("ntp", 1, [{"name": "Time.NTPServer1", "value": "pool.ntp.org"}]))
    plan = h.inform(inform("2 PERIODIC"))
    h.answer_all(plan, _status_one)
    h.end()
    from tests.unit.orchestrator.orchestrator_builders import SEED_PARAMETERS as seed
    plan = h.inform(inform("1 BOOT", session="s2", parameters={**seed, NTP: "pool.ntp.org"}))
    assert plan.rpcs == []  # the Inform shows the value: nothing to read
    assert h.device is not None and h.device.profile_status["id-ntp"]["state"] == "compliant"


UPTIME = f"{IGD}DeviceInfo.UpTime"


def test_freshness_reads_what_is_older_than_its_age(clock: Clock, cfg: PlanConfig) -> None:
    fresh = _profile("fresh", 1, [], freshness=[P.Freshness(path="DeviceInfo.UpTime", max_age=600),
                                               P.Freshness(path="WANDevice.1.", max_age=3600)])
    h = _harness(clock, cfg, fresh)
    plan = h.inform(inform("2 PERIODIC"))
    (gpv,) = [p.rpc for p in plan.rpcs]
    assert gpv["method"] == "GetParameterValues" and gpv["parameter_names"] == [UPTIME, f"{IGD}WANDevice.1."]
    h.answer_all(plan, _read({UPTIME: "5", f"{IGD}WANDevice.1.": ""}))
    h.end()
    clock.advance(300)
    assert h.inform(inform("2 PERIODIC", session="s2")).rpcs == []  # both still fresh
    clock.advance(400)  # UpTime is 700 s old now, the subtree 700 s
    plan = h.inform(inform("2 PERIODIC", session="s3"))
    assert [p.rpc["parameter_names"] for p in plan.rpcs] == [[UPTIME]]
    h.answer_all(plan, _read({UPTIME: "705"}), session="s3")
    h.end(session="s3")
    # An Inform that carries the parameter is a read of it: nothing to ask.
    clock.advance(700)
    from tests.unit.orchestrator.orchestrator_builders import SEED_PARAMETERS as seed
    plan = h.inform(inform("2 PERIODIC", session="s4", parameters={**seed, UPTIME: "1405"}))
    assert plan.rpcs == []
    assert h.device is not None and h.device.profile_status["id-fresh"]["state"] == "compliant"


def test_discovery_walks_the_profiles_subtrees_or_everything_at_bootstrap(clock: Clock, cfg: PlanConfig) -> None:
    some = _profile("some", 1, [], discovery=P.Discovery(subtrees=["WANDevice.", "DeviceInfo."]))
    h = Harness(clock, cfg)
    h.profile_input = P.ProfileInput(P.ProfileSet([some]))
    h.inform(inform("0 BOOTSTRAP"))
    walks = [t for t in h.tasks.values() if t.name == "getParameterNames"]
    # DeviceInfo. is walked by the bootstrap already; WANDevice. level by level on its own.
    assert [(t.args["parameter_path"], t.origin) for t in walks] == [(f"{IGD}WANDevice.", "profile-discovery")]
    assert h.inform(inform("2 PERIODIC", session="s2")) is not None
    assert len([t for t in h.tasks.values() if t.name == "getParameterNames"]) == 1  # only at bootstrap

    full = _profile("full", 2, [], discovery=P.Discovery(full=True))
    h = Harness(clock, cfg)
    h.profile_input = P.ProfileInput(P.ProfileSet([some, full]))
    plan = h.inform(inform("0 BOOTSTRAP"))
    (walk,) = [t for t in h.tasks.values() if t.name == "getParameterNames"]
    assert walk.args == {"parameter_path": IGD, "read_values": True, "depth": 32}
    assert plan.more  # the walk goes on level by level after the bootstrap's answers


def test_a_deep_walk_goes_as_deep_as_asked(clock: Clock, cfg: PlanConfig) -> None:
    from services.orchestrator import provisioning as prov
    control, _ = prov.walk_begin("w", ["Device."], cfg, depth=20)
    assert control["max_dots"] == 21
    control, _ = prov.walk_begin("w", ["Device."], cfg)
    assert control["max_dots"] == 1 + cfg.walk_max_depth
