"""Inform event codes as policy triggers: "M <method>" and vendor "X <OUI> <event>" codes, by name."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from services.orchestrator.apimodels import PolicyIn
from services.orchestrator.policies import Policy, PolicyTask, inform_events
from services.orchestrator.state import PlanConfig
from tests.unit.orchestrator.orchestrator_builders import IGD, T0, Clock, Harness, inform

SPV = PolicyTask(name="setParameterValues", args={"parameter_values": [
    {"name": f"{IGD}Time.NTPServer1", "value": "pool.ntp.org", "type": "xsd:string"}]})


def _policy(*events: str) -> Policy:
    return Policy(id="p-raw", name="raw", events=list(events), created_at=T0, tasks=[SPV])  # type: ignore[arg-type]


def test_m_and_vendor_codes_are_events_of_the_inform() -> None:
    events = inform_events(["1 BOOT", "M Reboot", "X 00D09E RESET_BUTTON", "M X_ACME_Reflash"], False)
    assert {"boot", "M Reboot", "X 00D09E RESET_BUTTON", "M X_ACME_Reflash"} <= events


@pytest.mark.parametrize(("trigger", "codes", "fires"), [
    ("X 00D09E RESET_BUTTON", ("4 VALUE CHANGE", "X 00D09E RESET_BUTTON"), True),
    ("X 00D09E RESET_BUTTON", ("4 VALUE CHANGE", "X 00D09E OTHER"), False),
    ("M X_ACME_Reflash", ("M X_ACME_Reflash",), True),
    ("M ScheduleDownload", ("7 TRANSFER COMPLETE", ("M ScheduleDownload", "k1")), True),
    ("M ScheduleDownload", ("7 TRANSFER COMPLETE", ("M Download", "k1")), False),
])
def test_a_raw_event_code_triggers_its_policy_only(clock: Clock, cfg: PlanConfig, trigger: str,
                                                   codes: tuple[str | tuple[str, str], ...], fires: bool) -> None:
    h = Harness(clock, cfg, policies=[_policy(trigger)])
    h.inform(inform("1 BOOT", session="s0"))
    h.end(session="s0")
    h.inform(inform(*codes))
    assert any(t.origin == "policy:raw" for t in h.tasks.values()) is fires


@pytest.mark.parametrize("bad", ["M", "M ", "X 00D09E", "Q something", "boot_up", "M two words"])
def test_other_strings_are_refused_as_triggers(bad: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(PolicyIn).validate_python({"name": "p", "events": [bad], "tasks": [
            {"name": "reboot"}]})


def test_named_events_and_codes_mix_in_one_policy() -> None:
    body = TypeAdapter(PolicyIn).validate_python({"name": "p", "events": ["boot", "X 00D09E RESET_BUTTON"],
                                                  "tasks": [{"name": "reboot"}]})
    assert body.events == ["boot", "X 00D09E RESET_BUTTON"]
