"""Configuration profiles: what devices should be, and the difference to plan. No I/O here.

A profile is a selector (the inventory's device query language), a priority, enabled or not,
``enforce`` or ``report`` (report-only), and a desired state: parameter values (templates over the
device's facts and per-device variables), parameter attributes, and actions on Inform events (what
policies did). At every Inform the planner asks :func:`decide` what to do:

1. The applicable profiles: the enabled ones whose selector matches the device (its fields, its
   tags and the Inform's parameters, evaluated with the inventory's rules). Selectors with an
   equality on a device field (``product_class``, ``oui``, ...) are indexed, so 1,000 profiles do
   not cost 1,000 evaluations.
2. The effective desired state: per parameter, the value of the applicable profile with the
   highest priority (priorities are unique: a tie is refused when a profile is saved), with its
   templates filled in. A template naming a variable the device does not have leaves the
   parameter out ("unresolved").
3. The difference: a parameter is due when the device never confirmed that value (the orchestrator
   keeps a digest per managed parameter of the value the CPE accepted, ``profile_applied``), or
   when the Inform reports another value (drift: a ``4 VALUE CHANGE``, or any Inform parameter).
   In ``enforce`` mode the due values go out in one SetParameterValues; in ``report`` mode nothing
   is sent and drift is only reported.

The device keeps a small state (``profile_applied``, ``profile_status``, ``profile_failed``) that
grows with the managed parameters and the applicable profiles, not with the data model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.bus.events import DeviceEvent
from services.inventory.params import encode_name, is_secret, stored_value
from services.inventory.query import MISSING, ROOTS, compile_query, lookup, matcher, value_key
from services.orchestrator.policies import PolicyEvent, PolicyTask
from services.orchestrator.specs import _check_name
from services.orchestrator.tasks import Task, TaskStatus, aware

PROFILE_ORIGIN = "profile"
ACTION_ORIGIN_PREFIX = "profile:"
PARAMETER_KEY = "profile"
# Markers in ``profile_applied`` before a digest: accepted with Status 1, not yet read back; read
# back before a reboot with the old value (read again after the next boot).
READBACK, AFTER_BOOT = "?", "!"
FRESH = "~"  # profile_applied["~" + name]: when a freshness path was last read (epoch seconds)
Mode = Literal["enforce", "report"]
DeviceProfileState = Literal["compliant", "pending", "drifted", "failing"]
# Device facts a template may name; ``{vars.NAME}`` names a per-device variable.
FACTS = ("serial_number", "oui", "product_class", "manufacturer", "device_id", "tags")
_TEMPLATE = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)?)\}")
VARIABLE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_PARAMETERS = 500
REDACTED = "********"


def _templates(text: str) -> list[str]:
    return [m.group(1) for m in _TEMPLATE.finditer(text) if m.group(1)]


class DesiredParameter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="full name or relative to the data model root (DeviceInfo. ...)")
    value: str | bool | int = Field(description="a value, or a template: {serial_number}, {oui}, {product_class}, "
                                                "{manufacturer}, {device_id}, {tags}, {vars.NAME}")
    type: str | None = Field(None, description="xsd type; inferred when absent (bool, integer, text)")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return _check_name(name, partial=False)

    @model_validator(mode="after")
    def _template(self) -> DesiredParameter:
        if isinstance(self.value, str):
            for ref in _templates(self.value):
                if ref.startswith("vars."):
                    if not VARIABLE_NAME.match(ref[5:]):
                        raise ValueError(f"{{{ref}}}: a variable name is letters, digits, _ and -")
                elif ref not in FACTS:
                    raise ValueError(f"unknown template {{{ref}}}; use one of "
                                     f"{', '.join('{' + f + '}' for f in FACTS)} or {{vars.NAME}}")
        return self

    def xsd_type(self) -> str:
        if self.type:
            return self.type
        if isinstance(self.value, bool):
            return "xsd:boolean"
        if isinstance(self.value, int):
            return "xsd:unsignedInt" if self.value >= 0 else "xsd:int"
        return "xsd:string"

    def text(self) -> str:
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        return str(self.value)


class DesiredAttribute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    notification: int | None = Field(None, ge=0, le=6, description="0 off, 1 passive, 2 active")
    access_list: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return _check_name(name)


class ProfileFirmware(BaseModel):
    """The firmware devices should run (the selector says which: typically one product class)."""

    model_config = ConfigDict(extra="forbid")

    file_name: str = Field(min_length=1, max_length=255, description="a file on the fileserver")
    version: str | None = Field(None, max_length=64, description="the SoftwareVersion it installs "
                                                                  "(default: the file's version)")
    # Looked up on the fileserver when the profile is saved (save again after replacing the file).
    file_type: str | None = Field(None, max_length=64)
    file_size: int | None = None
    url: str | None = None


class DesiredObject(BaseModel):
    """An instance of a table identified by its key parameters: it exists with these values
    (``present``), or no instance has these key values (``present: false``)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="the table, ending with '.' (full, or relative to the data model root): "
                                  "WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.PortMapping.")
    keys: list[DesiredParameter] = Field(min_length=1, max_length=10,
                                         description="names relative to the instance, and their values")
    values: list[DesiredParameter] = Field(default_factory=list, max_length=50,
                                           description="what else the instance holds (present only)")
    present: bool = Field(True, description="false: delete every instance whose keys have these values")

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        return _check_name(path, object_path=True)

    @model_validator(mode="after")
    def _shape(self) -> DesiredObject:
        if not self.present and self.values:
            raise ValueError("an absent instance has no values")
        names = [p.name for p in (*self.keys, *self.values)]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.path}: a name is given twice among keys and values")
        return self


