"""Throttling of addresses that keep failing authentication (password guessing).

Counts failures per remote address in a fixed window; past the limit the address is refused
with 503 + Retry-After until the window ends. In-process on purpose: each gateway instance
protects itself, and a guesser spread over instances still meets the limit on each of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _Window:
    started: float
    failures: int


class AuthThrottle:
    def __init__(self, max_failures: int, window_seconds: float, max_tracked: int = 100_000) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_tracked = max_tracked
        self._windows: dict[str, _Window] = {}

    def retry_after(self, address: str, now: float | None = None) -> int:
        """Seconds the address must wait, or 0 when it may try."""
        now = time.monotonic() if now is None else now
        window = self._windows.get(address)
        if window is None or now - window.started >= self.window_seconds:
            return 0
        if window.failures < self.max_failures:
            return 0
        return max(1, int(self.window_seconds - (now - window.started)))

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        window = self._windows.get(address)
        if window is None or now - window.started >= self.window_seconds:
            if len(self._windows) >= self.max_tracked:
                self._forget_expired(now)
            self._windows[address] = _Window(now, 1)
        else:
            window.failures += 1

    def succeeded(self, address: str) -> None:
        self._windows.pop(address, None)

    def _forget_expired(self, now: float) -> None:
        expired = [a for a, w in self._windows.items() if now - w.started >= self.window_seconds]
        for address in expired:
            del self._windows[address]
        if len(self._windows) >= self.max_tracked:
            self._windows.clear()  # Under a flood, forgetting beats growing without bound.
