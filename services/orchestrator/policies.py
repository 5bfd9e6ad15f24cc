"""Policies: provisioning without code. "On these events, for devices like these, do these tasks."

A policy is evaluated by the planner at Inform time, against what the Inform itself says (the
DeviceId, the event codes, the parameters in its ParameterList) and the device's tags. It never
needs the inventory on the critical path: tags are fetched only when some policy uses them.

The parameter query is a small MongoDB-style language, the operators of the inventory's device
queries: ``{"DeviceInfo.SoftwareVersion": {"$lt": "2.0"}, "$or": [...]}``, plus ``$nin`` and
``$regex``. A name that does not
start with a data model root is taken relative to the device's root, so one policy serves TR-098
and TR-181 devices alike. Comparisons are numeric when both sides are numbers, otherwise
"natural" (``1.9.2 < 1.10.0``), which is what software versions need.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.orchestrator.state import TR098_ROOT, TR181_ROOT
from services.orchestrator.tasks import aware

NamedPolicyEvent = Literal[
    "any", "registered", "bootstrap", "boot", "periodic", "scheduled", "value_change", "kicked",
    "connection_request", "transfer_complete", "diagnostics_complete", "request_download",
    "autonomous_transfer_complete", "du_state_change_complete", "autonomous_du_state_change_complete",
    "wakeup", "heartbeat",
]
# Besides the names above, an Inform event code itself: "M <method>" (M Download, M ScheduleDownload,
# M X_ACME_Method) or a vendor code "X <OUI or vendor> <event>" (TR-069 3.7.1.5), matched exactly.
RAW_EVENT_RE = re.compile(r"^(M [A-Za-z_][\w\-]{0,63}|X [0-9A-Za-z_\-]{1,64} \S.{0,62})$")
PolicyEvent = Annotated[
    NamedPolicyEvent | Annotated[str, Field(pattern=RAW_EVENT_RE.pattern, max_length=80)],
    Field(description="an event name, or an Inform event code 'M <method>' / 'X <OUI> <event>'"),
]
EVENT_NAMES: dict[str, str] = {
    "0 BOOTSTRAP": "bootstrap", "1 BOOT": "boot", "2 PERIODIC": "periodic", "3 SCHEDULED": "scheduled",
    "4 VALUE CHANGE": "value_change", "5 KICKED": "kicked", "6 CONNECTION REQUEST": "connection_request",
    "7 TRANSFER COMPLETE": "transfer_complete", "8 DIAGNOSTICS COMPLETE": "diagnostics_complete",
    "9 REQUEST DOWNLOAD": "request_download",
    "10 AUTONOMOUS TRANSFER COMPLETE": "autonomous_transfer_complete",
    "11 DU STATE CHANGE COMPLETE": "du_state_change_complete",
    "12 AUTONOMOUS DU STATE CHANGE COMPLETE": "autonomous_du_state_change_complete",
    "13 WAKEUP": "wakeup", "14 HEARTBEAT": "heartbeat",
}
OPERATORS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$prefix", "$regex", "$exists")


class QueryError(ValueError):
    """A policy query that cannot be evaluated (unknown operator, bad regex, wrong shape)."""


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class PolicyMatch(BaseModel):
    """Which devices a policy is for; every given criterion must hold (lists mean "any of")."""

    model_config = ConfigDict(extra="forbid")

    tags: list[str] = Field(default_factory=list, description="the device must carry all of these tags")
    oui: list[str] = Field(default_factory=list)
    product_class: list[str] = Field(default_factory=list)
    manufacturer: list[str] = Field(default_factory=list)
    software_version: list[str] = Field(default_factory=list)
    query: dict[str, Any] = Field(default_factory=dict, description="conditions on the Inform's parameters")

    @field_validator("tags", "oui", "product_class", "manufacturer", "software_version", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("query")
    @classmethod
    def _query(cls, query: dict[str, Any]) -> dict[str, Any]:
        check_query(query)
        return query


class PolicyTask(BaseModel):
    """A task a policy creates: name and stored args, resolved when the policy was saved."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class Policy(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    description: str = ""
    enabled: bool = True
    priority: int = 100
    events: list[PolicyEvent]
    match: PolicyMatch = Field(default_factory=PolicyMatch)
    tasks: list[PolicyTask]
    created_at: datetime
    created_by: str | None = None

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return aware(value)

    def to_document(self) -> dict[str, Any]:
        document = self.model_dump(exclude={"id"})
        document["_id"] = self.id
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Policy:
        values = dict(document)
        values["id"] = values.pop("_id")
        return cls.model_validate(values)


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What a policy can look at, all taken from the Inform (plus tags from the inventory)."""

    oui: str = ""
    product_class: str = ""
    manufacturer: str = ""
    software_version: str | None = None
    data_model: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()


def inform_events(codes: Iterable[str], first_contact: bool) -> set[str]:
    events = {"any"}
    for code in codes:
        if name := EVENT_NAMES.get(code):
            events.add(name)
        elif code.startswith(("M ", "X ")):
            events.add(code)  # a policy may name the code itself
    if first_contact:
        events.add("registered")
    return events


def due_policies(policies: Iterable[Policy], facts: DeviceFacts, events: set[str]) -> list[Policy]:
    """The enabled policies that apply to this Inform, in the order their tasks should run."""
    due = [p for p in policies if p.enabled and events.intersection(p.events) and matches(p.match, facts)]
    return sorted(due, key=lambda p: (p.priority, p.name, p.id))


def uses_tags(policies: Iterable[Policy]) -> bool:
    return any(p.enabled and p.match.tags for p in policies)


def matches(match: PolicyMatch, facts: DeviceFacts) -> bool:
    if match.tags and not set(match.tags) <= facts.tags:
        return False
    for wanted, actual in ((match.oui, facts.oui), (match.product_class, facts.product_class),
                           (match.manufacturer, facts.manufacturer),
                           (match.software_version, facts.software_version)):
        if wanted and actual not in wanted:
            return False
    return not match.query or query_matches(match.query, facts.parameters, facts.data_model)


# --- the query language -----------------------------------------------------------------------


def check_query(query: Any) -> None:
    """Raise QueryError if ``query`` is not well formed (done once, when the policy is saved)."""
    if not isinstance(query, Mapping):
        raise QueryError("a query is an object of conditions")
    for key, condition in query.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise QueryError(f"{key} takes a non-empty list of queries")
            for sub in condition:
                check_query(sub)
        elif key.startswith("$"):
            raise QueryError(f"unknown logical operator {key}; use $and or $or")
        elif isinstance(condition, Mapping):
            for op, operand in condition.items():
                if op not in OPERATORS:
                    raise QueryError(f"unknown operator {op} on {key}; known: {', '.join(OPERATORS)}")
                if op in ("$in", "$nin") and not isinstance(operand, list):
                    raise QueryError(f"{op} on {key} takes a list")
                if op == "$regex":
                    _regex(str(operand))


def query_matches(query: Mapping[str, Any], values: Mapping[str, str], root: str | None) -> bool:
    for key, condition in query.items():
        if key == "$and":
            if not all(query_matches(sub, values, root) for sub in condition):
                return False
        elif key == "$or":
            if not any(query_matches(sub, values, root) for sub in condition):
                return False
        elif not _condition(values.get(_absolute(key, root)), condition):
            return False
    return True


def _absolute(name: str, root: str | None) -> str:
    if name.startswith((TR098_ROOT, TR181_ROOT)) or root is None:
        return name
    return root + name


def _condition(actual: str | None, condition: Any) -> bool:
    if not isinstance(condition, Mapping):
        return actual is not None and _equal(actual, condition)
    for op, operand in condition.items():
        if op == "$exists":
            if (actual is not None) != bool(operand):
                return False
            continue
        if actual is None:
            # Like MongoDB: a missing parameter only satisfies negative conditions.
            if op in ("$ne", "$nin"):
                continue
            return False
        ok = _operator(op, actual, operand)
        if not ok:
            return False
    return True


def _operator(op: str, actual: str, operand: Any) -> bool:
    match op:
        case "$eq":
            return _equal(actual, operand)
        case "$ne":
            return not _equal(actual, operand)
        case "$in":
            return any(_equal(actual, o) for o in operand)
        case "$nin":
            return not any(_equal(actual, o) for o in operand)
        case "$gt":
            return _compare(actual, operand) > 0
        case "$gte":
            return _compare(actual, operand) >= 0
        case "$lt":
            return _compare(actual, operand) < 0
        case "$lte":
            return _compare(actual, operand) <= 0
        case "$prefix":
            return actual.startswith(_text(operand))
        case "$regex":
            return _regex(str(operand)).search(actual) is not None
    raise QueryError(f"unknown operator {op}")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _equal(actual: str, expected: Any) -> bool:
    if isinstance(expected, bool):
        # CPEs write booleans as 0/1 or true/false (checklist Q5).
        return actual.strip().lower() in (("1", "true") if expected else ("0", "false"))
    return actual == _text(expected) or (_number(actual) is not None and _number(actual) == _number(expected))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_NATURAL = re.compile(r"([0-9]+)")


def _natural(text: str) -> list[tuple[int, tuple[int, str] | str]]:
    # (0, number) sorts before (1, text) so that "1.10" > "1.9" and mixed parts still compare.
    # A run of digits compares as a number without int(): by length once leading zeros are
    # gone, then by its digits. A CPE's version string may hold thousands of digits, which
    # int() refuses (and a bound on it would be arbitrary).
    return [(0, _digits_key(part)) if part.isascii() and part.isdigit() else (1, part)
            for part in _NATURAL.split(text) if part]


def _digits_key(digits: str) -> tuple[int, str]:
    significant = digits.lstrip("0") or "0"
    return len(significant), significant


def _compare(actual: str, expected: Any) -> int:
    a, b = _number(actual), _number(expected)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    left, right = _natural(actual), _natural(_text(expected))
    return (left > right) - (left < right)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise QueryError(f"bad $regex {pattern!r}: {exc}") from None
