"""Admission control's decision (services/gateway/admission.py): pure, fed by hand.

Durations are of requests; a routine session is two of them."""

from __future__ import annotations

import random

from services.gateway.admission import Admission


def test_little_load_or_fast_sessions_are_always_admitted() -> None:
    admission = Admission(2.0, rng=random.Random(1))
    for i in range(10):  # too few to judge, however slow
        admission.answered(100.0 + i * 0.01, 30.0)
    assert all(admission.admit(100.2) for _ in range(100))
    fast = Admission(2.0, rng=random.Random(1))
    for i in range(200):
        fast.answered(100.0 + i * 0.005, 0.3)
    assert all(fast.admit(101.0) for _ in range(100))


def test_sessions_past_the_bound_are_all_refused_and_half_way_a_share() -> None:
    slow = Admission(2.0, rng=random.Random(1))
    for i in range(100):
        slow.answered(100.0 + i * 0.01, 2.5)
    assert not any(slow.admit(101.0) for _ in range(100))
    half = Admission(2.0, rng=random.Random(1))
    for i in range(100):
        half.answered(100.0 + i * 0.01, 0.75)  # a session of two: 3/4 of the bound, half refused
    admitted = sum(half.admit(101.0) for _ in range(1000))
    assert 400 < admitted < 600


def test_sessions_in_progress_for_long_count_when_few_end() -> None:
    admission = Admission(2.0, rng=random.Random(1))
    stalled = [90.0] * 50  # 50 sessions waiting for plans for 10 s, none ended
    assert not admission.admit(100.0, lambda: stalled)
    assert admission.admit(100.2, lambda: [100.0] * 50)  # young ones: fine
    assert admission.admit(100.4, lambda: [90.0] * 5)  # too few to judge


def test_the_loop_lag_counts_and_old_sessions_are_forgotten() -> None:
    admission = Admission(2.0, rng=random.Random(1))
    admission.observe_loop_lag(2.5)
    assert not admission.admit(100.0)
    admission.observe_loop_lag(0.0)
    for i in range(100):
        admission.answered(100.0 + i * 0.01, 3.0)
    assert not admission.admit(101.0)
    assert admission.admit(104.0)  # two seconds later those sessions are out of the window
    assert all(5 <= admission.retry_after() <= 20 for _ in range(50))
