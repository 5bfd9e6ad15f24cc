"""From inbound messages to the smallest MongoDB updates, and the device events they imply.

Pure: no I/O. The store reads a *projection* of each device (only the parameters the messages
mention, plus the few it always needs), hands it here as a ``DeviceState``, and writes the
``Write``s we return. The state is updated in memory as messages are planned, so several
messages for one device in one Kafka batch see each other's effects in order.

Idempotence: every write is guarded by ``applied: {$ne: event_id}`` and pushes the event id onto
a short per-device list, so a message delivered twice changes nothing the second time, even if a
second consumer races us during a rebalance. Messages already in the list are not planned at all.
A ``device_deleted`` message deletes the document, list included: replays come in partition order,
so a replayed batch deletes and re-creates exactly as the first delivery did.

Writes of the ACS show up here as their outcome: a SetParameterValuesResponse applies the values
of the request it answers (sent along by the gateway), an AddObjectResponse records the new
instance, a DeleteObjectResponse removes the subtree. Values that a CPE accepted with Status 1
(applied at its next boot) carry the flag ``r`` until the device boots or reports them itself; the
record lists their names in ``reboot_pending`` so that a boot clears them without reading the tree.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from services.bus.events import DeviceDeleted, InboundEvent, InformReceived, RpcResponseReceived, ValueChange
from services.inventory.params import (
    CONNECTION_REQUEST_URL,
    PERIODIC_ENABLE,
    PERIODIC_INTERVAL,
    SOFTWARE_VERSION,
    ReadName,
    ReadValue,
    encode_name,
    is_secret,
    names_from_rpc,
    read_value,
    suffix_of,
    text_value,
    valid_name,
    values_from_rpc,
    well_known,
)

log = logging.getLogger(__name__)

# How many recent event ids a device remembers. A replay comes from an uncommitted Kafka batch,
# so it only has to cover the messages of one device in one batch, with a wide margin.
KEEP_APPLIED = 32
# value_changed events are split so one stays far below Kafka's default 1 MB message limit.
CHANGES_PER_EVENT = 500
_EVENT_NAMESPACE = uuid.UUID("0b6f1d6e-5f1c-4b0e-9d39-2f0f3c7f2a61")

ROUTINE_EVENTS = ["2 PERIODIC"]  # the event codes of a routine periodic Inform, as listed
ALWAYS_READ = tuple(encode_name(name) for suffix in (PERIODIC_INTERVAL, PERIODIC_ENABLE)
                    for name in well_known(suffix))


@dataclass(frozen=True)
class PlanConfig:
    silent_after_intervals: float
    default_interval: int
    # "all": an ``informed`` event for every Inform; "notable": not for a routine one (only
    # ``2 PERIODIC``, RetryCount 0, nothing else learnt from it): see docs/events.md.
    informed_events: str = "all"


@dataclass(frozen=True)
class Fact:
    """A device event to publish, before it becomes a DeviceEvent (kept pure and comparable)."""

    kind: str
    device_id: str
    event_id: str
    time: datetime
    changes: tuple[ValueChange, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Write:
    device_id: str
    filter: dict[str, Any]
    update: dict[str, Any] | list[dict[str, Any]]
    upsert: bool = False
    delete: bool = False  # delete the document (``filter`` selects it; ``update`` is unused)


@dataclass(frozen=True)
class Observation:
    """What one inbound message tells the inventory, whatever its type."""

    event_id: str
    device_id: str
    time: datetime
    inform: InformReceived | None = None
    values: tuple[ReadValue, ...] = ()
    names: tuple[ReadName, ...] = ()
    deleted_object: str | None = None
    added_object: str | None = None
    # The values (or the added object) were written by the ACS and the CPE applies them at its
    # next boot (SetParameterValues/AddObject Status 1).
    after_reboot: bool = False
    deleted_device: bool = False

    def mentioned(self) -> set[str]:
        """Encoded names whose stored state planning this observation needs to see."""
        return {encode_name(v.name) for v in self.values} | {encode_name(n.name) for n in self.names}


@dataclass
class DeviceState:
    """The part of a device document that planning needs; ``params`` holds projected keys only."""

    device_id: str
    exists: bool = False
    applied: list[str] = field(default_factory=list)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Names written with Status 1 that wait for the device's next boot (always read: it is short).
    reboot_pending: list[str] = field(default_factory=list)

    @classmethod
    def from_document(cls, device_id: str, document: dict[str, Any] | None) -> DeviceState:
        if document is None:
            return cls(device_id)
        return cls(device_id, True, list(document.get("applied") or []),
                   dict(document.get("params") or {}), list(document.get("reboot_pending") or []))


def observe(message: InboundEvent) -> Observation | None:
    """The observation in a message, or None when the inventory has nothing to learn from it."""
    if isinstance(message, InformReceived):
        values = tuple(read_value(p.name, p.value, p.type) for p in message.parameters
                       if valid_name(p.name))
        return Observation(message.event_id, message.device_id, message.time, inform=message,
                           values=values)
    if isinstance(message, DeviceDeleted):
        return Observation(message.event_id, message.device_id, message.time, deleted_device=True)
    if not isinstance(message, RpcResponseReceived):
        return None
    rpc = message.rpc
    method = str(rpc.get("method") or message.method).removesuffix("Response")
    base = {"event_id": message.event_id, "device_id": message.device_id, "time": message.time}
    if method == "GetParameterValues":
        values, skipped = values_from_rpc(rpc)
        if skipped:
            log.warning("skipped %d malformed items of a GetParameterValuesResponse", skipped,
                        extra={"device_id": message.device_id})
        return Observation(**base, values=tuple(values))
    if method == "GetParameterNames":
        names, skipped = names_from_rpc(rpc)
        if skipped:
            log.warning("skipped %d malformed items of a GetParameterNamesResponse", skipped,
                        extra={"device_id": message.device_id})
        return Observation(**base, names=tuple(names))
    if method in ("DeleteObject", "AddObject"):
        return _object_observation(message, method, base)
    if method == "SetParameterValues":
        return _set_observation(message, base)
    return None  # Attributes, reboots, transfers...: nothing the device record keeps.


def _set_observation(message: RpcResponseReceived, base: dict[str, Any]) -> Observation | None:
    """The values a SetParameterValuesResponse confirms: those of the request it answers.

    Status 0: applied. Status 1: committed, applied at the next boot (flagged so). Secret values
    (passwords, keys) are left out: the record keeps what a read would show, and a read of a
    secret gives an empty string.
    """
    status = _as_int(message.rpc.get("status"))
    request = message.request or {}
    if status not in (0, 1) or request.get("method") != "SetParameterValues":
        log.warning("SetParameterValuesResponse without a usable status or request; inventory unchanged",
                    extra={"device_id": message.device_id})
        return None
    values, skipped = values_from_rpc(request)
    if skipped:
        log.warning("skipped %d malformed items of a SetParameterValues request", skipped,
                    extra={"device_id": message.device_id})
    kept = tuple(value for value in values if not is_secret(value.name))
    if not kept:
        return None
    return Observation(**base, values=kept, after_reboot=status == 1)


def _object_observation(message: RpcResponseReceived, method: str, base: dict[str, Any],
                        ) -> Observation | None:
    # A DeleteObject/AddObject response does not name the object: the request it answers does,
    # and the gateway sends that request along with every answer.
    rpc = message.rpc
    request = message.request or {}
    object_name = request.get("object_name")
    if not isinstance(object_name, str) or not object_name.endswith(".") or not valid_name(object_name):
        log.warning("%s response without a usable object name; inventory unchanged", method,
                    extra={"device_id": message.device_id})
        return None
    if method == "DeleteObject":
        return Observation(**base, deleted_object=object_name)
    instance = rpc.get("instance_number")
    if isinstance(instance, str) and instance.isdigit():
        instance = int(instance)
    if not isinstance(instance, int) or isinstance(instance, bool) or instance < 1:
        return None
    return Observation(**base, added_object=f"{object_name}{instance}.",
                       after_reboot=_as_int(rpc.get("status")) == 1)


def projection_for(observations: Iterable[Observation]) -> dict[str, int]:
    """The fields to read for planning these observations (the same for every device, merged)."""
    projection = {"_id": 1, "applied": 1, "reboot_pending": 1}
    keys = set(ALWAYS_READ)
    for observation in observations:
        keys |= observation.mentioned()
    projection.update({f"params.{key}": 1 for key in sorted(keys)})
    return projection


def plan(state: DeviceState, observation: Observation, config: PlanConfig,
         ) -> tuple[Write | None, list[Fact]]:
    """The write and the facts for one observation; updates ``state`` as if the write happened."""
    if observation.event_id in state.applied:
        return None, []
    if observation.deleted_device:
        return _plan_forget(state, observation), []
    if observation.inform is not None:
        write, facts = _plan_inform(state, observation, config)
    elif not state.exists:
        # A response for a device we do not know (deleted during its session): nothing to update,
        # and no identity to create it with. Its next Inform registers it again.
        return None, []
    elif observation.deleted_object is not None:
        write, facts = _plan_delete(state, observation), []
    else:
        write, facts = _plan_update(state, observation)
    if write is not None:
        state.applied = [*state.applied, observation.event_id][-KEEP_APPLIED:]
        state.exists = True
    return write, facts


def _plan_forget(state: DeviceState, observation: Observation) -> Write:
    """Delete the record. Later messages of the batch see a device that never existed."""
    state.exists, state.applied, state.params, state.reboot_pending = False, [], {}, []
    return Write(observation.device_id, {"_id": observation.device_id}, {}, delete=True)


def _guard(observation: Observation) -> dict[str, Any]:
    return {"_id": observation.device_id, "applied": {"$ne": observation.event_id}}


def _push_applied(observation: Observation) -> dict[str, Any]:
    return {"applied": {"$each": [observation.event_id], "$slice": -KEEP_APPLIED}}


def _plan_inform(state: DeviceState, observation: Observation, config: PlanConfig,
                 ) -> tuple[Write, list[Fact]]:
    inform = observation.inform
    assert inform is not None
    when = observation.time
    codes = [event.code for event in inform.events]
    bootstrap = "0 BOOTSTRAP" in codes
    registered = not state.exists
    old_params = state.params
    sets: dict[str, Any] = {"manufacturer": inform.device.manufacturer}
    unsets: dict[str, str] = {"silent_since": ""}
    pulls: dict[str, Any] = {}
    maxes: dict[str, Any] = {"last_inform": when}
    if inform.remote_address:
        sets["remote_address"] = inform.remote_address
    if "1 BOOT" in codes:
        maxes["last_boot"] = when
    if bootstrap:
        maxes["last_bootstrap"] = when
        # After a factory reset the device may be another unit: forget the cached tree and keep
        # only what this Inform carries. Denormalised fields are rebuilt from it alone.
        tree = {encode_name(v.name): {"v": v.value, "t": v.type, "ts": when} for v in observation.values}
        changes = _changes(old_params, observation.values)
        # Copies: the state is updated in place by later messages, the write must not change.
        state.params = {key: {"v": entry["v"], "t": entry["t"]} for key, entry in tree.items()}
        sets["params"] = tree
        if state.reboot_pending:  # the flags went with the old tree
            unsets["reboot_pending"] = ""
            state.reboot_pending = []
        denormalised = _denormalised(observation.values)
        sets["software_version"] = denormalised.pop("software_version", "")
        for name in ("inform_interval", "connection_request_url"):
            if name in denormalised:
                sets[name] = denormalised[name]
            else:
                unsets[name] = ""
    else:
        applied = _apply_values(state, observation.values, when, sets)
        changes = applied.changes
        sets.update(_denormalised(applied.written))
        if "1 BOOT" in codes:
            # Booted: whatever waited for a reboot is in effect now.
            if state.reboot_pending:
                unsets.update(_clear_flags(state, state.reboot_pending))
                unsets["reboot_pending"] = ""
        elif applied.cleared:
            unsets.update(_clear_flags(state, applied.cleared))
            pulls = {"reboot_pending": {"$in": applied.cleared}}
    deadline = _silent_deadline(state, when, config)
    if deadline is None:
        unsets["silent_deadline"] = ""
    else:
        sets["silent_deadline"] = deadline
    on_insert: dict[str, Any] = {"oui": inform.device.oui, "product_class": inform.device.product_class,
                                 "serial_number": inform.device.serial_number, "first_seen": when,
                                 "tags": []}
    if "software_version" not in sets:
        on_insert["software_version"] = ""  # Sortable fields always exist (see query.py cursors).
    update: dict[str, Any] = {"$set": sets, "$max": maxes, "$setOnInsert": on_insert,
                              "$push": _push_applied(observation)}
    unsets = {name: "" for name in unsets if name not in sets}
    if unsets:
        update["$unset"] = unsets
    if pulls:
        update["$pull"] = pulls

    facts: list[Fact] = []
    if registered:
        facts.append(_fact("registered", observation, details={
            "manufacturer": inform.device.manufacturer, "oui": inform.device.oui,
            "product_class": inform.device.product_class, "serial_number": inform.device.serial_number}))
    if bootstrap:
        facts.append(_fact("bootstrapped", observation))
    if "1 BOOT" in codes:
        facts.append(_fact("booted", observation))
    if not registered:
        facts.extend(_change_facts(observation, changes))
    routine = not facts and codes == ROUTINE_EVENTS and inform.retry_count == 0
    if config.informed_events == "all" or not routine:
        facts.append(_fact("informed", observation, details={
            "events": codes, "remote_address": inform.remote_address, "retry_count": inform.retry_count}))
    return Write(observation.device_id, _guard(observation), update, upsert=True), facts


def _plan_update(state: DeviceState, observation: Observation) -> tuple[Write | None, list[Fact]]:
    """GetParameterValues/GetParameterNames/SetParameterValues/AddObject responses: field-level
    updates only."""
    sets: dict[str, Any] = {}
    applied = _apply_values(state, observation.values, observation.time, sets,
                            after_reboot=observation.after_reboot)
    changes = applied.changes
    sets.update(_denormalised(applied.written))
    unsets = _clear_flags(state, applied.cleared)
    flagged = list(applied.flagged)
    for entry in observation.names:
        key = encode_name(entry.name)
        old = state.params.get(key) or {}
        if entry.writable is not None and old.get("w") != entry.writable:
            sets[f"params.{key}.w"] = entry.writable
            state.params[key] = {**old, "w": entry.writable}
    if observation.added_object is not None:
        key = encode_name(observation.added_object)
        sets[f"params.{key}.ts"] = observation.time
        entry = {**(state.params.get(key) or {}), "ts": observation.time}
        if observation.after_reboot:
            sets[f"params.{key}.r"] = True
            entry["r"] = True
            flagged.append(observation.added_object)
        state.params[key] = entry
    if not sets and not unsets:
        return None, []  # Nothing new: writing only the marker would be a wasted round trip.
    update: dict[str, Any] = {"$push": _push_applied(observation)}
    if sets:
        update["$set"] = sets
    if unsets:
        update["$unset"] = unsets
        update["$pull"] = {"reboot_pending": {"$in": applied.cleared}}
    new_flags = [name for name in dict.fromkeys(flagged) if name not in state.reboot_pending]
    if new_flags:
        update["$addToSet"] = {"reboot_pending": {"$each": new_flags}}
        state.reboot_pending = [*state.reboot_pending, *new_flags]
    return Write(observation.device_id, _guard(observation), update), _change_facts(observation, changes)


def _clear_flags(state: DeviceState, names: Iterable[str]) -> dict[str, str]:
    """The $unset paths of the Status 1 flags of ``names``; clears them in ``state`` too."""
    unsets: dict[str, str] = {}
    names = list(names)
    for name in names:
        key = encode_name(name)
        unsets[f"params.{key}.r"] = ""
        entry = state.params.get(key)
        if entry is not None:
            entry.pop("r", None)
    if names:
        gone = set(names)
        state.reboot_pending = [name for name in state.reboot_pending if name not in gone]
    return unsets


def _plan_delete(state: DeviceState, observation: Observation) -> Write:
    """Unset a deleted object's subtree, server-side, without reading the tree here.

    The parameter names under the object are not known without reading the whole tree, so the
    update is a pipeline that filters ``params`` by key prefix inside MongoDB. Values are wrapped
    in $literal: a string starting with "$" must never be read as a field path.
    """
    object_name = observation.deleted_object or ""
    prefix = encode_name(object_name)
    state.params = {key: value for key, value in state.params.items() if not key.startswith(prefix)}
    pending = [name for name in state.reboot_pending if not name.startswith(object_name)]
    kept = {"$filter": {
        "input": {"$objectToArray": {"$ifNull": ["$params", {}]}},
        "as": "p",
        "cond": {"$ne": [{"$indexOfBytes": ["$$p.k", {"$literal": prefix}]}, 0]},
    }}
    applied = {"$slice": [{"$concatArrays": [{"$ifNull": ["$applied", []]},
                                             [{"$literal": observation.event_id}]]}, -KEEP_APPLIED]}
    stage: dict[str, Any] = {"params": {"$arrayToObject": kept}, "applied": applied}
    if pending != state.reboot_pending:
        # Known in full (always read), so the new list is a literal rather than another filter.
        stage["reboot_pending"] = {"$literal": pending} if pending else "$$REMOVE"
        state.reboot_pending = pending
    return Write(observation.device_id, _guard(observation), [{"$set": stage}])


@dataclass
class _Applied:
    changes: list[ValueChange] = field(default_factory=list)
    written: list[ReadValue] = field(default_factory=list)  # values that were new or different
    cleared: list[str] = field(default_factory=list)  # names whose Status 1 flag goes
    flagged: list[str] = field(default_factory=list)  # names that get the flag


def _apply_values(state: DeviceState, values: Iterable[ReadValue], when: datetime,
                  sets: dict[str, Any], *, after_reboot: bool = False) -> _Applied:
    """Add the $set paths for values read from (or set on) the device.

    An unchanged value only gets its time refreshed. A value seen for the first time is written
    but is not a change: there is no old value to report. With ``after_reboot`` the values get the
    Status 1 flag; otherwise they come from the device itself (or were applied at once), and a
    flag they had is reported in ``cleared`` for the caller to unset.
    """
    out = _Applied()
    changes, written = out.changes, out.written
    for value in values:
        key = encode_name(value.name)
        old = state.params.get(key)
        paths = _paths(key)
        sets[paths[2]] = when
        if old is not None and "v" in old and _same(old["v"], value.value):
            if old.get("t") != value.type:
                sets[paths[1]] = value.type
        else:
            sets[paths[0]] = value.value
            sets[paths[1]] = value.type
            written.append(value)
            if old is not None and "v" in old:
                changes.append(_change(value, old["v"]))
        # The state's entries are ours (read for this batch), so they are updated in place.
        if old is None:
            old = state.params[key] = {"v": value.value, "t": value.type}
        else:
            old["v"] = value.value
            old["t"] = value.type
        if after_reboot:
            sets[f"params.{key}.r"] = True
            old["r"] = True
            out.flagged.append(value.name)
        elif old.get("r"):
            out.cleared.append(value.name)
    return out


@lru_cache(maxsize=65536)
def _paths(key: str) -> tuple[str, str, str]:
    """The update paths of a parameter's value, type and read time (built once per name)."""
    return f"params.{key}.v", f"params.{key}.t", f"params.{key}.ts"


