"""Many devices in one process, retries with backoff, HTTP modes, and the command line."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cwmp.codec import parse_envelope
from cwmp.models import Inform
from cwmp.session import InformReceived
from simulator.config import FleetSettings, HttpMode
from simulator.fleet import Fleet
from simulator.miniacs import MiniAcs, eventually, serving

REPO = Path(__file__).resolve().parents[2]



async def test_hundred_devices_bootstrap_in_one_process() -> None:
    acs = MiniAcs(auth="digest", password_for=lambda user: f"pw-{user}")
    async with serving(acs) as base:
        fleet = Fleet(FleetSettings(acs_url=base + "/", devices=100, model="mixed", ramp=0.5,
                                    acs_username="{serial}", acs_password="pw-{serial}",
                                    periodic_interval=3600, seed=5))
        await fleet.start()
        try:
            await eventually(lambda: acs.sessions_completed >= 100)
        finally:
            await fleet.stop()
    informs = [e.inform for e in acs.received(InformReceived)]
    serials = Counter(i.device_id.serial_number for i in informs)
    assert len(serials) == 100 and set(serials.values()) == {1}
    assert all([e.event_code for e in i.event] == ["0 BOOTSTRAP", "1 BOOT"] for i in informs)
    classes = Counter(i.device_id.product_class for i in informs)
    assert classes == {"IGD-SIM": 50, "DEV-SIM": 50}  # mixed: TR-098 and TR-181
    assert acs.violations == [] and acs.auth_failures == 0
    summary = fleet.metrics.summary()
    assert summary["sessions_ok"] == 100 and summary["sessions_failed"] == 0
    assert summary["http_requests"] == 300  # 401 leg, Inform, empty POST
    assert summary["latency_ms"]["p99"] is not None


class FlakyAcs:
    """Answers HTTP 500 to the first ``failures`` Informs, recording their RetryCount and time."""

    def __init__(self, app: MiniAcs, failures: int) -> None:
        self.app = app
        self.failures = failures
        self.attempts: list[tuple[float, int]] = []

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        message = await receive()
        body = message.get("body", b"")
        if body.strip():
            inform = parse_envelope(body).message
            if isinstance(inform, Inform):
                self.attempts.append((time.monotonic(), inform.retry_count))
                if len(self.attempts) <= self.failures:
                    await send({"type": "http.response.start", "status": 500, "headers": []})
                    await send({"type": "http.response.body", "body": b""})
                    return

        async def replay() -> dict[str, Any]:
            return message

        await self.app(scope, replay, send)


async def test_failed_sessions_are_retried_with_backoff_and_retry_count() -> None:
    acs = MiniAcs(auth="none")
    flaky = FlakyAcs(acs, failures=2)
    async with serving(flaky) as base:
        # CWMPRetryMinimumWaitInterval=1 and multiplier 1000: every retry waits exactly 1 s.
        fleet = Fleet(FleetSettings(acs_url=base + "/", devices=1, retry_min_wait=1, retry_multiplier=1000,
                                    periodic_interval=3600))
        await fleet.start()
        try:
            await eventually(lambda: acs.sessions_completed >= 1)
        finally:
            await fleet.stop()
    assert [count for _t, count in flaky.attempts] == [0, 1, 2]
    gaps = [b[0] - a[0] for a, b in zip(flaky.attempts, flaky.attempts[1:], strict=False)]
    assert all(0.95 <= gap < 1.5 for gap in gaps)
    [inform] = [e.inform for e in acs.received(InformReceived)]
    assert [e.event_code for e in inform.event] == ["0 BOOTSTRAP", "1 BOOT"]  # kept until acknowledged
    summary = fleet.metrics.summary()
    assert summary["sessions_failed"] == 2 and summary["failure_reasons"] == {"HTTP 500": 2}


@pytest.mark.parametrize("mode", [HttpMode.SHARED, HttpMode.DEVICE])
async def test_http_modes_and_periodic_informs(mode: HttpMode) -> None:
    acs = MiniAcs(auth="digest", password_for=lambda _user: "pw")
    async with serving(acs) as base:
        fleet = Fleet(FleetSettings(acs_url=base + "/", devices=20, acs_password="pw", periodic_interval=1,
                                    jitter=0.1, http_mode=mode, seed=9))
        await fleet.start()
        try:
            await eventually(lambda: acs.sessions_completed >= 60)
        finally:
            await fleet.stop()
    periodic = [e for e in acs.received(InformReceived)
                if [x.event_code for x in e.inform.event] == ["2 PERIODIC"]]
    assert len(periodic) >= 20
    assert acs.violations == [] and fleet.metrics.sessions_failed == 0


async def test_command_line_runs_a_fleet_and_prints_a_summary() -> None:
    acs = MiniAcs(auth="digest", password_for=lambda _user: "pw", record=False)
    async with serving(acs) as base:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulator", "--acs-url", base + "/", "--devices", "30", "--model", "tr181",
            "--interval", "1", "--password", "pw", "--duration", "2.5", "--report-every", "1", "--json",
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    text = stdout.decode()
    assert process.returncode == 0, stderr.decode()
    assert text.startswith("acs sim: 30 tr181 devices"), text
    assert "] ok " in text, text  # at least one periodic report line
    assert "sessions: " in text and "session latency: p50" in text, text
    summary = json.loads(text[text.index("{"):])
    assert summary["sessions_ok"] >= 30 and summary["sessions_failed"] == 0, text
    assert acs.sessions_completed >= 30 and acs.violations == []
