"""Data-model templates: the shared, read-only part of every simulated device's parameter tree.

A template is loaded once per data model (TR-098 ``InternetGatewayDevice.``, TR-181
``Device.``) from a CSV file under ``simulator/templates/`` and shared by every device of that
model; a device stores only what differs from it (see :mod:`simulator.datamodel`). That is what
lets 10,000 devices with ~500 parameters each fit in one process.

CSV columns: ``name,type,access,value,constraint`` (``#`` starts a comment line).

* ``name``: full path. Objects end with ``.``. A numeric segment is an instance of the table
  named by the previous segment; the segment ``{i}`` declares the table's *prototype*, the
  shape of an instance added by AddObject. At most one ``{i}`` per name: prototypes do not nest.
* ``type``: ``object``, ``table``, or a TR-069 value type without prefix (``string``, ``int``,
  ``unsignedInt``, ``long``, ``unsignedLong``, ``boolean``, ``dateTime``, ``base64``,
  ``hexBinary``).
* ``access``: ``R`` or ``W`` then flags: ``F`` forced Inform parameter (checklist T27), ``A``
  forced active notification (a change by the device itself triggers 4 VALUE CHANGE), ``D``
  denies active notification (SetParameterAttributes answers 9009), ``H`` hidden (reads back
  as an empty string, TR-106 passwords, checklist S7). For a table, ``W`` means AddObject is
  allowed and its instances may be deleted.
* ``value``: the default. ``{name}`` placeholders are resolved per device when read
  (``{serial}``, ``{mac+1}``, ...), so defaults cost nothing per device; ``{i}`` (or ``{i+99}``)
  is the instance number inside a prototype; ``{count:Host}`` counts the instances of the sibling
  table ``Host``. For a table row the value is the number of instances created from the
  prototype at load time.
* ``constraint``: optional ``range:MIN:MAX`` (either bound may be empty), ``enum:a|b|c`` or
  ``len:N``. Values outside it get 9007 from SetParameterValues.
"""

from __future__ import annotations

import copy
import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

__all__ = [
    "TEMPLATE_DIR",
    "Constraint",
    "ObjectSpec",
    "ParamSpec",
    "TableSpec",
    "Template",
    "TemplateError",
    "Token",
    "load_template",
]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

_TYPES = {
    name: f"xsd:{name}"
    for name in ("string", "int", "unsignedInt", "long", "unsignedLong", "boolean", "dateTime",
                 "base64", "hexBinary")
}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)(?::([A-Za-z0-9_]+))?([+-]\d+)?\}")
_PROTO = "{i}"


class TemplateError(ValueError):
    """A template file is malformed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Token:
    """A placeholder in a default value: ``{name}``, ``{name+offset}`` or ``{name:arg}``."""

    name: str
    arg: str = ""
    offset: int = 0


Parts = tuple[str | Token, ...]


def compile_value(text: str) -> Parts | None:
    """Split a default into literals and placeholders; None when it has no placeholder."""
    if "{" not in text:
        return None
    parts: list[str | Token] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > pos:
            parts.append(text[pos : match.start()])
        parts.append(Token(match.group(1), match.group(2) or "", int(match.group(3) or 0)))
        pos = match.end()
    if pos < len(text):
        parts.append(text[pos:])
    return tuple(parts) if any(isinstance(p, Token) for p in parts) else None


@dataclass(frozen=True, slots=True)
class Constraint:
    """What SetParameterValues accepts beyond the type itself."""

    minimum: int | None = None
    maximum: int | None = None
    choices: frozenset[str] | None = None
    max_length: int | None = None

    @classmethod
    def parse(cls, text: str) -> Constraint | None:
        text = text.strip()
        if not text:
            return None
        kind, _, rest = text.partition(":")
        if kind == "range":
            low, _, high = rest.partition(":")
            return cls(minimum=int(low) if low else None, maximum=int(high) if high else None)
        if kind == "enum":
            return cls(choices=frozenset(rest.split("|")))
        if kind == "len":
            return cls(max_length=int(rest))
        raise ValueError(f"unknown constraint {text!r}")


@dataclass(slots=True, eq=False)
class ParamSpec:
    name: str
    type: str  # canonical "xsd:..." as it goes into xsi:type
    writable: bool
    default: str  # raw text, placeholders included
    parts: Parts | None = None  # compiled placeholders; None means `default` is the value
    forced_inform: bool = False
    forced_active: bool = False
    deny_active: bool = False
    hidden: bool = False
    constraint: Constraint | None = None


@dataclass(slots=True, eq=False)
class ObjectSpec:
    """A single object, or one instance of a table. Children keep the file's order."""

    children: dict[str, ParamSpec | ObjectSpec | TableSpec] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class TableSpec:
    """A multi-instance object: the template's instances and the prototype for AddObject."""

    writable: bool = False
    instances: dict[int, ObjectSpec] = field(default_factory=dict)
    prototype: ObjectSpec | None = None
    default_count: int = 0


Node = ParamSpec | ObjectSpec | TableSpec