def _change(value: ReadValue, old: Any) -> ValueChange:
    # Built from values we typed ourselves: pydantic's validation would only cost time here.
    return ValueChange.model_construct(name=value.name, old=text_value(old), new=text_value(value.value),
                                       type=value.type)


def _changes(old_params: dict[str, dict[str, Any]], values: Iterable[ReadValue]) -> list[ValueChange]:
    changes = []
    for value in values:
        old = old_params.get(encode_name(value.name)) or {}
        if "v" in old and not _same(old["v"], value.value):
            changes.append(_change(value, old["v"]))
    return changes


def _same(old: Any, new: Any) -> bool:
    # True == 1 in Python; a boolean that became the integer 1 is still a change of type.
    return type(old) is type(new) and old == new


def _denormalised(values: Iterable[ReadValue]) -> dict[str, Any]:
    """Top-level copies of a few parameters, so they can be indexed and sorted on cheaply."""
    fields: dict[str, Any] = {}
    for value in values:
        suffix = suffix_of(value.name)
        if suffix == SOFTWARE_VERSION:
            fields["software_version"] = text_value(value.value) or ""
        elif suffix == PERIODIC_INTERVAL and (interval := _as_int(value.value)) is not None:
            fields["inform_interval"] = interval
        elif suffix == CONNECTION_REQUEST_URL:
            fields["connection_request_url"] = text_value(value.value) or ""
    return fields


