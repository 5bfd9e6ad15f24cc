"""Firmware campaigns: the model and the pure decisions (no I/O here; the runner is campaign_runner.py).

A campaign upgrades every device an inventory query selects to the firmware catalogued for its
product class, in waves: a canary, then growing waves, each gated on the one before, only inside
maintenance windows, with a cap on downloads in flight and stop rules that pause the campaign
when devices start failing. States (``state`` of the campaign document in ``jobs``):

- ``draft`` (stored, not started), ``scheduled`` (waiting for ``start_at``), ``running``,
  ``paused`` (``paused_by`` ``rule`` with the rule's reason, or an operator), ``completed``,
  ``cancelled``.

Per device (collection ``campaign_devices``): ``waiting`` (eligible, in a materialised wave, not
started), ``in_progress`` (its Download task exists), ``upgraded`` (back with the target
SoftwareVersion), ``failed`` (the CPE's fault or the reason), ``skipped`` (ineligible, with the
reason). Devices of the selection not materialised into a wave yet count as ``eligible``
(not looked at yet) in the progress.

Every function here is pure: the runner passes the clock's ``now`` in.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CAMPAIGN_STATES = ("draft", "scheduled", "running", "paused", "completed", "cancelled")
DEVICE_STATES = ("eligible", "waiting", "in_progress", "upgraded", "failed", "skipped")
# States of a campaign device that are stored (``eligible`` is the not yet materialised rest).
STORED_DEVICE_STATES = ("waiting", "in_progress", "upgraded", "failed", "skipped")
OPEN_DEVICE_STATES = ("waiting", "in_progress")
ENDED_STATES = ("completed", "cancelled")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WaveSpec(_Model):
    """A wave's size: a number of eligible devices, or a percentage of the selection."""

    size: int | None = Field(None, ge=1, description="eligible devices in the wave")
    percent: float | None = Field(None, gt=0, le=100, description="share of the devices the selection "
                                                                 "matched when the campaign was created")

    @model_validator(mode="after")
    def _one(self) -> WaveSpec:
        if (self.size is None) == (self.percent is None):
            raise ValueError("a wave has either a size or a percent")
        return self


class FirmwareIn(_Model):
    product_class: str = Field(min_length=1, max_length=64)
    file_name: str = Field(min_length=1, max_length=255, description="a catalogued file with a version")


class Eligibility(_Model):
    """Which current SoftwareVersions may be upgraded: a list, or a range (inclusive), or both."""

    versions: list[str] = Field(default_factory=list, max_length=1000)
    min_version: str | None = None
    max_version: str | None = None


class Gates(_Model):
    min_success_rate: float = Field(0.0, ge=0, le=1, description="upgraded / (upgraded + failed) of the "
                                                                 "wave, for the next wave to start")
    soak_seconds: float = Field(0.0, ge=0, description="time after the wave's last upgrade before the next")
    manual_approval: bool = Field(False, description="each next wave waits for POST .../approve")


class StopRules(_Model):
    max_failure_rate: float | None = Field(None, gt=0, le=1, description="pause when the failures among the "
                                                                        "last `window` outcomes reach it")
    window: int = Field(50, ge=1, le=10_000, description="outcomes the failure rate is taken over; the rule "
                                                         "waits until that many devices ended")
    max_failures: int | None = Field(None, ge=1, description="pause when this many devices failed in all")


class MaintenanceWindow(_Model):
    """Weekdays and hours (local time in ``timezone``); an end before the start runs past midnight."""

    weekdays: list[str] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    start: str = Field("00:00", description="HH:MM")
    end: str = Field("24:00", description="HH:MM; 24:00 is the end of the day")
    timezone: str = "UTC"

    @field_validator("weekdays")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        days = [d.lower()[:3] for d in value]
        bad = [d for d in days if d not in WEEKDAYS]
        if bad:
            raise ValueError(f"weekdays are {', '.join(WEEKDAYS)}; not {', '.join(bad)}")
        return days

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if value != "24:00" and not _HHMM.match(value):
            raise ValueError("a time of day is HH:MM (00:00 to 24:00)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Paris)") from None
        return value


