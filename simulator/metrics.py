"""Counters and latency percentiles for benchmarks.

Every session leaves a :class:`SessionRecord`. The fleet keeps the last ``keep_records`` of them
(bounded, for tests and post-mortems), all session durations in a compact array for whole-run
percentiles, and a per-interval window for the periodic report lines.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Metrics", "SessionRecord", "percentile"]


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(slots=True)
class SessionRecord:
    device: int  # device index
    start: float  # wall clock, seconds since the epoch
    end: float
    ok: bool
    reason: str  # "" when ok, else why the session failed
    events: tuple[str, ...]  # Inform event codes
    rpcs: int  # ACS requests answered in the session
    http_requests: int  # POSTs sent, 401 legs included
    retry_count: int  # RetryCount of the Inform
    lag: float  # seconds between "due" and the session actually starting (simulator saturation)
    inform_acked: bool = False  # an InformResponse arrived (the ACS took the Inform)
    cookies: tuple[tuple[str, str], ...] = ()  # the cookies the ACS set in the session

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class _Window:
    ok: int = 0
    failed: int = 0
    rejected: int = 0  # of the failed: refused with 503 (the ACS's admission control)
    durations: list[float] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)


class Metrics:
    """Aggregate counters of one fleet run."""

    def __init__(self, keep_records: int = 10_000) -> None:
        self.started_at = time.monotonic()
        self.sessions_ok = 0
        self.sessions_failed = 0
        self.failure_reasons: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.rpcs: Counter[str] = Counter()
        self.faults_sent: Counter[int] = Counter()
        self.http_requests = 0
        self.connection_requests: Counter[str] = Counter()  # accepted / busy / unauthorized / unknown
        self.transfers: Counter[str] = Counter()  # "download ok", "download 9012", ...
        self.max_in_flight = 0
        self.records: deque[SessionRecord] = deque(maxlen=keep_records)
        self._durations = array("d")
        self._lags = array("d")
        self._window = _Window()

    def record(self, rec: SessionRecord) -> None:
        self.records.append(rec)
        self.http_requests += rec.http_requests
        self.events.update(rec.events)
        duration = rec.duration
        if rec.ok:
            self.sessions_ok += 1
            self._window.ok += 1
            # Latency percentiles are over successful sessions: a timeout would otherwise
            # dominate p99 and hide how fast the ACS really answers.
            self._durations.append(duration)
            self._window.durations.append(duration)
        else:
            self.sessions_failed += 1
            self._window.failed += 1
            if rec.reason.startswith("HTTP 503"):
                self._window.rejected += 1
            self.failure_reasons[_reason_class(rec.reason)] += 1
        self._lags.append(rec.lag)

    def interval(self, in_flight: int = 0) -> dict[str, Any]:
        """Counters since the previous call (for the report printed every few seconds)."""
        window, self._window = self._window, _Window()
        elapsed = max(time.monotonic() - window.started_at, 1e-9)
        durations = sorted(window.durations)
        return {
            "elapsed": round(time.monotonic() - self.started_at, 1),
            "ok_per_s": window.ok / elapsed,
            "failed_per_s": window.failed / elapsed,
            "ok": window.ok,
            "failed": window.failed,
            "rejected": window.rejected,
            "in_flight": in_flight,
            "p50_ms": _ms(percentile(durations, 0.50)),
            "p99_ms": _ms(percentile(durations, 0.99)),
        }

    def summary(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started_at, 1e-9)
        durations = sorted(self._durations)
        lags = sorted(self._lags)
        return {
            "elapsed_s": round(elapsed, 2),
            "sessions_ok": self.sessions_ok,
            "sessions_failed": self.sessions_failed,
            "ok_per_s": round(self.sessions_ok / elapsed, 2),
            "failed_per_s": round(self.sessions_failed / elapsed, 2),
            "http_requests": self.http_requests,
            "latency_ms": {
                "p50": _ms(percentile(durations, 0.50)),
                "p90": _ms(percentile(durations, 0.90)),
                "p99": _ms(percentile(durations, 0.99)),
                "max": _ms(durations[-1] if durations else None),
            },
            "start_lag_ms": {"p50": _ms(percentile(lags, 0.50)), "p99": _ms(percentile(lags, 0.99))},
            "max_in_flight": self.max_in_flight,
            "failure_reasons": dict(self.failure_reasons.most_common()),
            "events": dict(self.events.most_common()),
            "rpcs": dict(self.rpcs.most_common()),
            "faults_sent": {str(k): v for k, v in self.faults_sent.most_common()},
            "connection_requests": dict(self.connection_requests),
            "transfers": dict(self.transfers),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def _reason_class(reason: str) -> str:
    """Group failure reasons ("HTTP 503", "timeout", ...) without per-device details."""
    return reason.split(":", 1)[0][:60] or "unknown"