class Freshness(BaseModel):
    """Keep a parameter or a subtree no older than ``max_age``: read it (GetParameterValues) when
    the last read is older."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a parameter, or a subtree ending with '.' (full or relative)")
    max_age: int = Field(ge=60, le=365 * 86400, description="seconds")

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        return _check_name(path)


class Discovery(BaseModel):
    """How much of the data model a device's bootstrap walks, beyond the ACS's own subtrees."""

    model_config = ConfigDict(extra="forbid")

    subtrees: list[str] = Field(default_factory=list, max_length=20,
                                description="partial paths (full or relative), walked level by level")
    full: bool = Field(False, description="walk the whole data model level by level (bounded by "
                                          "ACS_WALK_MAX_PARAMETERS)")

    @field_validator("subtrees")
    @classmethod
    def _subtrees(cls, subtrees: list[str]) -> list[str]:
        return [_check_name(p, object_path=True) for p in subtrees]


class ProfileAction(BaseModel):
    """On these Inform events, queue these tasks: what a policy did, now part of a profile."""

    model_config = ConfigDict(extra="forbid")

    events: list[PolicyEvent] = Field(min_length=1)
    tasks: list[PolicyTask] = Field(min_length=1)


class ProfileBody(BaseModel):
    """What an operator writes (POST, PUT; PATCH changes some of it)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    description: str = Field("", max_length=2000)
    selector: dict[str, Any] = Field(default_factory=dict, description="an inventory device query; {} = every device")
    priority: int = Field(description="higher wins per parameter; unique among profiles")
    enabled: bool = True
    mode: Mode = Field("enforce", description="enforce: converge and correct drift; report: only report")
    parameters: list[DesiredParameter] = Field(default_factory=list, max_length=MAX_PARAMETERS)
    attributes: list[DesiredAttribute] = Field(default_factory=list, max_length=MAX_PARAMETERS)
    objects: list[DesiredObject] = Field(default_factory=list, max_length=50,
                                         description="object instances identified by key parameters")
    freshness: list[Freshness] = Field(default_factory=list, max_length=50)
    discovery: Discovery | None = Field(None, description="what a bootstrap walks for these devices")
    actions: list[ProfileAction] = Field(default_factory=list, max_length=20)
    firmware: ProfileFirmware | None = Field(None, description="devices whose SoftwareVersion is below "
                                                               "its version download it")

    @field_validator("selector")
    @classmethod
    def _selector(cls, selector: dict[str, Any]) -> dict[str, Any]:
        compile_query(selector)  # QueryError is a ValueError: a 422 naming the problem
        return selector

    @field_validator("parameters")
    @classmethod
    def _unique(cls, parameters: list[DesiredParameter]) -> list[DesiredParameter]:
        seen: set[str] = set()
        for p in parameters:
            if _relative(p.name) in seen:
                raise ValueError(f"{p.name} is given twice")
            seen.add(_relative(p.name))
        return parameters


