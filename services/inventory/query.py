"""The device query language: a small JSON filter compiled to a MongoDB filter, and its companions
(projection, sort, cursor). Pure; docs/inventory.md is the user's reference.

A query is a JSON object. Each key is a top-level device field (``FIELDS``), a full parameter
name (``Device.DeviceInfo.SoftwareVersion``), or ``$and``/``$or`` with a list of queries. A value
is a scalar (equality) or an object of operators from a fixed whitelist. Nothing from the request
ever reaches MongoDB as a key or operator without passing through this whitelist: field names are
mapped to fixed paths or encoded parameter paths, operands are checked scalars, and anything else
is a ``QueryError`` whose message says what is wrong and where.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from services.common import redaction
from services.inventory.params import encode_name, normalise_type, stored_value

Kind = Literal["string", "date", "int"]

MAX_QUERY_CHARS = 8192
MAX_DEPTH = 4
MAX_CONDITIONS = 100
MAX_LIST = 1000
MAX_STRING = 1024
MAX_FIELDS = 200


class QueryError(ValueError):
    """The request's query, fields, sort or cursor is invalid; the message is for the client."""


@dataclass(frozen=True)
class Field:
    path: str
    kind: Kind


# The top-level fields of a device, as the API names them, with their stored path and type.
FIELDS: dict[str, Field] = {
    "id": Field("_id", "string"),
    "oui": Field("oui", "string"),
    "product_class": Field("product_class", "string"),
    "serial_number": Field("serial_number", "string"),
    "manufacturer": Field("manufacturer", "string"),
    "software_version": Field("software_version", "string"),
    "tags": Field("tags", "string"),
    "first_seen": Field("first_seen", "date"),
    "last_inform": Field("last_inform", "date"),
    "last_boot": Field("last_boot", "date"),
    "last_bootstrap": Field("last_bootstrap", "date"),
    "silent_since": Field("silent_since", "date"),
    "inform_interval": Field("inform_interval", "int"),
    "connection_request_url": Field("connection_request_url", "string"),
    "remote_address": Field("remote_address", "string"),
    # Names set with SetParameterValues Status 1, waiting for the device's next boot (absent: none).
    "reboot_pending": Field("reboot_pending", "string"),
}
# Sortable fields are always present on a device (cursor comparisons need a value) and indexed
# together with _id (store.INDEXES), so a sorted page is an index walk.
SORTABLE = ("id", "serial_number", "software_version", "last_inform", "first_seen")

COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
OPERATORS = (*COMPARISONS, "$in", "$nin", "$exists", "$prefix")
# The data model roots; a parameter name under neither is relative ("DeviceInfo.SoftwareVersion")
# and means that name under whichever root the device has.
ROOTS = ("Device.", "InternetGatewayDevice.")
# Operators a device without the parameter satisfies: over a relative name they must hold under
# both roots (the device has only one, the other is absent), the others under either.
NEGATIVE = ("$ne", "$nin")
LOGICAL = ("$and", "$or")
# A TR-069 parameter name (letters, digits, "_" and "-" per TR-106) with at least one dot;
# a trailing dot names an object, which only $exists can test.
PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)+\.?")

Scalar = str | int | float | bool | datetime


# --- filter -------------------------------------------------------------------------------------------


def parse_query(text: str | None) -> dict[str, Any]:
    """The MongoDB filter for the ``q`` parameter (absent or empty: every device)."""
    if text is None or not text.strip():
        return {}
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"q: longer than {MAX_QUERY_CHARS} characters")
    return compile_query(loads(text, "q"))