@dataclass(slots=True, eq=False)
class Template:
    """One loaded data model. Read-only once built: every device of the model shares it."""

    name: str  # "tr098" / "tr181", the file stem
    root_name: str  # "InternetGatewayDevice" / "Device"
    root: ObjectSpec
    forced_inform: tuple[str, ...]  # full names, in file order
    forced_active: frozenset[str]

    @property
    def root_path(self) -> str:
        return self.root_name + "."

    def parameter_count(self) -> int:
        """Parameters of a fresh device (template instances only, prototypes excluded)."""
        return sum(1 for _path, node in self.walk() if isinstance(node, ParamSpec))

    def walk(self) -> Iterator[tuple[str, Node]]:
        """Every node of a fresh device in tree order: ``(path, node)``; objects end in "."."""
        yield from _walk(self.root_path, self.root)


def _walk(path: str, obj: ObjectSpec) -> Iterator[tuple[str, Node]]:
    yield path, obj
    for name, child in obj.children.items():
        if isinstance(child, ParamSpec):
            yield path + name, child
        elif isinstance(child, ObjectSpec):
            yield from _walk(f"{path}{name}.", child)
        else:
            yield f"{path}{name}.", child
            for number in sorted(child.instances):
                yield from _walk(f"{path}{name}.{number}.", child.instances[number])


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def _substitute_i(parts: Parts, number: int) -> tuple[str, Parts | None]:
    """Resolve ``{i}`` tokens at load time for instances materialised from a prototype."""
    out: list[str | Token] = []
    for part in parts:
        if isinstance(part, Token) and part.name == "i":
            out.append(str(number + part.offset))
        else:
            out.append(part)
    # Re-join adjacent literals so that a fully resolved value becomes static again.
    merged: list[str | Token] = []
    for part in out:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + part
        else:
            merged.append(part)
    if all(isinstance(p, str) for p in merged):
        return "".join(merged), None  # type: ignore[arg-type]
    text = "".join(p if isinstance(p, str) else "{" + p.name + "}" for p in merged)
    return text, tuple(merged)


def _materialise(proto: ObjectSpec, number: int) -> ObjectSpec:
    """A concrete instance ``number`` from a prototype: ``{i}`` fixed, all else shared."""
    clone = ObjectSpec()
    for name, child in proto.children.items():
        if isinstance(child, ParamSpec):
            if child.parts is not None and any(isinstance(p, Token) and p.name == "i" for p in child.parts):
                child = copy.copy(child)
                child.default, child.parts = _substitute_i(child.parts or (), number)
            clone.children[name] = child
        elif isinstance(child, ObjectSpec):
            clone.children[name] = _materialise(child, number)
        else:
            table = TableSpec(child.writable, {}, child.prototype, child.default_count)
            table.instances = {n: _materialise(inst, number) for n, inst in child.instances.items()}
            clone.children[name] = table
    return clone


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.root_name: str | None = None
        self.root = ObjectSpec()
        self.forced: list[str] = []
        self.active: set[str] = set()

    def fail(self, line: int, message: str) -> TemplateError:
        return TemplateError(f"{self.source}:{line}: {message}")

    def _table(self, parent: ObjectSpec, name: str, line: int) -> TableSpec:
        node = parent.children.get(name)
        if node is None:
            node = parent.children[name] = TableSpec()
        if not isinstance(node, TableSpec):
            raise self.fail(line, f"{name!r} is used as a table and as something else")
        return node

    def _descend(self, segments: list[str], line: int) -> ObjectSpec | TableSpec:
        """The node for ``segments`` (objects created on the way); the last may be a table."""
        node: ObjectSpec | TableSpec = self.root
        for k, seg in enumerate(segments):
            if isinstance(node, TableSpec):
                if seg == _PROTO:
                    if node.prototype is None:
                        node.prototype = ObjectSpec()
                    node = node.prototype
                elif seg.isdigit() and not seg.startswith("0"):
                    node = node.instances.setdefault(int(seg), ObjectSpec())
                else:
                    raise self.fail(line, f"segment {seg!r} after a table must be an instance number")
                continue
            nxt = segments[k + 1] if k + 1 < len(segments) else None
            if nxt is not None and (nxt == _PROTO or nxt.isdigit()):
                node = self._table(node, seg, line)
                continue
            child = node.children.get(seg)
            if child is None:
                child = node.children[seg] = ObjectSpec()
            if isinstance(child, ParamSpec):
                raise self.fail(line, f"{seg!r} is a parameter, not an object")
            node = child
        return node

    def add(self, line: int, name: str, type_: str, access: str, value: str, constraint: str) -> None:
        if name.count(_PROTO) > 1:
            raise self.fail(line, "prototypes do not nest: at most one {i} per name")
        is_object = name.endswith(".")
        segments = (name[:-1] if is_object else name).split(".")
        if not segments or not all(segments):
            raise self.fail(line, f"malformed name {name!r}")
        if self.root_name is None:
            self.root_name = segments[0]
        elif segments[0] != self.root_name:
            raise self.fail(line, f"{name!r} is not under {self.root_name}.")
        rel = segments[1:]
        if access[:1] not in ("R", "W"):
            raise self.fail(line, f"access must start with R or W, got {access!r}")
        writable = access[0] == "W"
        flags = set(access[1:])
        if flags - set("FADH"):
            raise self.fail(line, f"unknown access flags {''.join(sorted(flags - set('FADH')))!r}")

        if type_ in ("object", "table"):
            if not is_object:
                raise self.fail(line, f"{type_} names end with '.'")
            if type_ == "table":
                parent = self._descend(rel[:-1], line) if rel else self.root
                if not isinstance(parent, ObjectSpec):
                    raise self.fail(line, "a table cannot sit directly in a table")
                table = self._table(parent, rel[-1], line)
                table.writable = writable
                table.default_count = int(value) if value.strip() else 0
            else:
                self._descend(rel, line)
            return
        if is_object:
            raise self.fail(line, f"parameter {name!r} ends with '.'")
        xsd = _TYPES.get(type_)
        if xsd is None:
            raise self.fail(line, f"unknown type {type_!r}")
        parent = self._descend(rel[:-1], line)
        if not isinstance(parent, ObjectSpec):
            raise self.fail(line, f"parameter {name!r} directly in a table")
        if rel[-1] in parent.children:
            raise self.fail(line, f"duplicate name {name!r}")
        try:
            parsed_constraint = Constraint.parse(constraint)
        except ValueError as exc:
            raise self.fail(line, str(exc)) from None
        parent.children[rel[-1]] = ParamSpec(
            name=rel[-1], type=xsd, writable=writable, default=value, parts=compile_value(value),
            forced_inform="F" in flags, forced_active="A" in flags, deny_active="D" in flags,
            hidden="H" in flags, constraint=parsed_constraint,
        )
        if "F" in flags:
            if _PROTO in name:
                raise self.fail(line, "a forced Inform parameter cannot be in a prototype")
            self.forced.append(name)
        if "A" in flags and _PROTO not in name:
            self.active.add(name)

    def finish(self, name: str) -> Template:
        if self.root_name is None:
            raise TemplateError(f"{self.source}: no parameters")
        _expand_tables(self.root, self.source)
        return Template(name, self.root_name, self.root, tuple(self.forced), frozenset(self.active))