class Profile(ProfileBody):
    model_config = ConfigDict(extra="ignore")

    id: str
    version: int = 1
    created_at: datetime
    created_by: str | None = None
    updated_at: datetime
    updated_by: str | None = None

    @field_validator("created_at", "updated_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return aware(value)

    def body(self) -> dict[str, Any]:
        return self.model_dump(include=set(ProfileBody.model_fields))


def _relative(name: str) -> str:
    for root in ROOTS:
        if name.startswith(root):
            return name[len(root):]
    return name


def absolute(name: str, root: str | None) -> str | None:
    """``name`` under the device's root; None when it names the other root."""
    if name.startswith(ROOTS):
        return name if root is None or name.startswith(root) else None
    return (root or ROOTS[1]) + name


# --- compiled profiles ------------------------------------------------------------------------


@dataclass(frozen=True)
class Compiled:
    profile: Profile
    filter: dict[str, Any]
    variables: frozenset[str]
    test: Callable[[Mapping[str, Any]], bool]


class ProfileSet:
    """The enabled profiles, compiled once (the engine caches it until a profile changes).

    Most selectors require some field or parameter to equal one of a few values (``product_class``,
    ``oui``, a tag, ``DeviceInfo.ProvisioningCode``...). Such a profile is indexed under each
    (path, value) that would satisfy that clause, so that an Inform looks at the profiles its own
    values point to, and evaluates only the few selectors that have no such clause.
    """

    def __init__(self, profiles: Iterable[Profile], generation: int = 0) -> None:
        self.generation = generation
        self.all: list[Compiled] = []
        self._indexed: dict[tuple[tuple[str, ...], tuple[str, Any]], list[Compiled]] = {}
        self._paths: list[tuple[str, ...]] = []
        self._rest: list[Compiled] = []
        for profile in profiles:
            if not profile.enabled:
                continue
            query_filter = compile_query(profile.selector)
            compiled = Compiled(profile, query_filter, frozenset(
                ref[5:] for p in (*profile.parameters, *(v for o in profile.objects for v in (*o.keys, *o.values)))
                if isinstance(p.value, str) for ref in _templates(p.value) if ref.startswith("vars.")),
                matcher(query_filter))
            self.all.append(compiled)
            keys = _index_keys(query_filter)
            if keys is None:
                self._rest.append(compiled)
                continue
            for parts, key in keys:
                self._indexed.setdefault((parts, key), []).append(compiled)
                if parts not in self._paths:
                    self._paths.append(parts)
        self.uses_variables = any(c.variables for c in self.all)
        self.uses_tags = any('"tags"' in repr(c.profile.selector).replace("'", '"') for c in self.all)

    def __len__(self) -> int:
        return len(self.all)

    def applicable(self, document: Mapping[str, Any]) -> list[Compiled]:
        """The profiles whose selector matches, highest priority first."""
        candidates: dict[str, Compiled] = {c.profile.id: c for c in self._rest}
        for parts in self._paths:
            value = lookup(document, parts)
            if value is MISSING:
                continue
            for item in (value if isinstance(value, list) else [value]):
                for c in self._indexed.get((parts, value_key(item)), ()):
                    candidates[c.profile.id] = c
        found = [c for c in candidates.values() if c.test(document)]
        found.sort(key=lambda c: -c.profile.priority)
        return found


def _index_keys(query_filter: Mapping[str, Any]) -> list[tuple[tuple[str, ...], tuple[str, Any]]] | None:
    """(path, value) pairs one of which a matching document must have; None if there is no such clause."""
    clauses = query_filter["$and"] if set(query_filter) == {"$and"} else [{k: v} for k, v in query_filter.items()]
    for clause in clauses:
        keys = _clause_keys(clause)
        if keys:
            return keys
    return None


def _clause_keys(clause: Mapping[str, Any]) -> list[tuple[tuple[str, ...], tuple[str, Any]]] | None:
    if len(clause) != 1:
        return None
    (path, condition), = clause.items()
    if path == "$or":
        keys: list[tuple[tuple[str, ...], tuple[str, Any]]] = []
        for sub in condition:
            sub_keys = _clause_keys(sub)
            if not sub_keys:
                return None
            keys += sub_keys
        return keys
    if path.startswith("$") or not isinstance(condition, Mapping) or len(condition) != 1:
        return None
    (op, operand), = condition.items()
    if op == "$eq":
        return [(tuple(path.split(".")), value_key(operand))]
    if op == "$in":
        return [(tuple(path.split(".")), value_key(o)) for o in operand]
    return None


# --- the effective desired state ----------------------------------------------------------------


@dataclass(frozen=True)
class Desired:
    name: str
    value: str
    type: str
    profile_id: str
    profile_name: str
    priority: int
    mode: Mode
    secret: bool

    def digest(self) -> str:
        return value_digest(self.value, self.type)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "value": REDACTED if self.secret else self.value, "type": self.type,
                "profile_id": self.profile_id, "profile_name": self.profile_name, "priority": self.priority,
                "mode": self.mode, "secret": self.secret}


@dataclass(frozen=True)
class DesiredAttr:
    name: str
    notification: int | None
    access_list: tuple[str, ...] | None
    profile_id: str
    mode: Mode

    def digest(self) -> str:
        return value_digest(f"{self.notification}|{self.access_list}", "attr")


@dataclass(frozen=True)
class DesiredInstance:
    """One object entry of the effective state. ``id`` names the instance (table and key values)
    for the device's whole life: the device state keeps ``#id`` (the digest it converged to) and
    ``+id`` (the instance the ACS created for it)."""

    id: str
    path: str
    keys: tuple[tuple[str, str, str], ...]  # (name relative to the instance, value, xsd type)
    values: tuple[tuple[str, str, str], ...]
    present: bool
    profile_id: str
    profile_name: str
    mode: Mode
    secret: frozenset[str]  # relative names whose value is secret (never compared, never shown)

    def digest(self) -> str:
        return value_digest(f"{self.present}|{self.keys}|{self.values}", "object")

    def args(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "present": self.present,
                "keys": [list(k) for k in self.keys], "values": [list(v) for v in self.values],
                "secret": sorted(self.secret)}

    def public(self) -> dict[str, Any]:
        def show(items: tuple[tuple[str, str, str], ...]) -> list[dict[str, str]]:
            return [{"name": n, "value": REDACTED if n in self.secret else v, "type": t} for n, v, t in items]
        return {"path": self.path, "present": self.present, "keys": show(self.keys), "values": show(self.values),
                "profile_id": self.profile_id, "profile_name": self.profile_name, "mode": self.mode}


def instance_id(path: str, keys: Iterable[tuple[str, str, str]]) -> str:
    return value_digest(path + "|" + "|".join(f"{n}={v}" for n, v, _ in sorted(keys)), "instance")


