"""Session retry wait of TR-069 §3.2.1.1 (checklist T16).

With m = CWMPRetryMinimumWaitInterval (default 5 s) and k = CWMPRetryIntervalMultiplier / 1000
(default 2.000), retry number n (1 for the first retry) waits a random time in
[m·k^(n-1), m·k^n]; n stops growing at 10, so the defaults never wait more than 5120 s.
"""

from __future__ import annotations

import random

__all__ = ["MAX_RETRY_EXPONENT", "retry_wait", "retry_wait_range"]

MAX_RETRY_EXPONENT = 10


def retry_wait_range(retry: int, min_wait: float = 5.0, multiplier: int = 2000) -> tuple[float, float]:
    """The interval the ``retry``-th retry (1-based) waits in, in seconds."""
    if retry < 1:
        raise ValueError("retry numbers start at 1")
    n = min(retry, MAX_RETRY_EXPONENT)
    k = multiplier / 1000.0
    return min_wait * k ** (n - 1), min_wait * k**n


def retry_wait(retry: int, min_wait: float = 5.0, multiplier: int = 2000,
               rng: random.Random | None = None) -> float:
    """A random wait for the ``retry``-th retry, uniform in :func:`retry_wait_range`.

    The randomness spreads a fleet that failed together (an ACS outage) so that it does not
    come back in lockstep.
    """
    low, high = retry_wait_range(retry, min_wait, multiplier)
    return (rng or random).uniform(low, high)
