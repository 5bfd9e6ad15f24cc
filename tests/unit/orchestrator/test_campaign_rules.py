"""The pure decisions of firmware campaigns: waves, eligibility, windows, outcomes, stop rules, gates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.bus.events import utcnow
from services.orchestrator import campaigns as C
from services.orchestrator.campaign_runner import CampaignConfig, CampaignRunner
from simulator.config import FleetSettings

# A Wednesday, 10:30 UTC (11:30 in Paris in winter).
WED = datetime(2026, 1, 7, 10, 30, tzinfo=UTC)


def test_wave_targets_count_the_canary_first_and_leave_the_rest_to_the_last_wave() -> None:
    targets = C.wave_targets(200, C.WaveSpec(percent=10), [C.WaveSpec(size=50), C.WaveSpec(percent=100)])
    assert targets == [20, 50, None]
    assert C.wave_targets(3, C.WaveSpec(percent=1), [C.WaveSpec(percent=100)]) == [1, None]
    with pytest.raises(ValidationError):
        C.WaveSpec(size=3, percent=5)


def test_task_ids_are_the_same_for_one_attempt_and_differ_between_attempts() -> None:
    cid = "a" * 32
    assert C.campaign_task_id(cid, "dev", 0) == C.campaign_task_id(cid, "dev", 0)
    assert C.campaign_task_id(cid, "dev", 0) != C.campaign_task_id(cid, "dev", 1)


def test_eligibility_by_product_class_and_current_version() -> None:
    targets = {"Box": "3.0.0"}
    any_version = C.Eligibility()
    assert C.eligible("Box", "1.0", targets, any_version) == (True, "")
    assert C.eligible("Hub", "1.0", targets, any_version)[1] == "no firmware in the campaign for product class 'Hub'"
    assert C.eligible("Box", "3.0.0", targets, any_version)[1] == "already on the target version 3.0.0"
    listed = C.Eligibility(versions=["2.0"])
    assert C.eligible("Box", "2.0", targets, listed)[0]
    assert C.eligible("Box", "2.1", targets, listed)[1] == "software version 2.1 is not eligible"
    ranged = C.Eligibility(min_version="1.9", max_version="2.10")
    assert C.eligible("Box", "2.9.1", targets, ranged)[0]  # numbers compare as numbers
    assert not C.eligible("Box", "2.11", targets, ranged)[0]
    assert not C.eligible("Box", None, targets, ranged)[0]


def test_windows_in_their_own_time_zone_and_past_midnight() -> None:
    paris_mornings = [C.MaintenanceWindow(weekdays=["wed"], start="11:00", end="12:00", timezone="Europe/Paris")]
    assert C.in_window(paris_mornings, WED)
    assert not C.in_window(paris_mornings, WED + timedelta(hours=1))
    assert not C.in_window(paris_mornings, WED + timedelta(days=1))
    nights = [C.MaintenanceWindow(weekdays=["tue"], start="22:00", end="02:00")]
    assert C.in_window(nights, WED.replace(hour=1))  # Tuesday night, after midnight
    assert not C.in_window(nights, WED.replace(hour=3))
    assert not C.in_window(nights, WED.replace(hour=23))  # Wednesday night is not listed
    assert C.in_window([], WED)
    opens = C.next_window_start(paris_mornings, WED + timedelta(hours=2))
    assert opens is not None and opens.date() == (WED + timedelta(days=7)).date()
    with pytest.raises(ValidationError):
        C.MaintenanceWindow(timezone="Mars/Olympus")


def test_the_post_upgrade_check_needs_the_target_version_within_the_timeout() -> None:
    later = WED + timedelta(minutes=5)
    assert C.device_outcome("succeeded", "", "3.0", "3.0", WED, later, 0, 0) == ("upgraded", "")
    assert C.device_outcome("succeeded", "", "1.0", "3.0", WED, later, 0, 0) == ("in_progress", "")
    outcome, why = C.device_outcome("succeeded", "", "1.0", "3.0", later, later, 0, 0)
    assert outcome == "failed" and "did not come back with 3.0" in why
    assert C.device_outcome("pending", "", None, "3.0", later, later, 0, 0)[0] == "failed"
    assert C.device_outcome("failed", "9010 File transfer failure", None, "3.0", WED, later, 0, 1) == \
        ("retry", "9010 File transfer failure")
    assert C.device_outcome("failed", "boom", None, "3.0", WED, later, 1, 1) == ("failed", "boom")


def test_stop_rules_wait_for_a_full_window_and_count_failures() -> None:
    rate = C.StopRules(max_failure_rate=0.25, window=10)
    assert C.stop_reason(rate, [True] * 9, 9) is None  # not a full window yet
    assert C.stop_reason(rate, [True, True, True] + [False] * 7, 3) == \
        "stop rule: 30% of the last 10 devices failed (limit 25%)"
    assert C.stop_reason(rate, [True, True] + [False] * 8, 2) is None
    assert C.stop_reason(C.StopRules(max_failures=5), [], 5) == "stop rule: 5 devices failed (limit 5)"


def test_gates_success_rate_soak_and_approval() -> None:
    counts = {"upgraded": 7, "failed": 3}
    assert C.gate(C.Gates(min_success_rate=0.8), counts, None, WED, False)[0] == "fail"
    soak = C.Gates(soak_seconds=600)
    assert C.gate(soak, counts, WED, WED + timedelta(seconds=599), False)[0] == "wait"
    assert C.gate(soak, counts, WED, WED + timedelta(seconds=600), False) == ("pass", "")
    approval = C.Gates(manual_approval=True)
    assert C.gate(approval, counts, None, WED, False)[0] == "wait"
    assert C.gate(approval, counts, None, WED, True)[0] == "pass"


def test_progress_is_read_from_the_stored_counts() -> None:
    doc = {"total": 1_000_000, "selection_done": False,
           "waves": [{"seen": 1000, "counts": {"upgraded": 990, "failed": 4, "skipped": 6}},
                     {"seen": 500, "counts": {"waiting": 480, "in_progress": 20}}]}
    counts = C.progress(doc)
    assert counts == {"eligible": 998_500, "waiting": 480, "in_progress": 20, "upgraded": 990, "failed": 4,
                      "skipped": 6}


def test_the_simulator_spreads_a_share_evenly() -> None:
    settings = FleetSettings(fail_share=0.3, offline_share=0.1)
    failing = [i for i in range(100) if settings.fails(i)]
    assert len(failing) == 30
    assert all(sum(settings.fails(i) for i in range(start, start + 10)) == 3 for start in range(0, 90, 10))
    assert sum(settings.goes_offline(i) for i in range(100)) == 10
    assert not any(FleetSettings().fails(i) for i in range(100))


async def test_a_clock_stepped_back_during_a_round_does_not_push_the_next_round_away() -> None:
    """The CI failure of 2026-12-04: the test's clock went from noon back to 02:30 while a round ran,
    and the round's "in 0.1 s" became "in 9.5 hours" (the delay was taken against a fresh reading)."""
    noon = datetime(2026, 1, 7, 11, 0, tzinfo=UTC)
    clock = [noon]
    runner = CampaignRunner(None, None, None, None, None, None, None,  # type: ignore[arg-type]
                            config=CampaignConfig(tick_seconds=0.1, clock=lambda: clock[0]))
    round_now = runner.now()
    clock[0] = noon - timedelta(hours=9, minutes=30)  # stepped back while the round worked
    before = utcnow()
    next_round = runner._later(round_now + timedelta(seconds=0.1), round_now)
    assert timedelta(0) <= next_round - before <= timedelta(seconds=1)
