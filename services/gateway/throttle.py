"""Throttling of password guessing, without locking out the CPEs that share a guesser's address.

Failures are counted in fixed windows per (username, address), the pair a guesser attacks. Past
``max_failures`` that pair is refused (503 + Retry-After) until its window ends. A CPE behind the
same NAT has its own username (per-device credentials) and so its own pair: it is never refused
because another device failed.

A guesser who rotates usernames meets the per-address ceiling (``max_per_address``, higher):
while an address is over it, every pair that already failed from there is refused at once, so
each username gets one guess per window. A username that has not failed from that address is
still checked, and a correct login is always let in. A success clears its own pair and nothing
else: one CPE that knows its password cannot reset the counts of a guesser next to it.

In-process on purpose: each gateway instance protects itself, and a guesser spread over
instances still meets the limits on each of them. Memory is bounded (``max_tracked`` entries
per table; under a flood, forgetting beats growing without bound).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

# A username is attacker-chosen text: only this much of it becomes a key.
MAX_USERNAME_KEY = 256


@dataclass
class _Window:
    started: float
    failures: int


class _Counts:
    """Failures per key in fixed windows."""

    def __init__(self, window_seconds: float, max_tracked: int) -> None:
        self.window_seconds = window_seconds
        self.max_tracked = max_tracked
        self._windows: dict[object, _Window] = {}

    def current(self, key: object, now: float) -> _Window | None:
        window = self._windows.get(key)
        if window is None or now - window.started >= self.window_seconds:
            return None
        return window

    def add(self, key: object, now: float) -> None:
        window = self.current(key, now)
        if window is not None:
            window.failures += 1
            return
        if len(self._windows) >= self.max_tracked:
            self._forget_expired(now)
        self._windows[key] = _Window(now, 1)

    def clear(self, key: object) -> None:
        self._windows.pop(key, None)

    def wait(self, window: _Window, now: float) -> int:
        return max(1, int(self.window_seconds - (now - window.started)))

    def _forget_expired(self, now: float) -> None:
        expired = [k for k, w in self._windows.items() if now - w.started >= self.window_seconds]
        for key in expired:
            del self._windows[key]
        if len(self._windows) >= self.max_tracked:
            self._windows.clear()


class AuthThrottle:
    def __init__(self, max_failures: int, window_seconds: float, max_per_address: int | None = None,
                 max_tracked: int = 100_000) -> None:
        self.max_failures = max_failures
        self.max_per_address = max_per_address if max_per_address is not None else max_failures * 10
        self.window_seconds = window_seconds
        self._pairs = _Counts(window_seconds, max_tracked)
        self._addresses = _Counts(window_seconds, max_tracked)

    @staticmethod
    def _pair(username: str | None, address: str) -> tuple[str, str]:
        return (username or "")[:MAX_USERNAME_KEY], address

    def retry_after(self, username: str | None, address: str, now: float | None = None) -> int:
        """Seconds this (username, address) must wait before its credentials are checked, or 0."""
        now = time.monotonic() if now is None else now
        pair = self._pairs.current(self._pair(username, address), now)
        if pair is None:
            return 0  # never failed here: checked, whatever its neighbours did
        if pair.failures >= self.max_failures:
            return self._pairs.wait(pair, now)
        per_address = self._addresses.current(address, now)
        if per_address is not None and per_address.failures >= self.max_per_address:
            return self._pairs.wait(pair, now)
        return 0

    def failed(self, username: str | None, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._pairs.add(self._pair(username, address), now)
        self._addresses.add(address, now)

    def succeeded(self, username: str | None, address: str) -> None:
        self._pairs.clear(self._pair(username, address))
