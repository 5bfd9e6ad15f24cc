"""One device's parameter tree: the shared template plus this device's copy-on-write overlay.

The overlay holds only what differs from the template: values set by the ACS or by the device
itself, instances added and deleted, and non-default attributes. A fresh device costs a few
empty dicts, whatever the size of its data model; reads of untouched parameters render the
template default (placeholders such as ``{serial}`` are resolved through :class:`Context`).

The RPC semantics follow TR-069 Annex A as summarised in the checklist (R8-R14):

* GetParameterNames: ``""`` means the root; NextLevel=true gives only the immediate children
  (for ``""`` only the root object), NextLevel=false the path itself and its whole subtree;
  objects end in "."; an invalid path is 9005; NextLevel=true on a parameter is 9003.
  ``Writable`` on a table means AddObject is allowed, on an instance that DeleteObject is.
* GetParameterValues: full names and partial paths, any invalid name faults the whole call
  with 9005. Hidden parameters (passwords) read back as "".
* SetParameterValues is atomic: every entry is checked first (9005 unknown, 9008 read-only,
  9006 wrong xsi:type, 9007 bad value) and nothing is applied unless all pass; the fault is
  9003 with one SetParameterValuesFault per bad entry. ParameterKey changes only on success.
* AddObject / DeleteObject update ParameterKey too; instance numbers are never reused.

Every failure is raised as :class:`cwmp.faults.CwmpFault`, ready to be sent back as is.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from cwmp.faults import CpeFault, CwmpFault, SetParameterValuesFault
from cwmp.models import (
    ParameterAttributeStruct,
    ParameterInfoStruct,
    ParameterValueStruct,
    SetParameterAttributesStruct,
)
from cwmp.values import ParameterValue, canonical_type, parse_boolean, parse_datetime

from .template import Node, ObjectSpec, ParamSpec, TableSpec, Template, Token

__all__ = ["MAX_INSTANCES", "Context", "DataModel", "Resolved", "check_value"]

MAX_INSTANCES = 64  # per table; AddObject beyond it is 9004, as a real CPE's limited tables
_INT_RANGES = {
    "xsd:int": (-(2**31), 2**31 - 1),
    "xsd:unsignedInt": (0, 2**32 - 1),
    "xsd:long": (-(2**63), 2**63 - 1),
    "xsd:unsignedLong": (0, 2**64 - 1),
}
_ALLOWED_ACCESS = frozenset({"Subscriber"})
_NOTHING: frozenset[str] = frozenset()


class Context(Protocol):
    """Resolves ``{name}`` placeholders of template defaults for one device."""

    def placeholder(self, name: str, offset: int, instance: int | None) -> str: ...


@dataclass(slots=True)
class Resolved:
    """A path resolved against the template and the overlay."""

    path: str
    node: Node
    instance: int | None  # number of the nearest instance made by AddObject (for "{i}")
    writable: bool
    parent_path: str  # the containing object's path, for "{count:Table}"
    parent: ObjectSpec | None


def _fault(code: CpeFault, detail: str) -> CwmpFault:
    info = CwmpFault.from_code(code)
    return CwmpFault.from_code(code, f"{info.string}: {detail}")


def check_value(spec: ParamSpec, text: str) -> str | None:
    """The value to store for ``text`` under ``spec``'s type and constraint, or None (9007)."""
    kind = spec.type
    constraint = spec.constraint
    if kind in _INT_RANGES:
        stripped = text.strip()
        try:
            number = int(stripped)
        except ValueError:
            return None
        low, high = _INT_RANGES[kind]
        if not low <= number <= high:
            return None
        if constraint is not None:
            if constraint.minimum is not None and number < constraint.minimum:
                return None
            if constraint.maximum is not None and number > constraint.maximum:
                return None
        return str(number)
    if kind == "xsd:boolean":
        parsed = parse_boolean(text)
        return None if parsed is None else ("true" if parsed else "false")
    if kind == "xsd:dateTime":
        stripped = text.strip()
        if stripped.startswith("0001-01-01") or parse_datetime(stripped) is not None:
            return stripped
        return None
    if kind == "xsd:base64":
        try:
            base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None
        return text
    if kind == "xsd:hexBinary":
        try:
            bytes.fromhex(text)
        except ValueError:
            return None
        return text
    if constraint is not None:
        if constraint.choices is not None and text not in constraint.choices:
            return None
        if constraint.max_length is not None and len(text) > constraint.max_length:
            return None
    return text