# xs:unsignedInt, the type of PeriodicInformInterval and of the RPC status fields read here.
MAX_INTERVAL = 2**32 - 1


def _as_int(value: Any) -> int | None:
    """An integer, also from digits sent as text by a CPE that left out xsi:type; None for text
    of more than 20 digits (int() would refuse thousands of them, and no CWMP integer has them)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (text := value.strip()).isascii() and text.isdigit() and len(text) <= 20:
        return int(text)
    return None


def _silent_deadline(state: DeviceState, when: datetime, config: PlanConfig) -> datetime | None:
    """When to call the device silent: a multiple of its periodic interval after this Inform.

    A device with periodic Informs disabled is never expected, so it never goes silent.
    """
    interval: int | None = None
    for name in well_known(PERIODIC_ENABLE):
        if (state.params.get(encode_name(name)) or {}).get("v") is False:
            return None
    for name in well_known(PERIODIC_INTERVAL):
        value = (state.params.get(encode_name(name)) or {}).get("v")
        number = _as_int(value)
        # PeriodicInformInterval is an unsignedInt: anything larger is a CPE's nonsense (and
        # would overflow the deadline's datetime arithmetic).
        if number is not None and 0 < number <= MAX_INTERVAL:
            interval = number
    interval = interval or config.default_interval
    if interval <= 0 or config.silent_after_intervals <= 0:
        return None
    return when + timedelta(seconds=interval * config.silent_after_intervals)


def _fact(kind: str, observation: Observation, *, changes: Iterable[ValueChange] = (),
          details: dict[str, Any] | None = None, part: int = 0) -> Fact:
    # Derived from the inbound event id, so a re-published fact has the same id and subscribers
    # can drop duplicates.
    event_id = uuid.uuid5(_EVENT_NAMESPACE, f"{observation.event_id}/{kind}/{part}").hex
    return Fact(kind, observation.device_id, event_id, observation.time, tuple(changes), details or {})


def _change_facts(observation: Observation, changes: list[ValueChange]) -> list[Fact]:
    return [_fact("value_changed", observation, changes=changes[i:i + CHANGES_PER_EVENT],
                  part=i // CHANGES_PER_EVENT)
            for i in range(0, len(changes), CHANGES_PER_EVENT)]
