"""`acs bench`'s pure parts: when a fleet counts as warmed up, and what the report says."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from acs.bench import ProcessUsage, RunResult, report, settled


@dataclass
class Record:
    device: int
    ok: bool
    end: float
    rpcs: int
    events: tuple[str, ...] = ("2 PERIODIC",)


def test_a_fleet_is_settled_once_every_device_had_a_routine_session_and_rpcs_stopped() -> None:
    now = time.time()
    quiet = [Record(0, True, now - 60, 3, ("0 BOOTSTRAP",)), Record(0, True, now - 30, 0),
             Record(1, True, now - 1, 0)]
    assert settled(quiet, devices=2)
    assert not settled(quiet, devices=3)  # device 2 never finished a session
    assert not settled([*quiet, Record(1, True, now - 2, 4)], devices=2)  # provisioning still going on
    assert not settled([Record(0, True, now - 60, 0), Record(1, False, now - 50, 0)], devices=2)
    # Its bootstrap ended without RPCs (the plan never came): not a routine session yet.
    assert not settled([Record(0, True, now - 30, 0), Record(1, True, now - 20, 0, ("0 BOOTSTRAP",))], devices=2)


def test_the_report_gives_the_ratio_and_flags_a_window_that_was_not_steady() -> None:
    args = argparse.Namespace(devices=100, interval=10, window=60.0)
    trivial = RunResult("trivial", 10.0, 0, 1.0, 2.0, 5.0, {"trivial responder": ProcessUsage(cpu_seconds=6.0)})
    acs = RunResult("acs", 6.0, 0, 100.0, 300.0, 900.0, {}, settled=False)
    text = report(args, [trivial, acs])
    assert "offered 10 sessions/s" in text
    assert "trivial responder          CPU   10.0 %" in text
    assert "NOT STEADY" in text and text.count("NOT STEADY") == 1
    assert text.endswith("ACS / trivial responder: 0.60")


def test_the_report_gives_cpu_per_completed_session_per_process_and_for_the_acs() -> None:
    from acs.bench import InformCheck

    args = argparse.Namespace(devices=100, interval=10, window=10.0, auth="none")
    usage = {"gateway": ProcessUsage(cpu_seconds=0.5), "mongod": ProcessUsage(cpu_seconds=0.3),
             "simulator (this process)": ProcessUsage(cpu_seconds=2.0)}
    acs = RunResult("acs", 10.0, 0, 5.0, 9.0, 30.0, usage, completed=100,
                    lost=InformCheck(acknowledged=100, missing_in_inventory=["s1"]))
    text = report(args, [acs])
    assert "  5.000 ms/session" in text  # gateway: 0.5 s over 100 sessions
    assert " 20.000 ms/session" in text  # the simulator's own figure is shown...
    assert "ACS CPU per session: 8.00 ms" in text  # ...but not counted for the ACS
    assert "Informs acknowledged in the window: 100, LOST" in text and "not in the inventory 1" in text
    assert "e.g. session s1" in text
    assert not acs.lost.ok and InformCheck(acknowledged=3).ok
