"""Parameters as the inventory stores them: encoded names, typed values, RPC payload parsing.

A device document keeps its parameter tree in one flat map, ``params``, keyed by an *encoded*
parameter name, so that one parameter is one field that ``$set``/``$unset`` can address without
touching the rest of the tree. MongoDB update paths split on "." and treat a leading "$" as an
operator, so the encoding maps "." to ":" (a character TR-106 names never contain) after
percent-escaping the few characters that would otherwise be ambiguous or unsafe. The mapping is
character by character, hence prefix-preserving: ``encode(prefix)`` is a prefix of
``encode(name)`` whenever ``prefix`` is a prefix of ``name`` (subtree deletes rely on this).

Values are stored typed by their xsi type (integers as numbers, booleans as true/false, the rest
as strings) so that range queries compare numbers as numbers and "1" vs "true" for a boolean is
not reported as a change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from services.common import redaction

StoredValue = str | int | bool

MAX_NAME_LENGTH = 1024
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INTEGER_TYPES = frozenset({"int", "unsignedInt", "long", "unsignedLong", "short", "unsignedShort",
                            "byte", "unsignedByte", "integer"})
_ESCAPES = {"%": "%25", "$": "%24", ":": "%3A", "\x00": "%00", ".": ":"}
_UNESCAPES = {"%25": "%", "%24": "$", "%3A": ":", "%00": "\x00"}

# The two data model roots (TR-181 and TR-098); a few parameters are denormalised from either.
ROOTS = ("Device.", "InternetGatewayDevice.")
SOFTWARE_VERSION = "DeviceInfo.SoftwareVersion"
PERIODIC_INTERVAL = "ManagementServer.PeriodicInformInterval"
PERIODIC_ENABLE = "ManagementServer.PeriodicInformEnable"
CONNECTION_REQUEST_URL = "ManagementServer.ConnectionRequestURL"
CONNECTION_REQUEST_USERNAME = "ManagementServer.ConnectionRequestUsername"
# Parameters holding secrets (passwords, Wi-Fi keys, RADIUS secrets), by their last name segment.
# A CPE reads them back empty (TR-069 A.3.2.1); the values the ACS writes are never stored here.
@lru_cache(maxsize=65536)  # A fleet shares a few thousand names; encoding is on the hot path.
def encode_name(name: str) -> str:
    """The field name under ``params`` for a parameter (or object, ending in ".") name."""
    return "".join(_ESCAPES.get(char, char) for char in name)


def decode_name(key: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(key):
        char = key[i]
        if char == ":":
            out.append(".")
        elif char == "%" and key[i:i + 3] in _UNESCAPES:
            out.append(_UNESCAPES[key[i:i + 3]])
            i += 2
        else:
            out.append(char)
        i += 1
    return "".join(out)


def valid_name(name: str) -> bool:
    """Names we accept from a CPE: anything non-empty and bounded (the encoding makes it safe)."""
    return 0 < len(name) <= MAX_NAME_LENGTH


def is_secret(name: str) -> bool:
    """Whether a parameter holds a secret, e.g. ``...ConnectionRequestPassword`` or ``...KeyPassphrase``
    (services.common.redaction, with the patterns of ACS_REDACTED_PARAMETERS)."""
    return redaction.is_secret(name)


def well_known(suffix: str) -> tuple[str, str]:
    """The names of one parameter in both data models, e.g. for DeviceInfo.SoftwareVersion."""
    return (ROOTS[0] + suffix, ROOTS[1] + suffix)


def suffix_of(name: str) -> str | None:
    """``name`` without its data model root, or None when it is under neither root."""
    for root in ROOTS:
        if name.startswith(root):
            return name[len(root):]
    return None


def normalise_type(xsi_type: str | None) -> str:
    """``xsd:<local>`` whatever prefix (or none) the CPE used; empty means string."""
    if not xsi_type:
        return "xsd:string"
    local = xsi_type.rsplit(":", 1)[-1].strip()
    return f"xsd:{local}" if local else "xsd:string"


def stored_value(text: str, xsi_type: str) -> StoredValue:
    """The typed value kept in MongoDB; falls back to the text when it does not parse."""
    local = xsi_type.rsplit(":", 1)[-1]
    stripped = text.strip()
    if local in _INTEGER_TYPES:
        try:
            number = int(stripped)
        except ValueError:
            return text
        return number if _INT64_MIN <= number <= _INT64_MAX else text
    if local == "boolean":
        lowered = stripped.lower()
        if lowered in ("1", "true"):
            return True
        if lowered in ("0", "false"):
            return False
    return text


def text_value(value: Any) -> str | None:
    """The canonical text of a stored value, for events (booleans in their xsd spelling)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class ReadValue:
    """One parameter value read from a CPE (Inform or GetParameterValuesResponse)."""

    name: str
    value: StoredValue
    type: str


@dataclass(frozen=True)
class ReadName:
    """One entry of a GetParameterNamesResponse: a parameter, or an object when it ends in "."."""

    name: str
    writable: bool | None


def read_value(name: str, text: str, xsi_type: str | None) -> ReadValue:
    """The value as the device record keeps it. A secret (a Wi-Fi key, a password a CPE reports
    although it should read back empty) is never stored: the record says it is set, not what it is."""
    kind = normalise_type(xsi_type)
    if text and is_secret(name):
        return ReadValue(name, redaction.REDACTED, "xsd:string")
    return ReadValue(name, stored_value(text, kind), kind)


# --- RPC payloads ---------------------------------------------------------------------------------
# The gateway puts a CPE's response in RpcResponseReceived.rpc as a dict. These two functions are
# the only place that knows its layout, so aligning with the codec's rpc_to_dict is a local change.


def values_from_rpc(rpc: Mapping[str, Any]) -> tuple[list[ReadValue], int]:
    """Parameter values of a GetParameterValuesResponse, and how many items were unusable.

    Accepts items ``{"name", "value": {"value", "type"}}`` and flat ``{"name", "value", "type"}``.
    """
    values: list[ReadValue] = []
    skipped = 0
    for item in _items(rpc, "parameter_list"):
        name = item.get("name")
        raw = item.get("value")
        xsi_type = item.get("type")
        if isinstance(raw, Mapping):
            xsi_type = raw.get("type", xsi_type)
            raw = raw.get("value")
        if raw is None:
            raw = ""
        if not isinstance(name, str) or not valid_name(name) or not isinstance(raw, str | int | bool) \
                or not isinstance(xsi_type, str | None):
            skipped += 1
            continue
        text = text_value(raw) if not isinstance(raw, str) else raw
        values.append(read_value(name, text or "", xsi_type))
    return values, skipped


def names_from_rpc(rpc: Mapping[str, Any]) -> tuple[list[ReadName], int]:
    """Entries of a GetParameterNamesResponse (``{"name", "writable"}``), and how many were unusable."""
    names: list[ReadName] = []
    skipped = 0
    for item in _items(rpc, "parameter_list"):
        name = item.get("name")
        if not isinstance(name, str) or not valid_name(name):
            skipped += 1
            continue
        names.append(ReadName(name, _as_bool(item.get("writable"))))
    return names, skipped


def _items(rpc: Mapping[str, Any], key: str) -> Iterable[Mapping[str, Any]]:
    """The list under ``key``; an entry that is not an object yields an empty mapping (skipped)."""
    items = rpc.get(key)
    if not isinstance(items, list):
        return []
    return [item if isinstance(item, Mapping) else {} for item in items]


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true"):
            return True
        if lowered in ("0", "false"):
            return False
    return None