@dataclass
class Effective:
    values: dict[str, Desired] = field(default_factory=dict)
    attributes: dict[str, DesiredAttr] = field(default_factory=dict)
    objects: dict[str, DesiredInstance] = field(default_factory=dict)
    freshness: dict[str, int] = field(default_factory=dict)  # absolute path -> the smallest max age
    discover: list[str] = field(default_factory=list)  # absolute subtrees to walk at bootstrap
    discover_full: bool = False
    # (name, profile name, why): parameters left out for this device
    unresolved: list[dict[str, str]] = field(default_factory=list)
    overridden: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[Compiled] = field(default_factory=list)


@dataclass(frozen=True)
class Variables:
    values: Mapping[str, str] = field(default_factory=dict)
    secret: frozenset[str] = frozenset()


@lru_cache(maxsize=65536)
def value_digest(value: str, xsd_type: str) -> str:
    return hashlib.sha256(f"{xsd_type}\0{value}".encode()).hexdigest()[:16]


def render(template: str, facts: Mapping[str, Any], variables: Variables) -> tuple[str | None, bool, str | None]:
    """(text, uses a secret variable, what is missing)."""
    secret = False
    missing: str | None = None

    def fill(match: re.Match[str]) -> str:
        nonlocal secret, missing
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        ref = match.group(1)
        if ref.startswith("vars."):
            name = ref[5:]
            if name not in variables.values:
                missing = missing or f"variable {name}"
                return ""
            secret |= name in variables.secret
            return variables.values[name]
        if ref == "tags":
            return ",".join(sorted(facts.get("tags") or ()))
        value = facts.get(ref)
        if value is None or value == "":
            missing = missing or f"device fact {ref}"
            return ""
        return str(value)

    text = _TEMPLATE.sub(fill, template)
    return (None if missing else text), secret, missing


def effective(applicable: Sequence[Compiled], facts: Mapping[str, Any], root: str | None,
              variables: Variables) -> Effective:
    """Merge the applicable profiles (highest priority first): the first to give a parameter wins."""
    out = Effective(profiles=list(applicable))
    for compiled in applicable:
        profile = compiled.profile
        for p in profile.parameters:
            name = absolute(p.name, root)
            if name is None:
                continue
            if name in out.values:
                out.overridden.append({"name": name, "profile_id": profile.id, "profile_name": profile.name,
                                       "by": out.values[name].profile_name})
                continue
            text, secret_var, missing = render(p.text(), facts, variables) \
                if isinstance(p.value, str) and "{" in p.value else (p.text(), False, None)
            if text is None:
                out.unresolved.append({"name": name, "profile_name": profile.name, "missing": missing or ""})
                continue
            out.values[name] = Desired(name, text, p.xsd_type(), profile.id, profile.name, profile.priority,
                                       profile.mode, secret_var or _secret_name(name))
        for a in profile.attributes:
            name = absolute(a.name, root)
            if name is None or name in out.attributes:
                continue
            out.attributes[name] = DesiredAttr(name, a.notification,
                                               tuple(a.access_list) if a.access_list is not None else None,
                                               profile.id, profile.mode)
        for f in profile.freshness:
            path = absolute(f.path, root)
            if path is not None:
                out.freshness[path] = min(f.max_age, out.freshness.get(path, f.max_age))
        if profile.discovery is not None:
            out.discover_full |= profile.discovery.full
            out.discover += [p for p in (absolute(s, root) for s in profile.discovery.subtrees)
                             if p is not None and p not in out.discover]
        for o in profile.objects:
            path = absolute(o.path, root)
            if path is None:
                continue
            filled: list[list[tuple[str, str, str]]] = [[], []]
            secret: set[str] = set()
            missing = ""
            for part, items in ((0, o.keys), (1, o.values)):
                for p in items:
                    text, secret_var, why = render(p.text(), facts, variables) \
                        if isinstance(p.value, str) and "{" in p.value else (p.text(), False, None)
                    if text is None:
                        missing = missing or why or ""
                        continue
                    if secret_var or _secret_name(p.name):
                        secret.add(p.name)
                    filled[part].append((p.name, text, p.xsd_type()))
            if missing:
                out.unresolved.append({"name": path, "profile_name": profile.name, "missing": missing})
                continue
            keys = tuple(sorted(filled[0]))
            oid = instance_id(path, keys)
            if oid in out.objects:
                out.overridden.append({"name": path, "profile_id": profile.id, "profile_name": profile.name,
                                       "by": out.objects[oid].profile_name})
                continue
            out.objects[oid] = DesiredInstance(oid, path, keys, tuple(filled[1]), o.present, profile.id,
                                               profile.name, profile.mode, frozenset(secret))
    return out


_DIGITS = re.compile(r"([0-9]+)")


def version_key(version: str) -> list[tuple[int, tuple[int, str] | str]]:
    """Software versions compare part by part, numbers as numbers: 1.9.2 < 1.10.0 < 2.0. A run of
    digits compares by its length without leading zeros, then by its digits: no int(), which
    refuses the thousands of digits a CPE may send."""
    out: list[tuple[int, tuple[int, str] | str]] = []
    for part in _DIGITS.split(version):
        if part.isascii() and part.isdigit():
            significant = part.lstrip("0") or "0"
            out.append((0, (len(significant), significant)))
        elif part:
            out.append((1, part))
    return out


def below(current: str | None, wanted: str) -> bool:
    return current is not None and version_key(current) < version_key(wanted)


@lru_cache(maxsize=65536)
def _secret_name(name: str) -> bool:
    return is_secret(name)