class Limits(_Model):
    max_in_flight: int = Field(100, ge=1, le=5000, description="devices with a Download in progress, at most")
    connection_requests_per_second: float = Field(10.0, gt=0, le=10_000)
    device_timeout_seconds: float = Field(3600.0, gt=0, description="from the Download's creation until the "
                                                                    "device is back on the target version")
    retries: int = Field(0, ge=0, le=10, description="attempts of a failed device beyond the first")


class CampaignIn(_Model):
    name: str = Field(min_length=1, max_length=200)
    query: dict[str, Any] | str = Field(description="the inventory query language (as ?q= of GET /devices)")
    firmware: list[FirmwareIn] = Field(min_length=1, max_length=100)
    eligibility: Eligibility = Field(default_factory=Eligibility)
    canary: WaveSpec = Field(default_factory=lambda: WaveSpec(size=1))
    waves: list[WaveSpec] = Field(default_factory=lambda: [WaveSpec(percent=100)], max_length=100,
                                  description="after the canary; the last wave (the canary when none) takes the rest")
    gates: Gates = Field(default_factory=Gates)
    stop: StopRules = Field(default_factory=StopRules)
    windows: list[MaintenanceWindow] = Field(default_factory=list, description="none: at any time")
    limits: Limits = Field(default_factory=Limits)
    start_at: datetime | None = Field(None, description="scheduled start; now when absent")
    draft: bool = Field(False, description="store it as a draft: POST .../start schedules it")

    @field_validator("firmware")
    @classmethod
    def _classes(cls, value: list[FirmwareIn]) -> list[FirmwareIn]:
        classes = [f.product_class for f in value]
        if len(set(classes)) != len(classes):
            raise ValueError("one firmware per product class")
        return value


# --- waves ------------------------------------------------------------------------------------------


def wave_targets(total: int, canary: WaveSpec, waves: list[WaveSpec]) -> list[int | None]:
    """Eligible devices per wave: the canary first; the last wave takes whatever is left (None)."""
    def size(spec: WaveSpec) -> int:
        if spec.size is not None:
            return spec.size
        return max(1, math.ceil(total * (spec.percent or 0) / 100))

    targets: list[int | None] = [size(canary), *(size(w) for w in waves)]
    targets[-1] = None
    return targets


def campaign_task_id(campaign_id: str, device_id: str, attempt: int) -> str:
    """The Download task of a device's attempt: the same whoever creates it, however often."""
    return uuid.uuid5(uuid.UUID(hex=campaign_id), f"{device_id}\n{attempt}").hex


