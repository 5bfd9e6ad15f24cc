"""Policies: provisioning without code. "On these events, for devices like these, do these tasks."

A policy is evaluated by the planner at Inform time, against what the Inform itself says (the
DeviceId, the event codes, the parameters in its ParameterList) and the device's tags. It never
needs the inventory on the critical path: tags are fetched only when some policy uses them.

The parameter query is the inventory's device query language, compiled by the inventory's own
compiler (``services/inventory/query.py``) and evaluated in memory with MongoDB's rules, so a query
means the same in ``GET /api/v1/devices?q=``, in a policy, in a profile selector and in a job. A
name that does not start with a data model root is relative to the device's root, so one policy
serves TR-098 and TR-181 devices alike. Values from the Inform are typed by their xsi type, as the
inventory stores them: numbers compare as numbers, text as text (code point order).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.inventory.query import QueryError, compile_query, device_document
from services.inventory.query import matches as inventory_matches
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
__all__ = ["QueryError"]  # the inventory's: one query language for the whole ACS


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
    # xsi types of ``parameters`` (absent: xsd:string), so values compare as the inventory stores them.
    parameter_types: Mapping[str, str] = field(default_factory=dict)


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
    return not match.query or query_matches(match.query, facts.parameters, facts.data_model,
                                            facts.parameter_types)


# --- the query language: the inventory's -------------------------------------------------------


def check_query(query: Any) -> None:
    """Raise QueryError if ``query`` is not a valid device query (done once, when the policy is saved)."""
    compiled_query(query)


def compiled_query(query: Any) -> dict[str, Any]:
    """The inventory's compiled filter for ``query``, cached by its JSON text."""
    return _compiled(json.dumps(query, sort_keys=True, default=str))


@lru_cache(maxsize=4096)
def _compiled(text: str) -> dict[str, Any]:
    return compile_query(json.loads(text))


def query_matches(query: Mapping[str, Any], values: Mapping[str, str], root: str | None = None,
                  types: Mapping[str, str] | None = None) -> bool:
    """``query`` over the parameters ``values`` (name -> text; ``types``: name -> xsi type), decided
    as the inventory decides it (``root`` is implied: a relative name matches under either root)."""
    types = types or {}
    document = device_document({}, ((n, v, types.get(n, "xsd:string")) for n, v in values.items()))
    return query_matches_document(compiled_query(query), document)


def query_matches_document(query_filter: Mapping[str, Any], document: Mapping[str, Any]) -> bool:
    return inventory_matches(query_filter, document)