def _expand_tables(obj: ObjectSpec, source: str) -> None:
    """Create the default instances of every table from its prototype (depth first)."""
    for child in obj.children.values():
        if isinstance(child, ObjectSpec):
            _expand_tables(child, source)
        elif isinstance(child, TableSpec):
            if child.prototype is not None:
                _expand_tables(child.prototype, source)
            for number in range(1, child.default_count + 1):
                if number not in child.instances:
                    if child.prototype is None:
                        raise TemplateError(f"{source}: a table with a default count needs a {{i}} prototype")
                    child.instances[number] = _materialise(child.prototype, number)
            for instance in child.instances.values():
                _expand_tables(instance, source)


def parse_template(text: str, name: str, source: str = "<template>") -> Template:
    builder = _Builder(source)
    rows = csv.reader(text.splitlines())
    for line, row in enumerate(rows, start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 3 or len(row) > 5:
            raise builder.fail(line, f"expected 3 to 5 columns, got {len(row)}")
        cells = [*row, "", ""][:5]
        builder.add(line, cells[0].strip(), cells[1].strip(), cells[2].strip(), cells[3], cells[4])
    return builder.finish(name)


BULK_PER_ENTRY = 20


@cache
def load_big_template(name: str, parameters: int) -> Template:
    """Template ``name`` grown to at least ``parameters`` parameters (``--parameters N``).

    The extra ones sit in a vendor table, ``<root>X_SIM_Bulk.Entry.{i}.`` with 20 read-only
    parameters per entry, as a gateway's Wi-Fi and host tables grow: one object per 20 names.
    """
    base = load_template(name)
    missing = parameters - base.parameter_count()
    if missing <= 0:
        return base
    entries = -(-missing // BULK_PER_ENTRY)
    root = base.root_path
    rows = [f"{root}X_SIM_Bulk.,object,R,,", f"{root}X_SIM_Bulk.EntryNumberOfEntries,unsignedInt,R,{entries},",
            f"{root}X_SIM_Bulk.Entry.,table,R,{entries},"]
    rows += [f"{root}X_SIM_Bulk.Entry.{{i}}.Param{k},string,R,value-{{i}}-{k}," for k in range(1, BULK_PER_ENTRY + 1)]
    path = TEMPLATE_DIR / f"{name}.csv"
    text = path.read_text(encoding="utf-8") + "\n" + "\n".join(rows) + "\n"
    return parse_template(text, name, f"{path} + {entries} bulk entries")


@cache
def load_template(name: str) -> Template:
    """The template ``simulator/templates/<name>.csv`` (cached: loaded once per process)."""
    path = TEMPLATE_DIR / f"{name}.csv"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in TEMPLATE_DIR.glob("*.csv")))
        raise TemplateError(f"no template {name!r} (available: {available})")
    return parse_template(path.read_text(encoding="utf-8"), name, str(path))
