"""`acs sim --stun --behind-nat`: the STUN client mode and the simulated NAT from the command line."""

from __future__ import annotations

from simulator.cli import build_parser, settings_from_args


def test_stun_options_reach_the_fleet_settings() -> None:
    default = settings_from_args(build_parser().parse_args([]))
    assert (default.stun, default.behind_nat) == (False, False)
    on = settings_from_args(build_parser().parse_args(["--stun", "--behind-nat"]))
    assert (on.stun, on.behind_nat) == (True, True)
