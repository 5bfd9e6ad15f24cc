"""Retry backoff table, percentiles, metrics and the CLI's argument mapping and output."""

from __future__ import annotations

import random

import pytest

from simulator.backoff import retry_wait, retry_wait_range
from simulator.cli import build_parser, format_interval, format_summary, settings_from_args
from simulator.config import AuthMode, FleetSettings, HttpMode
from simulator.metrics import Metrics, SessionRecord, percentile


@pytest.mark.parametrize(("retry", "low", "high"), [
    (1, 5, 10), (2, 10, 20), (3, 20, 40), (4, 40, 80), (5, 80, 160), (6, 160, 320), (7, 320, 640),
    (8, 640, 1280), (9, 1280, 2560), (10, 2560, 5120), (11, 2560, 5120), (50, 2560, 5120),
])
def test_default_retry_table_of_the_checklist(retry: int, low: float, high: float) -> None:
    assert retry_wait_range(retry) == (low, high)


def test_retry_wait_follows_the_data_model_parameters() -> None:
    assert retry_wait_range(3, min_wait=1, multiplier=1500) == (2.25, 3.375)
    rng = random.Random(1)
    waits = [retry_wait(2, 5, 2000, rng) for _ in range(200)]
    assert all(10 <= w <= 20 for w in waits) and max(waits) - min(waits) > 5  # spread, not fixed
    with pytest.raises(ValueError):
        retry_wait_range(0)


def test_percentile_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) is None


def record(ok: bool, duration: float, reason: str = "") -> SessionRecord:
    return SessionRecord(device=1, start=100.0, end=100.0 + duration, ok=ok, reason=reason,
                         events=("2 PERIODIC",), rpcs=1, http_requests=3, retry_count=0, lag=0.001)


def test_metrics_aggregate_and_interval_windows() -> None:
    metrics = Metrics(keep_records=2)
    for duration in (0.010, 0.020, 0.030):
        metrics.record(record(True, duration))
    metrics.record(record(False, 30.0, "timeout: no answer from the ACS"))
    window = metrics.interval(in_flight=3)
    assert (window["ok"], window["failed"], window["in_flight"]) == (3, 1, 3)
    assert window["p50_ms"] == 20.0
    assert metrics.interval()["ok"] == 0  # a new window
    summary = metrics.summary()
    assert (summary["sessions_ok"], summary["sessions_failed"]) == (3, 1)
    assert summary["latency_ms"]["p99"] == 30.0  # failures do not count in latency
    assert summary["failure_reasons"] == {"timeout": 1}
    assert summary["events"] == {"2 PERIODIC": 4}
    assert summary["http_requests"] == 12
    assert len(metrics.records) == 2  # bounded


def test_cli_options_map_to_fleet_settings() -> None:
    args = build_parser().parse_args([
        "--acs-url", "http://acs:7547/", "--devices", "250", "--model", "tr181", "--interval", "60",
        "--username", "u-{serial}", "--password", "p", "--auth", "basic", "--serial-prefix", "LAB",
        "--cr-port", "17548", "--duration", "30", "--http-mode", "shared", "--ignore-cookies",
        "--cwmp-version", "1.4", "--seed", "3",
    ])
    settings = settings_from_args(args)
    assert isinstance(settings, FleetSettings)
    assert (settings.acs_url, settings.devices, settings.model) == ("http://acs:7547/", 250, "tr181")
    assert (settings.periodic_interval, settings.serial_prefix, settings.cr_port) == (60, "LAB", 17548)
    assert (settings.acs_username, settings.acs_password, settings.auth) == ("u-{serial}", "p", AuthMode.BASIC)
    assert settings.http_mode is HttpMode.SHARED and settings.ignore_cookies
    assert settings.ramp == 2.5  # default: devices / 100
    assert args.duration == 30
    # The behaviours of real agents are off unless asked for.
    assert (settings.product_class, settings.digest_reuse_nc, settings.drop_mid_session,
            settings.credentials_in_url) == ("", False, 0, False)
    sloppy = settings_from_args(build_parser().parse_args([
        "--product-class", "easy cwmp", "--digest-reuse-nc", "--drop-mid-session", "2", "--credentials-in-url"]))
    assert (sloppy.product_class, sloppy.digest_reuse_nc, sloppy.drop_mid_session,
            sloppy.credentials_in_url) == ("easy cwmp", True, 2, True)


def test_cli_defaults_are_the_credentials_of_a_local_acs_up() -> None:
    """`acs sim` against `make run` as both come: the simulator's default pair is acs up's."""
    from acs.up import simulator_command
    from services.common.settings import Settings

    fields = Settings.model_fields  # the defaults, whatever this shell's ACS_ variables say
    ours = Settings().model_copy(update={name: fields[name].default for name in
                                         ("cpe_username", "cpe_password", "cpe_auth", "cpe_credentials",
                                          "gateway_port", "bind_host")})
    defaults = settings_from_args(build_parser().parse_args([]))
    assert (defaults.acs_username, defaults.acs_password) == (ours.cpe_username, ours.cpe_password)
    assert defaults.acs_url == f"http://127.0.0.1:{ours.gateway_port}/"
    printed = simulator_command(ours)
    assert printed.split(" ", 1)[1] == (f"sim --acs-url http://127.0.0.1:{ours.gateway_port}/ --devices 10 "
                                        f"--username {ours.cpe_username} --password {ours.cpe_password}")
    printed_args = build_parser().parse_args(printed.split()[2:])
    assert (printed_args.username, printed_args.password) == (ours.cpe_username, ours.cpe_password)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="model"):
        FleetSettings(model="tr069")
    with pytest.raises(ValueError, match="at least 1"):
        FleetSettings(devices=0)


def test_report_lines_are_readable() -> None:
    line = format_interval({"elapsed": 5.0, "ok_per_s": 12.5, "failed_per_s": 0.0, "in_flight": 2,
                            "p50_ms": 3.25, "p99_ms": None})
    assert "ok     12.5/s" in line and "p50 3.2 ms" in line and "p99 -" in line
    metrics = Metrics()
    metrics.record(record(True, 0.004))
    text = format_summary(metrics.summary())
    assert text.startswith("sessions: 1 ok")
    assert "p50 4.0 ms" in text and "events: 2 PERIODIC=1" in text