# --- eligibility ------------------------------------------------------------------------------------


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Compare versions part by part, numbers as numbers: 1.10.0 > 1.9.2; a number sorts after text."""
    parts = re.split(r"[.\-_+ ]", version.strip())
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in parts if p)


def eligible(product_class: str | None, software_version: str | None,
             targets: dict[str, str], rule: Eligibility) -> tuple[bool, str]:
    """Whether a device is upgraded by the campaign; when not, the reason it is skipped."""
    if not product_class or product_class not in targets:
        return False, f"no firmware in the campaign for product class {product_class!r}"
    current = software_version or ""
    target = targets[product_class]
    if current == target:
        return False, f"already on the target version {target}"
    listed = bool(rule.versions)
    ranged = rule.min_version is not None or rule.max_version is not None
    if not listed and not ranged:
        return True, ""
    if listed and current in rule.versions:
        return True, ""
    if ranged and current:
        key = version_key(current)
        if ((rule.min_version is None or key >= version_key(rule.min_version))
                and (rule.max_version is None or key <= version_key(rule.max_version))):
            return True, ""
    return False, f"software version {current or 'unknown'} is not eligible"


# --- maintenance windows ----------------------------------------------------------------------------


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def in_window(windows: list[MaintenanceWindow], now: datetime) -> bool:
    """Whether ``now`` (aware) is inside one of the windows; no windows: always."""
    if not windows:
        return True
    for window in windows:
        local = now.astimezone(ZoneInfo(window.timezone))
        minute = local.hour * 60 + local.minute
        start, end = _minutes(window.start), _minutes(window.end)
        today = WEEKDAYS[local.weekday()]
        yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
        if start < end:
            if today in window.weekdays and start <= minute < end:
                return True
        elif start > end:  # runs past midnight: the evening of a listed day and the next morning
            if (today in window.weekdays and minute >= start) or (yesterday in window.weekdays and minute < end):
                return True
        elif today in window.weekdays:  # start == end: the whole day
            return True
    return False


def next_window_start(windows: list[MaintenanceWindow], now: datetime, horizon_days: int = 8) -> datetime | None:
    """The next minute at which a window opens (to tell an operator; None when there is none)."""
    probe = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(horizon_days * 24 * 4):
        if in_window(windows, probe):
            return probe
        probe += timedelta(minutes=15)
    return None


def window_description(windows: list[MaintenanceWindow]) -> str:
    return "; ".join(f"{','.join(w.weekdays)} {w.start}-{w.end} {w.timezone}" for w in windows)


# --- outcomes, stop rules and gates -----------------------------------------------------------------


Outcome = Literal["in_progress", "upgraded", "failed", "retry"]


def device_outcome(task_status: str | None, task_reason: str, reported_version: str | None, target: str,
                   now: datetime, deadline: datetime, attempt: int, retries: int) -> tuple[Outcome, str]:
    """What an in-progress device has become, from its Download task and the version it reports.

    The post-upgrade check: a succeeded Download counts only once the device is back with the
    target SoftwareVersion, and only within the timeout.
    """
    failure = ""
    if task_status == "succeeded":
        if reported_version == target:
            return "upgraded", ""
        if now < deadline:
            return "in_progress", ""
        failure = (f"the device did not come back with {target} within the timeout "
                   f"(it reports {reported_version or 'nothing'})")
    elif task_status in ("failed", "cancelled", "expired"):
        failure = task_reason or f"the download {task_status}"
    elif now >= deadline:
        failure = "no upgrade within the device timeout"
    else:
        return "in_progress", ""
    if attempt < retries:
        return "retry", failure
    return "failed", failure


def stop_reason(rules: StopRules, recent: list[bool], failed_total: int) -> str | None:
    """Why the campaign must pause itself (``recent``: the latest outcomes, True = failed), or None."""
    if rules.max_failures is not None and failed_total >= rules.max_failures:
        return f"stop rule: {failed_total} devices failed (limit {rules.max_failures})"
    if rules.max_failure_rate is not None and len(recent) >= rules.window:
        window = recent[:rules.window]
        rate = sum(window) / len(window)
        if rate >= rules.max_failure_rate:
            return (f"stop rule: {rate:.0%} of the last {len(window)} devices failed "
                    f"(limit {rules.max_failure_rate:.0%})")
    return None


GateResult = Literal["pass", "wait", "fail"]


def gate(gates: Gates, counts: dict[str, int], last_upgrade_at: datetime | None, now: datetime,
         approved: bool) -> tuple[GateResult, str]:
    """Whether the next wave may start after a finished wave (counts: its devices per state)."""
    done = counts.get("upgraded", 0) + counts.get("failed", 0)
    rate = counts.get("upgraded", 0) / done if done else 1.0
    if rate < gates.min_success_rate:
        return "fail", (f"gate: {rate:.0%} of the wave's devices upgraded "
                        f"(at least {gates.min_success_rate:.0%} needed)")
    if gates.soak_seconds and last_upgrade_at is not None:
        ready = last_upgrade_at + timedelta(seconds=gates.soak_seconds)
        if now < ready:
            return "wait", f"soaking until {ready.isoformat()}"
    if gates.manual_approval and not approved:
        return "wait", "waiting for an operator's approval of the next wave"
    return "pass", ""


def progress(doc: dict[str, Any]) -> dict[str, int]:
    """Devices per state, from the counts the runner stores per wave: no scan of the devices."""
    totals = dict.fromkeys(DEVICE_STATES, 0)
    seen = 0
    for wave in doc.get("waves", []):
        for state, n in (wave.get("counts") or {}).items():
            if state in totals:
                totals[state] += int(n)
        seen += int(wave.get("seen", 0))
    totals["eligible"] = 0 if doc.get("selection_done") else max(0, int(doc.get("total", 0)) - seen)
    return totals