def loads(text: str, where: str) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys (which would silently drop a condition)."""

    def no_constants(name: str) -> Any:
        raise QueryError(f"{where}: {name} is not allowed in JSON")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise QueryError(f"{where}: key {key!r} appears twice in one object")
            result[key] = value
        return result

    try:
        return json.loads(text, parse_constant=no_constants, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise QueryError(f"{where}: not valid JSON ({exc.msg} at character {exc.pos})") from None
    except RecursionError:
        raise QueryError(f"{where}: nested too deeply") from None


def compile_query(query: Any) -> dict[str, Any]:
    return _Compiler().compile(query)


class _Compiler:
    def __init__(self) -> None:
        self.conditions = 0

    def compile(self, query: Any) -> dict[str, Any]:
        return _all_of(self._object(query, "q", 0))

    def _object(self, query: Any, where: str, depth: int) -> list[dict[str, Any]]:
        if not isinstance(query, dict):
            raise QueryError(f"{where}: expected a JSON object of conditions, got {_json_type(query)}")
        clauses: list[dict[str, Any]] = []
        for key, value in query.items():
            if key in LOGICAL:
                clauses.append(self._logical(key, value, f"{where}.{key}", depth))
            elif key.startswith("$"):
                raise QueryError(f"{where}: unknown operator {key!r} in place of a field; "
                                 f"only $and and $or combine conditions")
            else:
                clauses.extend(self._field(key, value, f"{where}.{key}"))
        return clauses

    def _logical(self, key: str, value: Any, where: str, depth: int) -> dict[str, Any]:
        if depth + 1 > MAX_DEPTH:
            raise QueryError(f"{where}: $and/$or nested more than {MAX_DEPTH} deep")
        if not isinstance(value, list) or not value:
            raise QueryError(f"{where}: expected a non-empty list of queries")
        if len(value) > MAX_CONDITIONS:
            raise QueryError(f"{where}: more than {MAX_CONDITIONS} queries")
        return {key: [_all_of(self._object(item, f"{where}[{i}]", depth + 1))
                      for i, item in enumerate(value)]}

    def _field(self, key: str, value: Any, where: str) -> list[dict[str, Any]]:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise QueryError(f"q: more than {MAX_CONDITIONS} conditions")
        targets = _targets(key, where)
        if isinstance(value, dict):
            if not value:
                raise QueryError(f"{where}: empty operator object")
            operators = value
        elif isinstance(value, list):
            raise QueryError(f"{where}: a list is not a value; use {{\"$in\": [...]}} to match any of them")
        else:
            operators = {"$eq": value}
        if targets[0].kind == "parameter" and redaction.is_secret(key) and set(operators) - {"$exists"}:
            # Comparing a secret's value would tell a reader whether a guess is right.
            raise QueryError(f"{where}: {key} is a secret parameter; it can only be tested with $exists")
        if len(targets) == 1:
            return [targets[0].clause(op, operand, f"{where}.{op}") for op, operand in operators.items()]
        clauses: list[dict[str, Any]] = []
        for op, operand in operators.items():
            negative = op in NEGATIVE or (op == "$exists" and operand is False)
            clauses.append({"$and" if negative else "$or": [t.clause(op, operand, f"{where}.{op}")
                                                            for t in targets]})
        return clauses


@dataclass(frozen=True)
class _Target:
    """Where a condition applies: a top-level field, or the value of one parameter."""

    path: str
    kind: Kind | Literal["parameter", "object"]
    exists_path: str

    def clause(self, op: str, operand: Any, where: str) -> dict[str, Any]:
        if op not in OPERATORS:
            hint = "; operators must be the keys of an object, not a field name" if not op.startswith("$") \
                else ""
            raise QueryError(f"{where}: unknown operator {op!r}; allowed: {', '.join(OPERATORS)}{hint}")
        if op == "$exists":
            if not isinstance(operand, bool):
                raise QueryError(f"{where}: expected true or false")
            return {self.exists_path: {"$exists": operand}}
        if self.kind == "object":
            raise QueryError(f"{where}: an object name (ending in '.') can only be tested with $exists")
        if op == "$prefix":
            if self.kind not in ("string", "parameter"):
                raise QueryError(f"{where}: $prefix applies to text, not to a {self.kind} field")
            return {self.path: _prefix_range(_string(operand, where))}
        if op in ("$in", "$nin"):
            if not isinstance(operand, list) or not operand:
                raise QueryError(f"{where}: expected a non-empty list")
            if len(operand) > MAX_LIST:
                raise QueryError(f"{where}: more than {MAX_LIST} values")
            values = [self.operand(item, f"{where}[{i}]") for i, item in enumerate(operand)]
            return {self.path: {op: _unique(v for value in values for v in self.loose(value))}}
        value = self.operand(operand, where)
        if op in ("$eq", "$ne"):
            alternatives = self.loose(value)
            if len(alternatives) == 1:
                return {self.path: {op: value}}
            return {self.path: {"$in" if op == "$eq" else "$nin": alternatives}}
        if isinstance(value, bool):
            raise QueryError(f"{where}: {op} compares numbers, text or dates, not booleans")
        return {self.path: {op: value}}

    def operand(self, value: Any, where: str) -> Scalar:
        if self.kind == "string":
            return _string(value, where)
        if self.kind == "date":
            return _date(value, where)
        if self.kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise QueryError(f"{where}: expected an integer")
            return value
        if isinstance(value, str):
            return _string(value, where)
        if isinstance(value, bool | int):
            return value
        if isinstance(value, float) and math.isfinite(value):
            return value
        raise QueryError(f"{where}: expected a string, number or boolean, got {_json_type(value)}")

    def loose(self, value: Scalar) -> list[Scalar]:
        """Equality on a parameter matches the value whether the CPE typed it or sent it as text.

        Values are stored typed by their xsi type (params.py), but a CPE that omits xsi:type gets
        them stored as text; "5" and 5, true and "true"/"1", are the same value to an operator.
        """
        if self.kind != "parameter":
            return [value]
        if isinstance(value, bool):
            return [value, "true" if value else "false", "1" if value else "0"]
        if isinstance(value, int):
            return [value, str(value)]
        if isinstance(value, str):
            if re.fullmatch(r"-?[0-9]{1,18}", value):
                return [value, int(value)]
            if value.lower() in ("true", "false"):
                return [value, value.lower() == "true"]
        return [value]


def _targets(key: str, where: str) -> list[_Target]:
    """The one target of a field or full parameter name; both roots' for a relative name."""
    if key in FIELDS:
        field = FIELDS[key]
        return [_Target(field.path, field.kind, field.path)]
    if len(key) <= MAX_STRING and PARAMETER.fullmatch(key):
        names = [key] if key.startswith(ROOTS) else [root + key for root in ROOTS]
        return [_parameter_target(name) for name in names]
    raise QueryError(f"{where}: unknown field {key!r}; use a device field ({', '.join(FIELDS)}), "
                     f"a full parameter name such as Device.DeviceInfo.SoftwareVersion, or one "
                     f"relative to the data model root (DeviceInfo.SoftwareVersion)")