def same_value(actual: str, actual_type: str, desired: Desired) -> bool:
    return same_text(actual, actual_type, desired.value, desired.type)


def same_text(actual: str, actual_type: str, value: str, xsd_type: str) -> bool:
    """Whether the CPE's ``actual`` is the desired ``value`` (numbers and booleans by value)."""
    if actual == value:
        return True
    a, d = stored_value(actual, actual_type), stored_value(value, xsd_type)
    if isinstance(d, bool) and not isinstance(a, bool):
        a = stored_value(actual, "xsd:boolean")
    if isinstance(d, int) and not isinstance(d, bool) and isinstance(a, str):
        a = stored_value(actual, "xsd:int")
    return type(a) is type(d) and a == d


# --- object instances: what a read of their tables asks for ----------------------------------


@dataclass
class ObjectOps:
    """What converges the object entries, given their tables as the CPE just answered them."""

    set_values: list[tuple[str, str, str]] = field(default_factory=list)  # on existing instances
    add: list[str] = field(default_factory=list)  # entry ids whose instance must be created
    delete: list[str] = field(default_factory=list)  # instance paths ("...PortMapping.3.")
    matched: dict[str, str] = field(default_factory=dict)  # entry id -> the instance that is it


def table_instances(path: str, values: Mapping[str, tuple[str, str]]) -> dict[str, dict[str, tuple[str, str]]]:
    """A GetParameterValues answer of ``path`` as {instance path: {relative name: (value, type)}}."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for name, found in values.items():
        if not name.startswith(path):
            continue
        number, _, rest = name[len(path):].partition(".")
        if number.isdigit() and rest:
            out.setdefault(f"{path}{number}.", {})[rest] = found
    return out


def _holds(instance: Mapping[str, tuple[str, str]], items: Iterable[Sequence[str]]) -> bool:
    return all(n in instance and same_text(*instance[n], v, t) for n, v, t in items)


def plan_objects(entries: Sequence[Mapping[str, Any]],
                 tables: Mapping[str, Mapping[str, Mapping[str, tuple[str, str]]]],
                 created: Mapping[str, str]) -> ObjectOps:
    """``entries``: DesiredInstance.args(); ``tables``: per table path, its instances (see
    :func:`table_instances`); ``created``: entry id -> the instance the ACS created for it earlier.

    An entry that is present uses the instance whose keys match, else the one the ACS created
    for it before (its key values may not have been set yet: the session that created it ended
    early), else a new one. The instance the ACS created is never created again while it exists."""
    ops = ObjectOps()
    claimed: set[str] = set()
    for entry in entries:
        instances = tables.get(entry["path"], {})
        secret = set(entry.get("secret", []))
        if not entry["present"]:
            for instance_path, instance in sorted(instances.items()):
                if _holds(instance, entry["keys"]) and instance_path not in ops.delete:
                    ops.delete.append(instance_path)
            continue
        match = next((p for p, i in sorted(instances.items()) if p not in claimed and _holds(i, entry["keys"])), None)
        if match is None and created.get(entry["id"]) in instances and created[entry["id"]] not in claimed:
            match = created[entry["id"]]
        if match is None:
            ops.add.append(entry["id"])
            continue
        claimed.add(match)
        ops.matched[entry["id"]] = match
        instance = instances[match]
        for name, value, xsd in (*entry["keys"], *entry["values"]):
            if name in secret or name not in instance or not same_text(*instance[name], value, xsd):
                ops.set_values.append((match + name, value, xsd))
    return ops


# --- the decision of one Inform -------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileInput:
    """What the engine hands the planner for profiles: the cached compiled set, the device's variables."""

    profiles: ProfileSet
    variables: Variables = field(default_factory=lambda: Variables())


@dataclass
class ProfileState:
    """The profile part of the orchestrator's device document."""

    applied: dict[str, str] = field(default_factory=dict)  # encoded name -> digest the CPE accepted
    status: dict[str, dict[str, Any]] = field(default_factory=dict)  # profile id -> state, fault, at
    failed: dict[str, Any] | None = None  # {"digest": of the values that failed, "fault": ..., "at": ...}


@dataclass
class Outcome:
    tasks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (task name, args)
    state: ProfileState = field(default_factory=ProfileState)
    events: list[DeviceEvent] = field(default_factory=list)
    actions: list[tuple[str, str, PolicyTask]] = field(default_factory=list)  # (action id, origin, task)
    effective: Effective = field(default_factory=Effective)
    drifted: list[dict[str, Any]] = field(default_factory=list)


