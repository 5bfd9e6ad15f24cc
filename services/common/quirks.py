"""Per-vendor quirks: what some CPEs need done differently, keyed by OUI / ProductClass / software version.

The table lives in MongoDB (collection ``quirks``, written by the orchestrator's /api/v1/quirks,
docs/quirks.md). Every entry has a ``match`` (each of ``oui``, ``product_class`` and
``software_version`` absent, an exact string, ``{"$prefix": ...}`` or one or two of the query
language's comparisons ``$lt``/``$lte``/``$gt``/``$gte``, compared as text like the inventory's
query language does) and the quirks it turns on (:class:`Quirks`, every key optional: absent means
the standard behaviour).

For one device, the most specific matching entry wins alone (:func:`specificity`: more fields
constrained first, then exact over prefix over comparison, then the longer prefix). Two entries
that could match one device with the same specificity are refused when written
(:func:`conflicts`); should two still tie (written around the API), neither applies and the
device gets the standard behaviour.

Readers (the gateway at every Inform, the orchestrator when planning) keep the whole table in
memory (:class:`QuirksCache`): it is small (one entry per misbehaving model), and looking it up
costs no round trip. A generation counter (document ``_id: "*"`` in ``quirks_generation``) is bumped by
every write; each reader checks it every ``ACS_QUIRKS_REFRESH_SECONDS`` and reloads the table
when it moved, so a change reaches every instance within that bound.

The parameter-name case fixes are pure functions here, used by the gateway on what it sends and
receives; the boolean literal style is the protocol core's ``AcsSession.boolean_literal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

COLLECTION = "quirks"
GENERATION_COLLECTION = "quirks_generation"
GENERATION_ID = "*"
COMPARISONS = ("$lt", "$lte", "$gt", "$gte")
MATCH_FIELDS = ("oui", "product_class", "software_version")

Selector = str | dict[str, str]


class Quirks(BaseModel):
    """The known quirk keys. Absent (None): the standard behaviour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    boolean_style: Literal["words", "numeric"] | None = Field(
        None, description='xsd:boolean values in the SetParameterValues the ACS sends: "words" (true/false) '
                          'or "numeric" (1/0)')
    max_envelopes: int | None = Field(
        None, ge=1, le=255, description="MaxEnvelopes of the InformResponse (the standard says 1; some "
                                        "CWMP 1.0 CPEs want another value)")
    gpn_next_level: bool | None = Field(
        None, description="false: the CPE cannot answer GetParameterNames with NextLevel=true; walks ask "
                          "each path with NextLevel=false (the whole subtree at once)")
    session_binding: Literal["cookie", "address"] | None = Field(
        None, description='"address": the CPE returns no cookies and opens a new connection per request; '
                          "its requests are bound to its session by its IP address")
    digest_without_qop: bool | None = Field(
        None, description="true: RFC 2069 Digest (no qop, no nonce count) is accepted from this device")
    end_session: Literal["204", "200"] | None = Field(
        None, description='how the ACS ends a session: "204" (the standard) or "200" with an empty body')
    parameter_case: dict[str, str] | None = Field(
        None, description="name segments as the CPE spells them -> as the data model spells them "
                          '(e.g. {"Lanhostconfigmanagement": "LANHostConfigManagement"}); names the CPE '
                          "reports are fixed, names the ACS sends are spelled the CPE's way")

    @field_validator("parameter_case")
    @classmethod
    def _same_letters(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        targets: dict[str, str] = {}
        for cpe, model in value.items():
            if not cpe or not model or "." in cpe or "." in model:
                raise ValueError("parameter_case maps one name segment (no dots) to another")
            if cpe.lower() != model.lower() or cpe == model:
                raise ValueError(f"{cpe!r} -> {model!r}: only the case may differ")
            if model in targets:
                raise ValueError(f"{targets[model]!r} and {cpe!r} both map to {model!r}")
            targets[model] = cpe
        return value

    def active(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


NO_QUIRKS = Quirks()


class QuirkMatch(BaseModel):
    """Which devices an entry is for; at least one field."""

    model_config = ConfigDict(extra="forbid")

    oui: Selector | None = None
    product_class: Selector | None = None
    software_version: Selector | None = None

    @field_validator("oui", "product_class", "software_version")
    @classmethod
    def _selector(cls, value: Selector | None) -> Selector | None:
        if value is None or isinstance(value, str):
            return value
        if not value:
            raise ValueError("an empty operator object")
        unknown = set(value) - {"$prefix", *COMPARISONS}
        if unknown:
            raise ValueError(f"unknown operator(s) {sorted(unknown)}; allowed: $prefix, {', '.join(COMPARISONS)}")
        if "$prefix" in value and len(value) > 1:
            raise ValueError("$prefix cannot be combined with comparisons")
        if not all(isinstance(v, str) for v in value.values()):
            raise ValueError("operands are strings")
        if "$prefix" in value and not value["$prefix"]:
            raise ValueError("an empty $prefix matches everything: leave the field out")
        if ("$lt" in value and "$lte" in value) or ("$gt" in value and "$gte" in value):
            raise ValueError("at most one upper and one lower bound")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> QuirkMatch:
        if all(getattr(self, f) is None for f in MATCH_FIELDS):
            raise ValueError("match needs at least one of oui, product_class, software_version")
        return self


class QuirkEntry(BaseModel):
    """One stored entry (collection ``quirks``)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    description: str = ""
    match: QuirkMatch
    quirks: Quirks
    version: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None


# --- matching (pure) --------------------------------------------------------------------------


def selector_matches(selector: Selector | None, value: str | None) -> bool:
    if selector is None:
        return True
    if value is None:
        return False
    if isinstance(selector, str):
        return value == selector
    if "$prefix" in selector:
        return value.startswith(selector["$prefix"])
    tests = {"$lt": lambda b: value < b, "$lte": lambda b: value <= b,
             "$gt": lambda b: value > b, "$gte": lambda b: value >= b}
    return all(tests[op](operand) for op, operand in selector.items())


def matches(match: QuirkMatch, oui: str, product_class: str, software_version: str | None) -> bool:
    return (selector_matches(match.oui, oui) and selector_matches(match.product_class, product_class)
            and selector_matches(match.software_version, software_version))


def _rank(selector: Selector | None) -> tuple[int, int]:
    if selector is None:
        return 0, 0
    if isinstance(selector, str):
        return 3, 0
    if "$prefix" in selector:
        return 2, len(selector["$prefix"])
    return 1, 0


def specificity(match: QuirkMatch) -> tuple[int, int, int]:
    """(fields constrained, sum of kinds: exact 3 > prefix 2 > comparison 1, total prefix length)."""
    ranks = [_rank(getattr(match, f)) for f in MATCH_FIELDS]
    return sum(1 for r in ranks if r[0]), sum(r[0] for r in ranks), sum(r[1] for r in ranks)


def _may_overlap(a: Selector | None, b: Selector | None) -> bool:
    """Whether one value could satisfy both (conservative: True when unsure)."""
    if a is None or b is None:
        return True
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, str):
        return selector_matches(b, a)
    if isinstance(b, str):
        return selector_matches(a, b)
    if "$prefix" in a and "$prefix" in b:
        return a["$prefix"].startswith(b["$prefix"]) or b["$prefix"].startswith(a["$prefix"])
    return True


def conflicts(candidate: QuirkMatch, others: Iterable[QuirkEntry], own_id: str | None = None) -> list[QuirkEntry]:
    """Entries that tie with ``candidate``: same specificity, and a device could match both."""
    wanted = specificity(candidate)
    return [e for e in others if e.id != own_id and specificity(e.match) == wanted
            and all(_may_overlap(getattr(candidate, f), getattr(e.match, f)) for f in MATCH_FIELDS)]


def select(entries: Iterable[QuirkEntry], oui: str, product_class: str,
           software_version: str | None) -> QuirkEntry | None:
    """The entry for a device: the most specific that matches; None when none does or two tie."""
    best: list[QuirkEntry] = []
    best_rank: tuple[int, int, int] | None = None
    for entry in entries:
        if not matches(entry.match, oui, product_class, software_version):
            continue
        rank = specificity(entry.match)
        if best_rank is None or rank > best_rank:
            best, best_rank = [entry], rank
        elif rank == best_rank:
            best.append(entry)
    if len(best) > 1:
        log.warning("quirk entries tie for a device; none applies",
                    extra={"oui": oui, "product_class": product_class, "entries": sorted(e.name for e in best)})
        return None
    return best[0] if best else None


def software_version_of(parameters: Iterable[tuple[str, str]]) -> str | None:
    """DeviceInfo.SoftwareVersion among an Inform's (name, value) pairs."""
    for name, value in parameters:
        if name.endswith(".DeviceInfo.SoftwareVersion") and name.count(".") == 2:
            return value
    return None


# --- what the quirks change (pure) ------------------------------------------------------------

class NameCase:
    """Parameter-name case fixes both ways, from :attr:`Quirks.parameter_case`."""

    def __init__(self, cpe_to_model: Mapping[str, str]) -> None:
        self.to_model_map = dict(cpe_to_model)
        self.to_cpe_map = {model: cpe for cpe, model in cpe_to_model.items()}

    @staticmethod
    def _map(name: str, table: Mapping[str, str]) -> str:
        if not table or not isinstance(name, str):
            return name
        return ".".join(table.get(part, part) for part in name.split("."))

    def to_model(self, name: str) -> str:
        return self._map(name, self.to_model_map)

    def to_cpe(self, name: str) -> str:
        return self._map(name, self.to_cpe_map)


# Where RPC dicts (cwmp.models.rpc_to_dict) carry parameter or object names.
_NAME_KEYS = ("name", "parameter_name", "parameter_path", "object_name")
_NAME_LISTS = ("parameter_names",)


def rename(data: Any, fix: Any) -> Any:
    """``data`` (an RPC dict, or a part of it) with every parameter/object name passed through ``fix``."""
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key in _NAME_KEYS and isinstance(value, str):
                out[key] = fix(value)
            elif key in _NAME_LISTS and isinstance(value, list):
                out[key] = [fix(v) if isinstance(v, str) else v for v in value]
            else:
                out[key] = rename(value, fix)
        return out
    if isinstance(data, list):
        return [rename(item, fix) for item in data]
    return data


# --- storage and the readers' cache -----------------------------------------------------------


async def bump_generation(db: AsyncDatabase) -> None:
    await db[GENERATION_COLLECTION].update_one({"_id": GENERATION_ID}, {"$inc": {"gen": 1}}, upsert=True)


async def load_entries(db: AsyncDatabase) -> list[QuirkEntry]:
    entries: list[QuirkEntry] = []
    async for doc in db[COLLECTION].find({}):
        doc["id"] = doc.pop("_id")
        try:
            entries.append(QuirkEntry.model_validate(doc))
        except ValueError:
            log.warning("unreadable quirk entry skipped", extra={"quirk_id": str(doc.get("id"))})
    return entries


class QuirksCache:
    """The whole table in memory, reloaded when its generation moved (checked every ``refresh`` s)."""

    def __init__(self, db: AsyncDatabase, refresh: float = 2.0) -> None:
        self.db = db
        self.refresh = refresh
        self.entries: list[QuirkEntry] = []
        self.generation: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.reload_if_changed()
        except PyMongoError as exc:
            log.warning("quirks table unavailable at start; retrying", extra={"error": repr(exc)})
        self._task = asyncio.create_task(self._watch(), name="quirks-refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def reload_if_changed(self) -> bool:
        doc = await self.db[GENERATION_COLLECTION].find_one({"_id": GENERATION_ID})
        generation = int((doc or {}).get("gen", 0))
        if generation == self.generation:
            return False
        self.entries = await load_entries(self.db)
        self.generation = generation
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.reload_if_changed()
            except PyMongoError as exc:
                # The last table read stays in use; the next check tries again.
                log.warning("could not refresh the quirks table", extra={"error": repr(exc)})

    def lookup(self, oui: str, product_class: str, software_version: str | None) -> Quirks:
        entry = select(self.entries, oui, product_class, software_version)
        return entry.quirks if entry is not None else NO_QUIRKS