def _parameter_target(name: str) -> _Target:
    path = f"params.{encode_name(name)}"
    if name.endswith("."):
        return _Target(path, "object", path)
    return _Target(f"{path}.v", "parameter", path)


def _all_of(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    if not clauses:
        return {}
    if len(clauses) == 1:
        return clauses[0]
    return {"$and": clauses}


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise QueryError(f"{where}: expected a string, got {_json_type(value)}")
    if len(value) > MAX_STRING:
        raise QueryError(f"{where}: string longer than {MAX_STRING} characters")
    return value


def _date(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise QueryError(f"{where}: expected an ISO 8601 date-time string, got {_json_type(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise QueryError(f"{where}: {value!r} is not an ISO 8601 date-time "
                         f"(e.g. 2025-01-31T12:00:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _prefix_range(prefix: str) -> dict[str, Any]:
    """Strings starting with ``prefix`` as an index range (no regex: exact, and no escaping)."""
    upper = _successor(prefix)
    if not prefix:
        return {"$type": "string"}
    if upper is None:
        return {"$gte": prefix, "$type": "string"}
    return {"$gte": prefix, "$lt": upper}


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (code point order,
    which is MongoDB's binary UTF-8 order); None when there is none."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000  # Surrogates cannot be encoded in UTF-8; skip them.
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def _unique(values: Any) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if not any(type(value) is type(other) and value == other for other in seen):
            seen.append(value)
    return seen


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# --- projection -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """Which parts of a device to return. ``id`` is always returned."""

    fields: tuple[str, ...]
    names: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    all_parameters: bool = False

    def mongo(self, *extra_paths: str) -> dict[str, Any]:
        projection: dict[str, Any] = {"_id": 1}
        projection.update({FIELDS[name].path: 1 for name in self.fields})
        projection.update({path: 1 for path in extra_paths if not path.startswith("params")})
        if self.all_parameters:
            projection["params"] = 1
        elif self.prefixes:
            # A subtree cannot be named in a plain projection (params is a flat map), so the
            # server filters the map's keys; exact names join the same filter to avoid a clash.
            keys = [encode_name(name) for name in self.names]
            tests: list[dict[str, Any]] = [
                {"$eq": [{"$indexOfBytes": ["$$p.k", {"$literal": encode_name(prefix)}]}, 0]}
                for prefix in self.prefixes]
            if keys:
                tests.append({"$in": ["$$p.k", {"$literal": keys}]})
            projection["params"] = {"$arrayToObject": {"$filter": {
                "input": {"$objectToArray": {"$ifNull": ["$params", {}]}},
                "as": "p", "cond": {"$or": tests}}}}
        else:
            projection.update({f"params.{encode_name(name)}": 1 for name in self.names})
        return projection


SUMMARY = Projection(fields=tuple(name for name in FIELDS if name != "id"))
FULL = Projection(fields=SUMMARY.fields, all_parameters=True)


def parse_fields(text: str | None, default: Projection) -> Projection:
    """``fields``: comma-separated device fields, parameter names, subtrees ("X.Y.") or
    ``parameters`` for the whole tree."""
    if text is None or not text.strip():
        return default
    items = [item.strip() for item in text.split(",") if item.strip()]
    if len(items) > MAX_FIELDS:
        raise QueryError(f"fields: more than {MAX_FIELDS} entries")
    fields: list[str] = []
    names: list[str] = []
    prefixes: list[str] = []
    all_parameters = False
    for item in items:
        if item in FIELDS:
            if item != "id":
                fields.append(item)
        elif item == "parameters":
            all_parameters = True
        elif len(item) <= MAX_STRING and PARAMETER.fullmatch(item):
            (prefixes if item.endswith(".") else names).append(item)
        else:
            raise QueryError(f"fields: {item!r} is neither a device field ({', '.join(FIELDS)}), "
                             f"'parameters', nor a parameter name")
    return Projection(tuple(dict.fromkeys(fields)), tuple(dict.fromkeys(names)),
                      tuple(dict.fromkeys(prefixes)), all_parameters)


# --- sort and cursor ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sort:
    field: str
    descending: bool = False

    @property
    def path(self) -> str:
        return FIELDS[self.field].path

    @property
    def spec(self) -> str:
        return ("-" if self.descending else "") + self.field

    def mongo(self) -> list[tuple[str, int]]:
        direction = -1 if self.descending else 1
        if self.path == "_id":
            return [("_id", direction)]
        return [(self.path, direction), ("_id", direction)]


def parse_sort(text: str | None) -> Sort:
    """``sort``: one sortable field, ``-`` in front for descending; default ``id``."""
    if text is None or not text.strip():
        return Sort("id")
    text = text.strip()
    descending = text.startswith("-")
    name = text.lstrip("+-")
    if name not in SORTABLE:
        raise QueryError(f"sort: {name!r} is not sortable; use one of {', '.join(SORTABLE)} "
                         f"(prefix with '-' for descending)")
    return Sort(name, descending)


def encode_cursor(sort: Sort, document: dict[str, Any]) -> str:
    """An opaque token for the page after ``document`` (the last one returned)."""
    value = document.get(sort.path)
    if isinstance(value, datetime):
        value = {"d": (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()}
    payload = json.dumps({"s": sort.spec, "v": value, "i": document["_id"]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def cursor_filter(sort: Sort, cursor: str | None) -> dict[str, Any]:
    """The filter selecting what comes after the cursor's document in ``sort`` order."""
    if cursor is None or not cursor:
        return {}
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError):
        raise QueryError("cursor: not a cursor returned by this API") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("i"), str):
        raise QueryError("cursor: not a cursor returned by this API")
    if payload.get("s") != sort.spec:
        raise QueryError(f"cursor: it was made for sort={payload.get('s')!r}; "
                         f"repeat that sort or start again without a cursor")
    after = "$lt" if sort.descending else "$gt"
    last_id = payload["i"]
    if sort.path == "_id":
        return {"_id": {after: last_id}}
    value = _cursor_value(payload.get("v"), FIELDS[sort.field].kind)
    return {"$or": [{sort.path: {after: value}}, {sort.path: {"$eq": value}, "_id": {after: last_id}}]}


def _cursor_value(value: Any, kind: Kind) -> Scalar:
    # The cursor comes back from the client: check it as strictly as a query operand.
    if kind == "date" and isinstance(value, dict) and isinstance(value.get("d"), str):
        try:
            return datetime.fromisoformat(value["d"])
        except ValueError:
            pass
    elif kind == "string" and isinstance(value, str):
        return value
    raise QueryError("cursor: not a cursor returned by this API")


# --- the same filter, evaluated in memory ---------------------------------------------------------
#
# Profile selectors and policies are decided at Inform time, without asking the inventory. They are
# compiled by the very compiler above, and the compiled filter is evaluated here with MongoDB's own
# rules for the few operators the compiler emits, so that one query means the same thing in the
# inventory's database and in the orchestrator's memory: equality and order only within one type
# (numbers with numbers, text with text by code point, dates with dates; a boolean is not a
# number), a list field (tags) matching when any of its entries does, a missing field satisfying
# only $ne, $nin and $exists: false.

_MISSING = object()
MISSING = _MISSING


def device_document(fields: Mapping[str, Any], parameters: Iterable[tuple[str, str, str]] = ()) -> dict[str, Any]:
    """A device shaped as the inventory stores it, for :func:`matches`: ``fields`` by their API names
    (absent or None: not there), ``parameters`` as (name, value text, xsi type), typed as stored."""
    document: dict[str, Any] = {FIELDS[k].path: v for k, v in fields.items() if k in FIELDS and v is not None}
    document["params"] = {encode_name(name): {"v": stored_value(value, normalise_type(xsi_type))}
                          for name, value, xsi_type in parameters}
    return document


def matches(query_filter: Mapping[str, Any], document: Mapping[str, Any]) -> bool:
    """Whether ``document`` (see :func:`device_document`) satisfies a filter made by :func:`compile_query`."""
    return matcher(query_filter)(document)


Test = Callable[[Mapping[str, Any]], bool]


def matcher(query_filter: Mapping[str, Any]) -> Test:
    """``query_filter`` turned into a function of a document, once (profiles are matched on every
    Inform: interpreting the filter each time would cost several times more)."""
    tests: list[Test] = []
    for key, condition in query_filter.items():
        if key in ("$and", "$or"):
            subs = [matcher(sub) for sub in condition]
            if key == "$and":
                tests.append(lambda d, subs=subs: all(t(d) for t in subs))
            else:
                tests.append(lambda d, subs=subs: any(t(d) for t in subs))
        else:
            parts = tuple(key.split("."))  # encoded parameter names hold no "."
            test = _condition_test(condition)
            tests.append(lambda d, parts=parts, test=test: test(_lookup(d, parts)))
    if not tests:
        return lambda d: True
    if len(tests) == 1:
        return tests[0]
    return lambda d: all(t(d) for t in tests)


def lookup(document: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    """The value at a compiled filter's path (split on "."), or MISSING."""
    return _lookup(document, parts)


def value_key(value: Any) -> tuple[str, Any]:
    """What equality compares, hashable: MongoDB's type bracket and the value."""
    return _key(value)


def _lookup(document: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    value: Any = document
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _condition_test(condition: Any) -> Callable[[Any], bool]:
    if not isinstance(condition, Mapping) or not all(isinstance(k, str) and k.startswith("$") for k in condition):
        return _one_of({_key(condition)})
    tests = [_operator_test(op, operand) for op, operand in condition.items()]
    if len(tests) == 1:
        return tests[0]
    return lambda value: all(t(value) for t in tests)


def _key(value: Any) -> tuple[str, Any]:
    return _bracket(value), _aware(value)


def _one_of(wanted: set[tuple[str, Any]]) -> Callable[[Any], bool]:
    def test(value: Any) -> bool:
        if value is _MISSING:
            return False
        if isinstance(value, list):
            return any(_key(item) in wanted for item in value)
        return _key(value) in wanted
    return test


def _operator_test(op: str, operand: Any) -> Callable[[Any], bool]:
    if op == "$exists":
        present = bool(operand)
        return lambda value: (value is not _MISSING) == present
    if op in ("$eq", "$ne"):
        found = _one_of({_key(operand)})
        return found if op == "$eq" else (lambda value: not found(value))
    if op in ("$in", "$nin"):
        found = _one_of({_key(o) for o in operand})
        return found if op == "$in" else (lambda value: not found(value))
    if op == "$type":
        return lambda value: operand == "string" and _any_of(value, lambda v: isinstance(v, str))
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return lambda value: _any_of(value, lambda v: _ordered(op, v, operand))
    raise QueryError(f"cannot evaluate operator {op!r}")


def _any_of(value: Any, test: Any) -> bool:
    if value is _MISSING:
        return False
    if isinstance(value, list):
        return any(test(item) for item in value) or test(value)
    return bool(test(value))


def _bracket(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "date"
    return type(value).__name__


def _aware(value: Any) -> Any:
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value


def _ordered(op: str, a: Any, b: Any) -> bool:
    if _bracket(a) != _bracket(b) or _bracket(a) not in ("number", "string", "date"):
        return False
    a, b = _aware(a), _aware(b)
    match op:
        case "$gt":
            return bool(a > b)
        case "$gte":
            return bool(a >= b)
        case "$lt":
            return bool(a < b)
    return bool(a <= b)