def decide(pset: ProfileSet | None, document: Mapping[str, Any], facts: Mapping[str, Any], root: str | None,
           state: ProfileState, reported: Mapping[str, tuple[str, str]], variables: Variables,
           events: set[str], open_tasks: Iterable[Task], now: datetime, *, bootstrap: bool = False,
           match_all: bool = False) -> Outcome:
    """What the profiles want of this Inform.

    ``document``: the device as the selector sees it (see ``services.inventory.query.device_document``);
    ``facts``: the template facts; ``reported``: the Inform's parameters (name -> (value, type));
    ``open_tasks``: the device's open tasks (one profile task at a time).
    """
    applied = {} if bootstrap else dict(state.applied)
    failed_all = {} if bootstrap or not state.failed else dict(state.failed)
    failed = failed_all.get("values")
    if pset is None or not pset.all:
        return Outcome(state=ProfileState(applied={}, status={}, failed=None) if state.status or state.applied
                       else state)
    applicable = sorted(pset.all, key=lambda c: -c.profile.priority) if match_all else pset.applicable(document)
    eff = effective(applicable, facts, root, variables)
    out = Outcome(effective=eff)
    busy = any(t.origin == PROFILE_ORIGIN and t.open for t in open_tasks)

    # Drift: the Inform says otherwise than what is desired (secrets read back empty: not drift).
    drifted: dict[str, Desired] = {}
    for name, desired in eff.values.items():
        if name in reported and not desired.secret:
            value, xsd = reported[name]
            if not same_value(value, xsd, desired):
                drifted[name] = desired
                out.drifted.append({"name": name, "value": value, "desired": desired.value,
                                    "profile_id": desired.profile_id, "mode": desired.mode})
                applied.pop(encode_name(name), None)
            else:
                applied[encode_name(name)] = desired.digest()  # seen compliant: nothing to send
    # SetParameterValues Status 1 (applied after a reboot or commit): "?" + digest until a read
    # confirms it, "!" + digest when a read before a reboot still showed the old value.
    booted = bool(events & {"boot", "bootstrap"})
    unconfirmed = {n: d for n, d in eff.values.items() if applied.get(encode_name(n)) in (
        READBACK + d.digest(), AFTER_BOOT + d.digest())}
    due = [d for n, d in eff.values.items()
           if d.mode == "enforce" and n not in unconfirmed and applied.get(encode_name(n)) != d.digest()]
    due_attrs = [a for n, a in eff.attributes.items()
                 if a.mode == "enforce" and applied.get("@" + encode_name(n)) != a.digest()]
    due_digest = value_digest("|".join(sorted(f"{d.name}={d.digest()}" for d in due) +
                                       sorted(f"@{a.name}={a.digest()}" for a in due_attrs)), "due")
    gave_up = failed is not None and failed.get("digest") == due_digest
    to_read = [d for n, d in unconfirmed.items() if booted or applied[encode_name(n)][0] == READBACK]
    if to_read and not busy:
        out.tasks.append(("getParameterValues", {
            "parameter_names": [d.name for d in to_read],
            "profile": {"kind": "readback", "after_boot": booted, "profiles": sorted({d.profile_id for d in to_read}),
                        "expect": {d.name: [d.value, d.type, d.digest()] for d in to_read}}}))
        busy = True
    if (due or due_attrs) and not busy and not gave_up:
        if due:
            out.tasks.append(("setParameterValues", {
                "parameter_values": [{"name": d.name, "value": d.value, "type": d.type} for d in due],
                "parameter_key": PARAMETER_KEY,
                "profile": {"digests": {encode_name(d.name): d.digest() for d in due}, "due": due_digest,
                            "profiles": sorted({d.profile_id for d in due}),
                            "secret": sorted(d.name for d in due if d.secret)}}))
        if due_attrs:
            out.tasks.append(("setParameterAttributes", {
                "parameters": [{"name": a.name,
                                **({"notification": a.notification} if a.notification is not None else {}),
                                **({"access_list": list(a.access_list)} if a.access_list is not None else {})}
                               for a in due_attrs],
                "profile": {"digests": {"@" + encode_name(a.name): a.digest() for a in due_attrs},
                            "due": due_digest, "profiles": sorted({a.profile_id for a in due_attrs})}}))

    # Object instances: one task reads their tables and converges them (see plan_objects).
    due_objects = [o for o in eff.objects.values() if o.mode == "enforce" and applied.get("#" + o.id) != o.digest()]
    objects_digest = value_digest("|".join(sorted(f"{o.id}={o.digest()}" for o in due_objects)), "objects")
    objects_gave_up = (failed_all.get("objects") or {}).get("digest") == objects_digest
    if due_objects and not busy and not objects_gave_up:
        out.tasks.append(("profileObjects", {
            "objects": [o.args() for o in due_objects], "parameter_key": PARAMETER_KEY,
            "profile": {"kind": "objects", "digests": {"#" + o.id: o.digest() for o in due_objects},
                        "due": objects_digest, "profiles": sorted({o.profile_id for o in due_objects})}}))

    # Freshness: "~" + name keeps when it was last read (epoch seconds); an Inform that carries a
    # stale parameter is a read of it.
    stamp = str(int(now.timestamp()))
    stale: list[str] = []
    for path, max_age in sorted(eff.freshness.items()):
        key = FRESH + encode_name(path)
        last = applied.get(key)
        if last is not None and last.isdigit() and now.timestamp() - int(last) <= max_age:
            continue
        if path in reported:
            applied[key] = stamp
        else:
            stale.append(path)
    if stale and not any(t.origin == PROFILE_ORIGIN and t.open and (t.args.get("profile") or {}).get("kind")
                         == "refresh" for t in open_tasks):
        out.tasks.append(("getParameterValues", {"parameter_names": stale, "profile": {
            "kind": "refresh", "profiles": sorted({c.profile.id for c in applicable if c.profile.freshness})}}))

    # Firmware: the highest priority applicable profile that names one decides.
    firmware = next((c.profile for c in applicable if c.profile.firmware is not None), None)
    fw_below = fw_gave_up = False
    if firmware is not None and firmware.firmware is not None and firmware.firmware.version:
        fw = firmware.firmware
        fw_below = below(facts.get("software_version"), fw.version or "")
        fw_digest = value_digest(f"{fw.file_name}|{fw.version}", "firmware")
        fw_gave_up = (failed_all.get("firmware") or {}).get("digest") == fw_digest
        fw_busy = any(t.origin == PROFILE_ORIGIN and t.name == "download" and t.open for t in open_tasks)
        if fw_below and firmware.mode == "enforce" and not fw_busy and not fw_gave_up:
            out.tasks.append(("download", {
                "file_name": fw.file_name, "file_type": fw.file_type or "1 Firmware Upgrade Image",
                "file_size": fw.file_size or 0, "url": fw.url, "version": fw.version, "target_file_name": "",
                "delay_seconds": 0, "profile": {"kind": "firmware", "due": fw_digest, "profiles": [firmware.id]}}))

    # Per profile: where the device stands.
    status: dict[str, dict[str, Any]] = {}
    due_names = {d.name for d in due} | {a.name for a in due_attrs}
    for compiled in applicable:
        pid = compiled.profile.id
        mine = [d for d in eff.values.values() if d.profile_id == pid]
        mine_attrs = [a for a in eff.attributes.values() if a.profile_id == pid]
        mine_objects = [o for o in eff.objects.values() if o.profile_id == pid]
        previous = state.status.get(pid, {})
        entry: dict[str, Any]
        if any(n in drifted and drifted[n].mode == "report" for n in (d.name for d in mine)):
            entry = {"state": "drifted"}
        elif gave_up and any(d.name in due_names for d in mine) | any(a.name in due_names for a in mine_attrs):
            entry = {"state": "failing", "fault": (failed or {}).get("fault")}
        elif objects_gave_up and any(o in due_objects for o in mine_objects):
            entry = {"state": "failing", "fault": (failed_all.get("objects") or {}).get("fault")}
        elif firmware is not None and pid == firmware.id and fw_below and fw_gave_up:
            entry = {"state": "failing", "fault": (failed_all.get("firmware") or {}).get("fault")}
        elif firmware is not None and pid == firmware.id and fw_below:
            entry = {"state": "pending", "firmware": facts.get("software_version")}
        elif any(applied.get(encode_name(d.name)) != d.digest() for d in mine) or \
                any(applied.get("@" + encode_name(a.name)) != a.digest() for a in mine_attrs) or \
                any(applied.get("#" + o.id) != o.digest() for o in mine_objects) or \
                any(u["profile_name"] == compiled.profile.name for u in eff.unresolved):
            entry = {"state": "pending"}
            if unresolved := [u for u in eff.unresolved if u["profile_name"] == compiled.profile.name]:
                entry["unresolved"] = [u["name"] for u in unresolved][:20]
            if waiting := sorted(d.name for d in mine if d.name in unconfirmed):
                # Status 1: the CPE applies them after a reboot; a read has not confirmed them yet.
                entry["unconfirmed"] = waiting[:20]
        else:
            entry = {"state": "compliant"}
        entry["version"] = compiled.profile.version
        entry["at"] = previous.get("at", now) if previous.get("state") == entry["state"] else now
        status[pid] = entry
        for i, action in enumerate(compiled.profile.actions):
            if events.intersection(action.events):
                action_id = f"{pid}:{i}"
                if any(t.policy_id == action_id and t.open for t in open_tasks):
                    continue
                for spec in action.tasks:
                    out.actions.append((action_id, f"{ACTION_ORIGIN_PREFIX}{compiled.profile.name}", spec))
    kept = {**({"values": failed} if gave_up and failed else {}),
            **({"firmware": failed_all["firmware"]} if fw_gave_up else {}),
            **({"objects": failed_all["objects"]} if objects_gave_up else {})}
    # Only what some applicable profile still manages is remembered: the state stays small.
    managed = {encode_name(n) for n in eff.values} | {"@" + encode_name(n) for n in eff.attributes} | \
        {p + o.id for o in eff.objects.values() for p in ("#", "+")} | \
        {FRESH + encode_name(n) for n in eff.freshness}
    applied = {k: v for k, v in applied.items() if k in managed}
    out.state = ProfileState(applied=applied, status=status, failed=kept or None)
    for item in out.drifted:
        out.events.append(DeviceEvent(kind="drift_detected", device_id=str(document.get("_id", "")), details={
            "parameter": item["name"], "profile_id": item["profile_id"], "mode": item["mode"],
            "corrected": item["mode"] == "enforce" and not busy and not gave_up,
            **({} if eff.values[item["name"]].secret else {"value": item["value"], "desired": item["desired"]})}))
    return out


