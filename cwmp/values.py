"""Typed CWMP parameter values (TR-069 A.2.1 data types) that keep their ``xsi:type``.

A :class:`ParameterValue` is the pair (text, xsi:type) exactly as it travels in a
``<Value xsi:type="...">``. The text is kept as the CPE sent it (dateTime in particular: CPEs
send times with and without zones or milliseconds, and re-formatting them would make the ACS
report changes that did not happen), with one exception: booleans are normalised to
``"true"``/``"false"`` because CPEs send ``0/1/true/false`` in any case (checklist Q5), and
the outbound literal is a per-device choice made when the envelope is built.

Types are stored canonically as ``"xsd:" + local name``, whatever prefix the CPE used; a
missing ``xsi:type`` means ``xsd:string`` (GenieACS does the same).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

__all__ = [
    "UNKNOWN_TIME",
    "BooleanLiteral",
    "ParameterValue",
    "XsdType",
    "canonical_type",
    "format_boolean",
    "format_datetime",
    "parse_boolean",
    "parse_datetime",
]


class XsdType(StrEnum):
    """The nine value types of TR-069 Table 12, as written in ``xsi:type``."""

    STRING = "xsd:string"
    INT = "xsd:int"
    UNSIGNED_INT = "xsd:unsignedInt"
    LONG = "xsd:long"
    UNSIGNED_LONG = "xsd:unsignedLong"
    BOOLEAN = "xsd:boolean"
    DATETIME = "xsd:dateTime"
    # "xsd:base64" is what TR-069 agents and ACSs write (icwmp, GenieACS); W3C XML Schema calls
    # the type base64Binary. We keep whichever the sender used; see ParameterValue.to_python.
    BASE64 = "xsd:base64"
    HEX_BINARY = "xsd:hexBinary"


class BooleanLiteral(StrEnum):
    """How booleans are written in outbound envelopes (GenieACS ``cwmp.booleanLiteral``).

    Some CPEs reject ``true``/``false`` and need ``1``/``0`` (TP-Link TD-W9970, genieacs#228).
    """

    TRUE_FALSE = "true/false"
    ONE_ZERO = "1/0"


UNKNOWN_TIME = "0001-01-01T00:00:00Z"
"""TR-106 Unknown Time, e.g. StartTime/CompleteTime of a Download that is still pending."""

_INTEGER_TYPES = frozenset({XsdType.INT, XsdType.UNSIGNED_INT, XsdType.LONG, XsdType.UNSIGNED_LONG})
_INT_RANGES = {
    XsdType.INT: (-(2**31), 2**31 - 1),
    XsdType.UNSIGNED_INT: (0, 2**32 - 1),
    XsdType.LONG: (-(2**63), 2**63 - 1),
    XsdType.UNSIGNED_LONG: (0, 2**64 - 1),
}
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})

# Case-insensitive lookup of the known local names, so that "xsd:unsignedint" or
# "xs:String" still come out canonical. Unknown local names are kept as they are.
_KNOWN_LOCAL = {t.value.split(":", 1)[1].lower(): t.value for t in XsdType}
_TYPE_CACHE: dict[str, str] = {}
_TYPE_CACHE_MAX = 512  # bounded: the attribute value comes from the CPE


def canonical_type(raw: str | None) -> str:
    """Canonical form of an ``xsi:type`` attribute value: ``xsd:<local>``; None means string."""
    if raw is None:
        return XsdType.STRING.value
    cached = _TYPE_CACHE.get(raw)
    if cached is not None:
        return cached
    local = raw.strip().rpartition(":")[2]
    result = _KNOWN_LOCAL.get(local.lower()) or ("xsd:" + local if local else XsdType.STRING.value)
    if len(_TYPE_CACHE) < _TYPE_CACHE_MAX:
        _TYPE_CACHE[raw] = result
    return result


def parse_boolean(text: str) -> bool | None:
    """xsd:boolean as CPEs write it: 0/1/true/false, any case, surrounding blanks; else None."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def format_boolean(value: bool, literal: BooleanLiteral = BooleanLiteral.TRUE_FALSE) -> str:
    if literal is BooleanLiteral.ONE_ZERO:
        return "1" if value else "0"
    return "true" if value else "false"


def parse_datetime(text: str) -> datetime | None:
    """Parse a CWMP dateTime; None for Unknown Time or text that is not a dateTime.

    Accepts "Z", "+hh:mm" and no zone at all (taken as UTC, as GenieACS does), with or
    without fractional seconds.
    """
    stripped = text.strip()
    if not stripped or stripped.startswith("0001-01-01"):
        return None
    if stripped.endswith(("Z", "z")):
        stripped = stripped[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def format_datetime(value: datetime, *, milliseconds: bool = False) -> str:
    """Format for the wire. Some CPEs reject fractional seconds, hence the default."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.isoformat(timespec="milliseconds" if milliseconds else "seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@dataclass(slots=True)
class ParameterValue:
    """A parameter value as text plus its canonical ``xsi:type``."""

    value: str = ""
    type: str = XsdType.STRING.value

    def __post_init__(self) -> None:
        if self.type == "xsd:boolean":
            parsed = parse_boolean(self.value)
            if parsed is not None:
                self.value = "true" if parsed else "false"

    # Constructors for the orchestrator, so that callers never spell a type by hand.
    @classmethod
    def string(cls, value: str) -> ParameterValue:
        return cls(value, XsdType.STRING.value)

    @classmethod
    def boolean(cls, value: bool) -> ParameterValue:
        return cls("true" if value else "false", XsdType.BOOLEAN.value)

    @classmethod
    def integer(cls, value: int, xsd_type: XsdType = XsdType.INT) -> ParameterValue:
        if xsd_type not in _INTEGER_TYPES:
            raise ValueError(f"{xsd_type} is not an integer type")
        low, high = _INT_RANGES[xsd_type]
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range for {xsd_type}")
        return cls(str(value), xsd_type.value)

    @classmethod
    def date_time(cls, value: datetime | str) -> ParameterValue:
        text = value if isinstance(value, str) else format_datetime(value)
        return cls(text, XsdType.DATETIME.value)

    @classmethod
    def base64(cls, data: bytes) -> ParameterValue:
        return cls(base64.b64encode(data).decode("ascii"), XsdType.BASE64.value)

    @classmethod
    def hex_binary(cls, data: bytes) -> ParameterValue:
        return cls(data.hex(), XsdType.HEX_BINARY.value)

    def wire_text(self, literal: BooleanLiteral = BooleanLiteral.TRUE_FALSE) -> str:
        """The text to put on the wire: booleans follow ``literal``, all else as stored."""
        if self.type == "xsd:boolean" and literal is BooleanLiteral.ONE_ZERO:
            parsed = parse_boolean(self.value)
            if parsed is not None:
                return "1" if parsed else "0"
        return self.value

    def to_python(self) -> str | int | bool | bytes | datetime | None:
        """Best-effort native value: int, bool, bytes, aware datetime (None for Unknown Time).

        Text that does not match its declared type is returned unchanged as ``str``: values
        come from CPEs, and a wrong type is their problem to report, not a reason to fail.
        """
        kind = self.type
        text = self.value
        try:
            if kind in _INTEGER_TYPES:
                return int(text.strip())
            if kind == "xsd:boolean":
                parsed = parse_boolean(text)
                return text if parsed is None else parsed
            if kind == "xsd:dateTime":
                return parse_datetime(text) if text.strip() else text
            if kind in ("xsd:base64", "xsd:base64Binary"):
                return base64.b64decode(text, validate=False)
            if kind == "xsd:hexBinary":
                return bytes.fromhex(text.strip())
        except (ValueError, binascii.Error):
            return text
        return text
