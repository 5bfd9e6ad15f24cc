"""Admission control: refuse new sessions (503 + Retry-After) before queueing makes them slow.

A session count limit (ACS_MAX_SESSIONS) reacts only once thousands of sessions pile up, each
slower than the last. Here the gateway watches what a new session would meet: how long the
sessions that just ended took (Inform to end, on this instance), how long the sessions still in
progress have been running (when plans stall, few sessions end and those in progress age), and
how late its event loop runs (time a CPE's request waits before it is even read). When that
estimate approaches the bound (ACS_ADMISSION_LATENCY_BOUND), a growing share of new sessions is
refused, all of them at the bound; sessions already admitted go on. Retry-After spreads the
refused CPEs over a window.

Pure bookkeeping, no I/O: the caller feeds durations and loop lag and asks :meth:`admit`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable


class Admission:
    def __init__(self, bound: float, *, window: float = 2.0, min_samples: int = 20,
                 retry_after: tuple[int, int] = (5, 20), rng: random.Random | None = None) -> None:
        self.bound = bound
        self.window = window  # seconds of completed sessions the estimate looks at
        self.min_samples = min_samples  # fewer completions than this: too little load to judge
        self.retry_after_range = retry_after
        self.rng = rng or random.Random()
        self._ended: deque[tuple[float, float]] = deque()  # (ended at, duration)
        self.loop_lag = 0.0  # the event loop's latest lateness, seconds
        self._estimate: tuple[float, float] | None = None  # (computed at, value)

    def ended(self, now: float, duration: float) -> None:
        self._ended.append((now, duration))
        self._trim(now)

    def observe_loop_lag(self, lag: float) -> None:
        self.loop_lag = max(0.0, lag)

    def _trim(self, now: float) -> None:
        while self._ended and self._ended[0][0] < now - self.window:
            self._ended.popleft()

    def estimate(self, now: float, in_progress: Callable[[], Iterable[float]] = tuple) -> float:
        """Seconds a session started now is expected to take: the 90th percentile of the recent
        ones, or of the ages of those in progress (``in_progress``: their start times) if higher,
        plus the loop's lag. Cached for 100 ms: it is asked on every new session."""
        if self._estimate is not None and now - self._estimate[0] < 0.1:
            return self._estimate[1]
        self._trim(now)
        value = 0.0
        if len(self._ended) >= self.min_samples:
            value = _p90([d for _, d in self._ended])
        ages = [now - started for started in in_progress()]
        if len(ages) >= self.min_samples:
            value = max(value, _p90(ages))
        value += self.loop_lag
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
