"""Admission control: refuse new sessions (503 + Retry-After) before queueing makes them slow.

A session count limit (ACS_MAX_SESSIONS) reacts only once thousands of sessions pile up, each
slower than the last. Here the gateway watches what a new routine session (an Inform and an empty
POST) would meet: how long this instance took to answer the requests just answered (the Inform:
authentication, lock, broker acknowledgement; the empty POST: the wait for the orchestrator's
plan), how long the requests still in progress have been waiting (when plans stall, few requests
are answered and the waiting ones age), and how late its event loop runs (the time a request
waits before it is even read). The estimate is twice the 90th percentile of those requests, plus
the loop lag: the RPCs of a long session (a bootstrap walk) are round trips to the CPE, not
queueing, and do not count. When the estimate passes half of ACS_ADMISSION_LATENCY_BOUND a
growing share of new sessions is refused, all of them at the bound; sessions already admitted go
on. Retry-After spreads the refused CPEs over a window.

Pure bookkeeping, no I/O: the caller feeds durations and loop lag and asks :meth:`admit`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable


class Admission:
    REQUESTS_PER_SESSION = 2  # a routine session: the Inform and the empty POST

    def __init__(self, bound: float, *, window: float = 2.0, min_samples: int = 20,
                 retry_after: tuple[int, int] = (5, 20), rng: random.Random | None = None) -> None:
        self.bound = bound
        self.window = window  # seconds of answered requests the estimate looks at
        self.min_samples = min_samples  # fewer completions than this: too little load to judge
        self.retry_after_range = retry_after
        self.rng = rng or random.Random()
        self._ended: deque[tuple[float, float]] = deque()  # (answered at, seconds it took)
        self.loop_lag = 0.0  # the event loop's latest lateness, seconds
        self._estimate: tuple[float, float] | None = None  # (computed at, value)

    def answered(self, now: float, duration: float) -> None:
        """A request of a session (its Inform, an empty POST, a CPE's answer) took ``duration``."""
        self._ended.append((now, duration))
        self._trim(now)

    def observe_loop_lag(self, lag: float) -> None:
        self.loop_lag = max(0.0, lag)

    def _trim(self, now: float) -> None:
        while self._ended and self._ended[0][0] < now - self.window:
            self._ended.popleft()

    def estimate(self, now: float, in_progress: Callable[[], Iterable[float]] = tuple) -> float:
        """Seconds a routine session started now is expected to take: twice the 90th percentile of
        the requests just answered, or of the ages of those in progress (``in_progress``: their
        start times) if higher, plus the loop's lag. Cached for 100 ms (asked per new session)."""
        if self._estimate is not None and now - self._estimate[0] < 0.1:
            return self._estimate[1]
        self._trim(now)
        value = 0.0
        if len(self._ended) >= self.min_samples:
            value = _p90([d for _, d in self._ended])
        ages = [now - started for started in in_progress()]
        if len(ages) >= self.min_samples:
            value = max(value, _p90(ages))
        value = self.REQUESTS_PER_SESSION * value + self.loop_lag
        self._estimate = (now, value)
        return value

    def admit(self, now: float, in_progress: Callable[[], Iterable[float]] = tuple) -> bool:
        """Refuse nothing below half the bound, everything at it, a growing share in between."""
        if self.bound <= 0:
            return True
        excess = (self.estimate(now, in_progress) - self.bound / 2) / (self.bound / 2)
        return excess <= 0 or (excess < 1 and self.rng.random() >= excess)

    def retry_after(self) -> int:
        low, high = self.retry_after_range
        return self.rng.randint(low, high)


def _p90(values: list[float]) -> float:
    values.sort()
    return values[int(0.9 * (len(values) - 1))]