def settle(task: Task, state: ProfileState, now: datetime) -> tuple[ProfileState, DeviceEvent | None]:
    """A profile task ended: remember what the CPE accepted, or that it failed and why."""
    meta = task.args.get("profile") or {}
    profiles = list(meta.get("profiles", []))
    kind = meta.get("kind") if meta.get("kind") in ("firmware", "objects") else "values"
    failed = dict(state.failed or {})
    if meta.get("kind") == "readback":
        return _settle_readback(task, state, now), None
    if meta.get("kind") == "refresh":
        # Read, or refused: either way not asked again before its age is up.
        stamp = str(int(now.timestamp()))
        return ProfileState(applied={**state.applied, **{FRESH + encode_name(n): stamp
                                                         for n in task.args.get("parameter_names", [])}},
                            status=state.status, failed=state.failed), None
    if task.status is TaskStatus.SUCCEEDED:
        failed.pop(kind, None)
        digests = dict(meta.get("digests", {}))
        unconfirmed = kind == "values" and rpcs_status(task) == 1
        if unconfirmed:
            # Applied after a reboot or commit: a read decides (secrets read back empty: taken as is).
            secret = {encode_name(n) for n in meta.get("secret", [])}
            digests = {k: v if k in secret else READBACK + v for k, v in digests.items()}
        applied = {**state.applied, **digests}
        # A firmware is there once the device informs with its version; values are there now.
        status = state.status if kind == "firmware" or unconfirmed else {
            pid: {**s, "state": "compliant", "at": now} if pid in profiles and s.get("state") == "pending" else s
            for pid, s in state.status.items()}
        details: dict[str, Any] = {"task_id": task.id, "profiles": profiles}
        if kind == "firmware":
            details["firmware"] = {"file_name": task.args.get("file_name"), "version": task.args.get("version")}
        elif kind == "objects":
            details["objects"] = task.result.get("objects", [])[:50]
        else:
            details["parameters"] = sorted(v["name"] for v in task.args.get("parameter_values", []))
            if "status" in task.result:
                details["status"] = task.result.get("status")
        return ProfileState(applied=applied, status=status, failed=failed or None), DeviceEvent(
            kind="profile_applied", device_id=task.device_id, details=details)
    if task.status is TaskStatus.FAILED:
        fault = None
        if task.faults:
            last = task.faults[-1]
            fault = {"code": last.code, "string": last.string,
                     "parameter_faults": list(last.parameter_faults)[:20]}
        status = {pid: {**s, "state": "failing", "fault": fault, "at": now} if pid in profiles else s
                  for pid, s in state.status.items()}
        failed[kind] = {"digest": meta.get("due"), "fault": fault, "at": now}
        return ProfileState(applied=state.applied, status=status, failed=failed), DeviceEvent(
            kind="profile_failed", device_id=task.device_id, details={
                "task_id": task.id, "profiles": profiles, "reason": task.reason, "fault": fault})
    return state, None