class DataModel:
    """The parameter tree of one device. Not thread-safe; one asyncio loop owns it."""

    __slots__ = ("_added", "_deleted", "_last_instance", "access_lists", "ctx", "notification",
                 "overrides", "template")

    def __init__(self, template: Template, ctx: Context) -> None:
        self.template = template
        self.ctx = ctx
        self.overrides: dict[str, str] = {}
        self.notification: dict[str, int] = {}  # only values that differ from the default
        self.access_lists: dict[str, tuple[str, ...]] = {}
        self._added: dict[str, list[int]] = {}  # table path -> instance numbers added
        # Instance paths ("...Host.2.") removed from the template. Immutable and shared while
        # empty: an empty set costs 216 bytes, times every device of the fleet.
        self._deleted: frozenset[str] = _NOTHING
        self._last_instance: dict[str, int] = {}  # table path -> highest number ever used

    # -- overlay lifecycle ----------------------------------------------------------------

    def reset(self) -> None:
        """Factory reset: forget every per-device change."""
        self.overrides.clear()
        self.notification.clear()
        self.access_lists.clear()
        self._added.clear()
        self._deleted = _NOTHING
        self._last_instance.clear()

    def overlay_size(self) -> int:
        """Entries this device stores on top of the template (for memory accounting)."""
        return (len(self.overrides) + len(self.notification) + len(self.access_lists)
                + sum(len(v) for v in self._added.values()) + len(self._deleted))

    @property
    def root_path(self) -> str:
        return self.template.root_path

    # -- resolution -----------------------------------------------------------------------

    def _instance_numbers(self, table_path: str, table: TableSpec) -> list[int]:
        numbers = [n for n in table.instances if not self._deleted or f"{table_path}{n}." not in self._deleted]
        added = self._added.get(table_path)
        if added:
            numbers.extend(added)
        numbers.sort()
        return numbers

    def _instance(self, table_path: str, table: TableSpec, number: int) -> tuple[ObjectSpec, bool] | None:
        """``(spec, from_prototype)`` of an existing instance, or None."""
        spec = table.instances.get(number)
        if spec is not None:
            if self._deleted and f"{table_path}{number}." in self._deleted:
                return None
            return spec, False
        added = self._added.get(table_path)
        if added and number in added and table.prototype is not None:
            return table.prototype, True
        return None

    def resolve(self, path: str) -> Resolved | None:
        """Resolve a full parameter name or an object path (ending in "."); None if invalid."""
        is_object = path.endswith(".")
        segments = (path[:-1] if is_object else path).split(".")
        root = self.template
        if not segments or segments[0] != root.root_name:
            return None
        node: Node = root.root
        parent: ObjectSpec | None = None
        parent_path = ""
        current = root.root_path
        instance: int | None = None
        writable = False
        for seg in segments[1:]:
            if isinstance(node, ObjectSpec):
                child = node.children.get(seg)
                if child is None:
                    return None
                parent, parent_path = node, current
                node = child
                if isinstance(child, ParamSpec):
                    current += seg
                    writable = child.writable
                else:
                    current += seg + "."
                    writable = isinstance(child, TableSpec) and child.writable
            elif isinstance(node, TableSpec):
                if not seg.isdigit() or seg[0] == "0":
                    return None
                number = int(seg)
                found = self._instance(current, node, number)
                if found is None:
                    return None
                writable = node.writable
                parent, parent_path = None, current
                node, from_proto = found
                if from_proto:
                    instance = number
                current += seg + "."
            else:
                return None  # something after a parameter name
        if isinstance(node, ParamSpec) == is_object:
            return None  # "X.Param." or "X.Object" without its dot
        return Resolved(current, node, instance, writable, parent_path, parent)

    def _walk(self, path: str, node: ObjectSpec | TableSpec, instance: int | None,
              writable: bool) -> Iterator[tuple[str, Node, int | None, bool, str, ObjectSpec | None]]:
        """Subtree in tree order, ``node`` included: (path, node, instance, writable, parent path, parent)."""
        yield path, node, instance, writable, "", None
        if isinstance(node, TableSpec):
            for number in self._instance_numbers(path, node):
                found = self._instance(path, node, number)
                assert found is not None
                spec, from_proto = found
                yield from self._walk(f"{path}{number}.", spec, number if from_proto else instance,
                                      node.writable)
            return
        for name, child in node.children.items():
            if isinstance(child, ParamSpec):
                yield path + name, child, instance, child.writable, path, node
            elif isinstance(child, ObjectSpec):
                yield from self._walk(f"{path}{name}.", child, instance, False)
            else:
                yield from self._walk(f"{path}{name}.", child, instance, child.writable)

    def _params_under(self, resolved: Resolved) -> Iterator[tuple[str, ParamSpec, int | None, str, ObjectSpec | None]]:
        node = resolved.node
        if isinstance(node, ParamSpec):
            yield resolved.path, node, resolved.instance, resolved.parent_path, resolved.parent
            return
        for path, child, instance, _w, parent_path, parent in self._walk(
                resolved.path, node, resolved.instance, resolved.writable):
            if isinstance(child, ParamSpec):
                yield path, child, instance, parent_path, parent

    def _resolve_or_9005(self, name: str) -> Resolved:
        if name == "":
            root = self.template
            return Resolved(root.root_path, root.root, None, False, "", None)
        resolved = self.resolve(name)
        if resolved is None:
            raise _fault(CpeFault.INVALID_PARAMETER_NAME, name)
        return resolved

    # -- values ---------------------------------------------------------------------------

    def _render(self, spec: ParamSpec, instance: int | None, parent_path: str,
                parent: ObjectSpec | None) -> str:
        if spec.parts is None:
            return spec.default
        out: list[str] = []
        for part in spec.parts:
            if isinstance(part, str):
                out.append(part)
            elif part.name == "i":
                out.append(str((instance or 0) + part.offset))
            elif part.name == "count":
                out.append(str(self._count(part, parent_path, parent)))
            else:
                out.append(self.ctx.placeholder(part.name, part.offset, instance))
        return "".join(out)

    def _count(self, token: Token, parent_path: str, parent: ObjectSpec | None) -> int:
        table = parent.children.get(token.arg) if parent is not None else None
        if not isinstance(table, TableSpec):
            return 0
        return len(self._instance_numbers(f"{parent_path}{token.arg}.", table))

    def _value(self, path: str, spec: ParamSpec, instance: int | None, parent_path: str,
               parent: ObjectSpec | None) -> str:
        value = self.overrides.get(path)
        if value is None:
            value = self._render(spec, instance, parent_path, parent)
        return value

    def get(self, name: str) -> str:
        """The stored value of one parameter, hidden ones included (the device's own view)."""
        resolved = self.resolve(name)
        if resolved is None or not isinstance(resolved.node, ParamSpec):
            raise _fault(CpeFault.INVALID_PARAMETER_NAME, name)
        return self._value(name, resolved.node, resolved.instance, resolved.parent_path, resolved.parent)

    def get_or(self, name: str, default: str) -> str:
        try:
            return self.get(name)
        except CwmpFault:
            return default

    def typed(self, name: str) -> ParameterValueStruct | None:
        """One parameter as it would appear in a GPV response, or None if it does not exist."""
        resolved = self.resolve(name)
        if resolved is None or not isinstance(resolved.node, ParamSpec):
            return None
        spec = resolved.node
        text = "" if spec.hidden else self._value(name, spec, resolved.instance, resolved.parent_path,
                                                  resolved.parent)
        return ParameterValueStruct(name, ParameterValue(text, spec.type))

    def set_internal(self, name: str, value: str) -> bool:
        """A change made by the device itself (no checks). True if the value changed."""
        if self.get(name) == value:
            return False
        self.overrides[name] = value
        return True

    # -- RPCs -----------------------------------------------------------------------------

    def get_parameter_names(self, path: str, next_level: bool) -> list[ParameterInfoStruct]:
        resolved = self._resolve_or_9005(path)
        node = resolved.node
        if isinstance(node, ParamSpec):
            if next_level:
                raise CwmpFault.from_code(CpeFault.INVALID_ARGUMENTS,
                                          f"Invalid arguments: NextLevel=true on parameter {path}")
            return [ParameterInfoStruct(resolved.path, node.writable)]
        if path == "" and next_level:
            return [ParameterInfoStruct(resolved.path, False)]
        if not next_level:
            return [ParameterInfoStruct(p, w) for p, _n, _i, w, _pp, _pa in
                    self._walk(resolved.path, node, resolved.instance, resolved.writable)]
        out: list[ParameterInfoStruct] = []
        if isinstance(node, TableSpec):
            for number in self._instance_numbers(resolved.path, node):
                out.append(ParameterInfoStruct(f"{resolved.path}{number}.", node.writable))
            return out
        for name, child in node.children.items():
            if isinstance(child, ParamSpec):
                out.append(ParameterInfoStruct(resolved.path + name, child.writable))
            else:
                out.append(ParameterInfoStruct(f"{resolved.path}{name}.",
                                               isinstance(child, TableSpec) and child.writable))
        return out

    def get_parameter_values(self, names: Sequence[str]) -> list[ParameterValueStruct]:
        # Resolve everything first: one bad name faults the whole call (R9).
        targets = [self._resolve_or_9005(name) for name in names]
        out: list[ParameterValueStruct] = []
        for resolved in targets:
            for path, spec, instance, parent_path, parent in self._params_under(resolved):
                text = "" if spec.hidden else self._value(path, spec, instance, parent_path, parent)
                out.append(ParameterValueStruct(path, ParameterValue(text, spec.type)))
        return out

    def parameter_count(self) -> int:
        return sum(1 for _ in self._params_under(self._resolve_or_9005("")))

    def set_parameter_values(self, items: Sequence[ParameterValueStruct], parameter_key: str,
                             *, strict_types: bool = True) -> list[str]:
        """Apply all or nothing; return the names whose value changed."""
        faults: list[SetParameterValuesFault] = []
        staged: list[tuple[str, str]] = []
        seen: set[str] = set()
        for item in items:
            name = item.name
            if name in seen:
                raise CwmpFault.from_code(CpeFault.INVALID_ARGUMENTS,
                                          f"Invalid arguments: {name} given more than once")
            seen.add(name)
            code = self._check_set(name, item.value, strict_types, staged)
            if code is not None:
                faults.append(SetParameterValuesFault(name, int(code), CwmpFault.from_code(code).string))
        if faults:
            raise CwmpFault.from_code(CpeFault.INVALID_ARGUMENTS, set_parameter_values_faults=faults)
        changed = []
        for name, value in staged:
            if self.get(name) != value:
                changed.append(name)
            self.overrides[name] = value
        self._set_parameter_key(parameter_key)
        return changed

    def _check_set(self, name: str, value: ParameterValue, strict_types: bool,
                   staged: list[tuple[str, str]]) -> CpeFault | None:
        resolved = self.resolve(name)
        if resolved is None or not isinstance(resolved.node, ParamSpec):
            return CpeFault.INVALID_PARAMETER_NAME
        spec = resolved.node
        if not spec.writable:
            return CpeFault.NON_WRITABLE_PARAMETER
        if strict_types and canonical_type(value.type) != spec.type:
            return CpeFault.INVALID_PARAMETER_TYPE
        checked = check_value(spec, value.value)
        if checked is None:
            return CpeFault.INVALID_PARAMETER_VALUE
        staged.append((resolved.path, checked))
        return None

    def _set_parameter_key(self, key: str) -> None:
        self.overrides[self.root_path + "ManagementServer.ParameterKey"] = key

    def _default_notification(self, spec: ParamSpec) -> int:
        return 2 if spec.forced_active else 0

    def notification_of(self, name: str, spec: ParamSpec) -> int:
        if spec.forced_active:
            return 2
        return self.notification.get(name, 0)

    def get_parameter_attributes(self, names: Sequence[str]) -> list[ParameterAttributeStruct]:
        targets = [self._resolve_or_9005(name) for name in names]
        out: list[ParameterAttributeStruct] = []
        for resolved in targets:
            for path, spec, _i, _pp, _pa in self._params_under(resolved):
                out.append(ParameterAttributeStruct(path, self.notification_of(path, spec),
                                                    self.access_lists.get(path, ())))
        return out

    def set_parameter_attributes(self, items: Sequence[SetParameterAttributesStruct]) -> None:
        # Validate everything before touching anything, as for SetParameterValues.
        plan: list[tuple[SetParameterAttributesStruct, list[tuple[str, ParamSpec]]]] = []
        for item in items:
            resolved = self._resolve_or_9005(item.name)
            if item.notification_change and not 0 <= item.notification <= 2:
                raise CwmpFault.from_code(CpeFault.INVALID_ARGUMENTS,
                                          f"Invalid arguments: Notification {item.notification}")
            if item.access_list_change and not set(item.access_list) <= _ALLOWED_ACCESS:
                raise CwmpFault.from_code(CpeFault.INVALID_ARGUMENTS,
                                          f"Invalid arguments: AccessList {list(item.access_list)}")
            params = [(path, spec) for path, spec, _i, _pp, _pa in self._params_under(resolved)]
            if (item.notification_change and item.notification == 2 and isinstance(resolved.node, ParamSpec)
                    and resolved.node.deny_active):
                raise _fault(CpeFault.NOTIFICATION_REJECTED, f"active notification denied for {item.name}")
            plan.append((item, params))
        for item, params in plan:
            for path, spec in params:
                if item.notification_change and not spec.forced_active:
                    # A partial path skips the parameters that deny active notification.
                    if item.notification == 2 and spec.deny_active:
                        continue
                    if item.notification == self._default_notification(spec):
                        self.notification.pop(path, None)
                    else:
                        self.notification[path] = item.notification
                if item.access_list_change:
                    if item.access_list:
                        self.access_lists[path] = tuple(item.access_list)
                    else:
                        self.access_lists.pop(path, None)

    def add_object(self, object_name: str, parameter_key: str, *, internal: bool = False) -> int:
        """AddObject; ``internal``: the device adds a row itself (a read-only table such as
        SoftwareModules.DeploymentUnit.), where the ACS may not."""
        resolved = self.resolve(object_name) if object_name.endswith(".") else None
        if resolved is None or not isinstance(resolved.node, TableSpec):
            raise _fault(CpeFault.INVALID_PARAMETER_NAME, f"{object_name} is not a multi-instance object")
        table = resolved.node
        if not (table.writable or internal) or table.prototype is None:
            raise _fault(CpeFault.INVALID_PARAMETER_NAME, f"{object_name} does not allow AddObject")
        path = resolved.path
        existing = self._instance_numbers(path, table)
        if len(existing) >= MAX_INSTANCES:
            raise _fault(CpeFault.RESOURCES_EXCEEDED, f"{object_name} holds {MAX_INSTANCES} instances")
        # Never reuse a number, even of a deleted instance: the ACS may still refer to it.
        number = max([self._last_instance.get(path, 0), *table.instances, *existing]) + 1
        self._last_instance[path] = number
        self._added.setdefault(path, []).append(number)
        self._set_parameter_key(parameter_key)
        return number

    def delete_object(self, object_name: str, parameter_key: str, *, internal: bool = False) -> None:
        resolved = self.resolve(object_name) if object_name.endswith(".") else None
        segments = object_name[:-1].split(".")
        if resolved is None or not isinstance(resolved.node, ObjectSpec) or not segments[-1].isdigit():
            raise _fault(CpeFault.INVALID_PARAMETER_NAME, f"{object_name} is not an object instance")
        if not (resolved.writable or internal):
            raise _fault(CpeFault.INVALID_PARAMETER_NAME, f"{object_name} cannot be deleted")
        table_path = object_name[: -len(segments[-1]) - 1]
        number = int(segments[-1])
        added = self._added.get(table_path)
        if added and number in added:
            added.remove(number)
            if not added:
                del self._added[table_path]
        else:
            self._deleted = self._deleted | {resolved.path}
        self._last_instance[table_path] = max(self._last_instance.get(table_path, 0), number)
        self._forget_under(resolved.path)
        self._set_parameter_key(parameter_key)

    def _forget_under(self, prefix: str) -> None:
        """Drop overlay entries below a deleted instance so that nothing leaks into a later one."""
        for store in (self.overrides, self.notification, self.access_lists):
            for key in [k for k in store if k.startswith(prefix)]:
                del store[key]
        for key in [k for k in self._added if k.startswith(prefix)]:
            del self._added[key]
        for key in [k for k in self._last_instance if k.startswith(prefix)]:
            del self._last_instance[key]
        self._deleted = frozenset(p for p in self._deleted if not p.startswith(prefix) or p == prefix)

    # -- Inform helpers -------------------------------------------------------------------

    def forced_inform(self) -> list[ParameterValueStruct]:
        """The forced Inform parameters (T27) that exist on this device, in template order."""
        out = []
        for name in self.template.forced_inform:
            item = self.typed(name)
            if item is not None:
                out.append(item)
        return out

    def values_of(self, names: Iterable[str]) -> list[ParameterValueStruct]:
        out = []
        for name in names:
            item = self.typed(name)
            if item is not None:
                out.append(item)
        return out