def rpcs_status(task: Task) -> int:
    try:
        return int(task.result.get("status") or 0)
    except (TypeError, ValueError):
        return 0


def _settle_readback(task: Task, state: ProfileState, now: datetime) -> ProfileState:
    """A read-back after Status 1: confirmed, still the old value (wait for a reboot), or not applied."""
    meta = task.args.get("profile") or {}
    expect: dict[str, list[str]] = meta.get("expect", {})
    applied = dict(state.applied)
    read = {p["name"]: p for p in task.result.get("parameters", [])} if task.status is TaskStatus.SUCCEEDED else {}
    for name, (value, xsd, digest) in expect.items():
        key = encode_name(name)
        if applied.get(key) not in (READBACK + digest, AFTER_BOOT + digest):
            continue  # the desired value moved on meanwhile
        found = read.get(name)
        if found is not None and same_text(str(found.get("value", "")), str(found.get("type", "")), value, xsd):
            applied[key] = digest
        elif found is not None and not meta.get("after_boot"):
            applied[key] = AFTER_BOOT + digest
        else:
            applied.pop(key, None)  # not applied even after a reboot (or unreadable): send it again
    confirmed = {n for n, (_, _, digest) in expect.items() if applied.get(encode_name(n)) == digest}
    status = dict(state.status)
    for pid in meta.get("profiles", []):
        entry = status.get(pid)
        # Pending only for want of this read: compliant now (the next Inform recomputes it anyway).
        if entry and entry.get("state") == "pending" and entry.get("unconfirmed") and \
                set(entry["unconfirmed"]) <= confirmed and not entry.get("unresolved"):
            status[pid] = {k: v for k, v in entry.items() if k != "unconfirmed"} | {"state": "compliant", "at": now}
    return ProfileState(applied=applied, status=status, failed=state.failed)


def redact_task_args(task: Task) -> dict[str, Any]:
    """A profile task's args as the API shows them: secret values never come back."""
    if task.origin != PROFILE_ORIGIN:
        return task.args
    if task.name == "profileObjects":
        def masked(entry: Mapping[str, Any]) -> dict[str, Any]:
            hidden = set(entry.get("secret", []))
            return {**entry, **{part: [[n, REDACTED if n in hidden else v, t] for n, v, t in entry.get(part, [])]
                                for part in ("keys", "values")}}
        return {**task.args, "objects": [masked(o) for o in task.args.get("objects", [])]}
    secret = set(task.args.get("profile", {}).get("secret", []))
    values = [{**v, "value": REDACTED} if v["name"] in secret or is_secret(v["name"]) else v
              for v in task.args.get("parameter_values", [])]
    return {**task.args, "parameter_values": values}
