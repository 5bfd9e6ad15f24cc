"""SOAP envelope codec: bytes <-> :class:`Envelope` (header + one RPC model or fault).

Parsing is lenient where real CPEs deviate (checklist Q1-Q5) and strict where a wrong guess
would corrupt data:

* every element is matched by local name and namespace URI, never by prefix (``soap-env``,
  ``SOAP-ENV``, ``soap_env``, ...); children qualified by mistake are accepted too;
* the cwmp namespace is whatever ``urn:dslforum-org:cwmp-X-Y`` the CPE used, including the
  non-standard -1-3 and -1-4 that icwmp sends, so the reply can use the very same one;
* missing/empty ``cwmp:ID``, missing ``xsi:type`` (= xsd:string), arrayType sizes that are
  zero-padded, wrong or absent, unknown extra elements, a GPV response without ``<Value>``,
  an EventStruct without EventCode, header elements in another cwmp namespace, faultcode
  ``Client`` or ``soap:Client`` are all tolerated;
* what is not an envelope, has no Body, names an unknown method, lacks a required field or
  carries a malformed number raises a :class:`MalformedEnvelope` subclass that keeps the
  ``cwmp:ID``, so a gateway can answer 400 or a SOAP fault with the same ID.

Building uses string templates with escaping rather than an lxml tree: it is several times
faster, and the output is ASCII (non-ASCII characters become character references), which
is safe whatever charset a CPE assumes (checklist T4). The method element is cwmp-prefixed,
its children unqualified; arrays carry ``soap-enc:arrayType="cwmp:ParameterValueStruct[3]"``;
values carry ``xsi:type``; ``cwmp:ID`` and ``cwmp:HoldRequests`` carry
``soap-env:mustUnderstand="1"``. The cwmp-1-0 .. 1-4 XSDs validate the output.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from .faults import CwmpFault, SetParameterValuesFault
from .models import (
    INT_MAX,
    INT_MIN,
    METHODS,
    OPERATION_TYPES,
    CwmpMessage,
    FieldKind,
    FieldSpec,
    ParameterValueStruct,
    struct_fields,
)
from .values import BooleanLiteral, ParameterValue, canonical_type, parse_boolean
from .xmlsafe import (
    DEFAULT_LIMITS,
    XmlForbidden,
    XmlLimitExceeded,
    XmlLimits,
    XmlRejected,
    charset_from_content_type,
    parse_xml,
)

__all__ = [
    "CWMP_NAMESPACES",
    "CWMP_NS_1_0",
    "CWMP_NS_1_1",
    "CWMP_NS_1_2",
    "CWMP_NS_1_3",
    "CWMP_NS_1_4",
    "SOAP_ENC_NS",
    "SOAP_ENV_NS",
    "Envelope",
    "EnvelopeLimitExceeded",
    "Header",
    "InvalidField",
    "MalformedEnvelope",
    "MissingBody",
    "MissingField",
    "NotSoapEnvelope",
    "NotXml",
    "UnknownMethod",
    "UnsafeXml",
    "build_envelope",
    "build_fault",
    "is_cwmp_namespace",
    "is_empty_body",
    "namespace_version",
    "parse_envelope",
]

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENC_NS = "http://schemas.xmlsoap.org/soap/encoding/"
_SOAP12_ENV_NS = "http://www.w3.org/2003/05/soap-envelope"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XSD_NS = "http://www.w3.org/2001/XMLSchema"

CWMP_NS_1_0 = "urn:dslforum-org:cwmp-1-0"
CWMP_NS_1_1 = "urn:dslforum-org:cwmp-1-1"
CWMP_NS_1_2 = "urn:dslforum-org:cwmp-1-2"  # also the namespace of CWMP 1.3 and 1.4 (checklist §0)
CWMP_NS_1_3 = "urn:dslforum-org:cwmp-1-3"  # non-standard, sent by icwmp for Amd 4
CWMP_NS_1_4 = "urn:dslforum-org:cwmp-1-4"  # non-standard, sent by icwmp for Amd 5
CWMP_NAMESPACES = (CWMP_NS_1_0, CWMP_NS_1_1, CWMP_NS_1_2, CWMP_NS_1_3, CWMP_NS_1_4)

_CWMP_NS_RE = re.compile(r"urn:dslforum-org:cwmp-(\d+)-(\d+)\Z")
_SOAP_NAMESPACES = frozenset({SOAP_ENV_NS, _SOAP12_ENV_NS})
_XSI_TYPE = f"{{{XSI_NS}}}type"


def is_cwmp_namespace(ns: str | None) -> bool:
    return ns is not None and _CWMP_NS_RE.match(ns) is not None


def namespace_version(ns: str) -> str:
    """``"urn:dslforum-org:cwmp-1-2"`` -> ``"1-2"`` (the schema file suffix)."""
    match = _CWMP_NS_RE.match(ns)
    if match is None:
        raise ValueError(f"not a cwmp namespace: {ns!r}")
    return f"{match.group(1)}-{match.group(2)}"


def is_empty_body(body: bytes) -> bool:
    """An empty POST: zero length or whitespace only (icwmp sends chunked 0-length, Q7)."""
    return not body or body.isspace()


# ---------------------------------------------------------------------------------------
# Envelope and errors
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """SOAP header fields. ``id`` is None when absent and "" when present but empty."""

    id: str | None = None
    hold_requests: bool | None = None
    session_timeout: int | None = None
    supported_cwmp_versions: str | None = None  # e.g. "1.0,1.1,1.2,1.3,1.4"
    use_cwmp_version: str | None = None
    no_more_requests: bool | None = None  # deprecated (checklist T11), reported but not acted upon


EMPTY_HEADER = Header()


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed envelope. ``message`` is None for an envelope with an empty Body."""

    cwmp_ns: str | None
    header: Header = field(default=EMPTY_HEADER)
    message: CwmpMessage | CwmpFault | None = None

    @property
    def method(self) -> str | None:
        return None if self.message is None else self.message.METHOD


class MalformedEnvelope(ValueError):
    """The body is not a usable CWMP envelope. ``cwmp_id``/``cwmp_ns`` are set when known."""

    def __init__(self, reason: str, *, cwmp_id: str | None = None, cwmp_ns: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cwmp_id = cwmp_id
        self.cwmp_ns = cwmp_ns


class NotXml(MalformedEnvelope):
    """Not well-formed XML (after the tolerated repairs), or an unknown charset."""


class UnsafeXml(MalformedEnvelope):
    """DTD or entity declarations: refused outright."""


class EnvelopeLimitExceeded(MalformedEnvelope):
    """Too large, too deep or too many elements. ``limit`` names the XmlLimits field."""

    def __init__(self, reason: str, limit: str) -> None:
        super().__init__(reason)
        self.limit = limit


class NotSoapEnvelope(MalformedEnvelope):
    """Well-formed XML whose root is not a SOAP Envelope."""


class MissingBody(MalformedEnvelope):
    """A SOAP Envelope without a Body."""


class DuplicateHeader(MalformedEnvelope):
    """A SOAP header that may occur once (cwmp:ID) occurs twice: which one counts is ambiguous."""


class UnknownMethod(MalformedEnvelope):
    """A method this library does not know. Answer a CPE request with fault 8000, same ID."""

    def __init__(self, method: str, *, cwmp_id: str | None, cwmp_ns: str | None) -> None:
        super().__init__(f"unknown CWMP method {method!r}", cwmp_id=cwmp_id, cwmp_ns=cwmp_ns)
        self.method = method


class MissingField(MalformedEnvelope):
    """A required element is absent (e.g. Inform without DeviceId)."""

    def __init__(self, method: str, path: str, *, cwmp_id: str | None = None, cwmp_ns: str | None = None) -> None:
        super().__init__(f"{method}: missing required element {path}", cwmp_id=cwmp_id, cwmp_ns=cwmp_ns)
        self.method = method
        self.path = path


class InvalidField(MalformedEnvelope):
    """An element whose text does not fit its type (e.g. RetryCount "abc")."""

    def __init__(
        self, method: str, path: str, value: str, *, cwmp_id: str | None = None, cwmp_ns: str | None = None
    ) -> None:
        super().__init__(f"{method}: invalid value {value[:64]!r} for {path}", cwmp_id=cwmp_id, cwmp_ns=cwmp_ns)
        self.method = method
        self.path = path
        self.value = value


class _FieldError(Exception):
    """Internal: raised deep in decoding, re-raised with the envelope's ID and namespace."""

    def __init__(self, path: str, value: str | None) -> None:
        self.path = path
        self.value = value


# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------


def _split(tag: str) -> tuple[str, str]:
    if tag[0] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def parse_envelope(body: bytes, content_type: str | None = None, limits: XmlLimits = DEFAULT_LIMITS) -> Envelope:
    """Parse one SOAP envelope. ``content_type`` is the HTTP header (only its charset is used)."""
    if is_empty_body(body):
        raise NotXml("empty body: an empty POST carries no envelope")
    try:
        root = parse_xml(body, charset=charset_from_content_type(content_type), limits=limits)
    except XmlLimitExceeded as exc:
        raise EnvelopeLimitExceeded(exc.reason, exc.limit) from exc
    except XmlForbidden as exc:
        raise UnsafeXml(exc.reason) from exc
    except XmlRejected as exc:
        raise NotXml(exc.reason) from exc

    ns, local = _split(root.tag)
    if local != "Envelope" or ns not in _SOAP_NAMESPACES:
        raise NotSoapEnvelope(f"root element is {root.tag!r}, not a SOAP Envelope")
    header_el = body_el = None
    for child in root:
        child_local = _split(child.tag)[1]
        if child_local == "Body" and body_el is None:
            body_el = child
        elif child_local == "Header" and header_el is None:
            header_el = child
    header, header_ns = _parse_header(header_el) if header_el is not None else (EMPTY_HEADER, None)
    if body_el is None:
        raise MissingBody("SOAP Envelope without Body", cwmp_id=header.id)

    method_el = next(iter(body_el), None)
    if method_el is None:
        return Envelope(header_ns or _namespace_in_scope(root), header, None)
    method_ns, method = _split(method_el.tag)
    if method == "Fault":
        fault, detail_ns = _parse_soap_fault(method_el, header)
        return Envelope(detail_ns or header_ns or _namespace_in_scope(root), header, fault)
    cwmp_ns = method_ns if is_cwmp_namespace(method_ns) else header_ns or _namespace_in_scope(root)
    cls = METHODS.get(method)
    if cls is None:
        raise UnknownMethod(method, cwmp_id=header.id, cwmp_ns=cwmp_ns)
    try:
        message = _decode(cls, method_el, "")
    except _FieldError as exc:
        if exc.value is None:
            raise MissingField(method, exc.path, cwmp_id=header.id, cwmp_ns=cwmp_ns) from None
        raise InvalidField(method, exc.path, exc.value, cwmp_id=header.id, cwmp_ns=cwmp_ns) from None
    return Envelope(cwmp_ns, header, message)


def _namespace_in_scope(element: etree._Element) -> str | None:
    for uri in element.nsmap.values():
        if is_cwmp_namespace(uri):
            return uri
    return None


def _parse_header(header_el: etree._Element) -> tuple[Header, str | None]:
    values: dict[str, Any] = {}
    header_ns: str | None = None
    for child in header_el:
        ns, local = _split(child.tag)
        raw = child.text or ""
        if local == "ID":
            if "id" in values:
                # Answering one ID and matching the other would split the CPE's and the ACS's
                # view of the exchange; nothing sane sends two.
                raise DuplicateHeader("two cwmp:ID headers in one envelope")
            values["id"] = raw
            if is_cwmp_namespace(ns):
                header_ns = ns
        elif local == "HoldRequests":
            values["hold_requests"] = parse_boolean(raw)
        elif local == "NoMoreRequests":
            values["no_more_requests"] = parse_boolean(raw)
        elif local == "SessionTimeout":
            # GenieACS looks for "sessionTimeout" and never sees it (Q3); accept both spellings.
            values["session_timeout"] = _header_int(raw)
        elif local == "sessionTimeout":
            values.setdefault("session_timeout", _header_int(raw))
        elif local == "SupportedCWMPVersions":
            values["supported_cwmp_versions"] = raw.strip()
        elif local == "UseCWMPVersion":
            values["use_cwmp_version"] = raw.strip()
    return (Header(**values) if values else EMPTY_HEADER), header_ns


def _header_int(raw: str) -> int | None:
    raw = raw.strip()
    return int(raw) if raw.isdigit() and len(raw) < 12 else None


def _parse_soap_fault(fault_el: etree._Element, header: Header) -> tuple[CwmpFault, str | None]:
    faultcode = faultstring = ""
    detail = None
    for child in fault_el:
        local = _split(child.tag)[1]
        if local == "faultcode":
            faultcode = (child.text or "").strip().rpartition(":")[2]  # "soap:Client" -> "Client"
        elif local == "faultstring":
            faultstring = child.text or ""
        elif local == "detail":
            detail = child
    cwmp_fault = None
    if detail is not None:
        cwmp_fault = next((c for c in detail if _split(c.tag)[1] == "Fault"), None)
    if cwmp_fault is None:
        return CwmpFault(0, faultstring, (), faultcode or "Server", faultstring), None
    code, string, details = 0, "", []
    try:
        for child in cwmp_fault:
            local = _split(child.tag)[1]
            if local == "FaultCode":
                code = _to_int(child.text, "Fault/FaultCode")
            elif local == "FaultString":
                string = child.text or ""
            elif local == "SetParameterValuesFault":
                details.append(_parse_spv_fault(child))
    except _FieldError as exc:
        raise InvalidField("Fault", exc.path, exc.value or "", cwmp_id=header.id) from None
    fault_ns = _split(cwmp_fault.tag)[0]
    return (
        CwmpFault(code, string, tuple(details), faultcode or "Server", faultstring),
        fault_ns if is_cwmp_namespace(fault_ns) else None,
    )


def _parse_spv_fault(element: etree._Element) -> SetParameterValuesFault:
    name, code, string = "", 0, ""
    for child in element:
        local = _split(child.tag)[1]
        if local == "ParameterName":
            name = child.text or ""
        elif local == "FaultCode":
            code = _to_int(child.text, "Fault/SetParameterValuesFault/FaultCode")
        elif local == "FaultString":
            string = child.text or ""
    return SetParameterValuesFault(name, code, string)


# No number in range is longer than this ("-2147483648", or a few leading zeros): longer text
# is refused before int() spends time on it.
_MAX_INT_TEXT = 20


def _to_int(raw: str | None, path: str) -> int:
    text = (raw or "").strip()
    if not text:
        return 0  # <FileSize/>: tolerated as 0 rather than failing a whole message
    if len(text) > _MAX_INT_TEXT:
        raise _FieldError(path, text)
    try:
        number = int(text)
    except ValueError:
        raise _FieldError(path, text) from None
    if not INT_MIN <= number <= INT_MAX:
        raise _FieldError(path, text)
    return number


@dataclass(slots=True)
class _DecodePlan:
    specs: tuple[FieldSpec, ...]
    # local element name -> (position, how to decode, spec). The small int avoids hashing
    # Enum members in the hot loop (Enum.__hash__ is Python code).
    index: dict[str, tuple[int, int, FieldSpec]]
    defaults: tuple[tuple[bool, Any], ...]  # (is_factory, default value or factory)


_DECODE_PLANS: dict[type, _DecodePlan] = {}
_MISSING: Any = object()
_AS_TEXT, _AS_REPEATED, _AS_OTHER = 0, 1, 2


def _decode_plan(cls: type) -> _DecodePlan:
    specs = struct_fields(cls)
    dc_fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
    defaults = []
    index = {}
    for i, spec in enumerate(specs):
        f = dc_fields[spec.attr]
        if f.default_factory is not dataclasses.MISSING:
            defaults.append((True, f.default_factory))
        else:
            defaults.append((False, f.default))
        if spec.kind in (FieldKind.STR, FieldKind.DATETIME):
            how = _AS_TEXT
        elif spec.kind is FieldKind.REPEATED:
            how = _AS_REPEATED
        else:
            how = _AS_OTHER
        index[spec.xml] = (i, how, spec)
    plan = _DecodePlan(specs, index, tuple(defaults))
    _DECODE_PLANS[cls] = plan
    return plan


# The decoders below are written for speed: an Inform with ten parameters holds some sixty
# elements, and creating a Python proxy for each lxml node dominates the cost of a parse.
# Text fields, the commonest, are handled inline; the rest go through _decode_field.


def _decode(cls: type, element: etree._Element, path: str) -> Any:
    plan = _DECODE_PLANS.get(cls) or _decode_plan(cls)
    values = [_MISSING] * len(plan.specs)
    index = plan.index
    for child in element:
        tag = child.tag
        entry = index.get(tag[tag.find("}") + 1 :])  # local name; find() is -1 when unqualified
        if entry is None:
            continue  # unknown element: tolerated (DeviceId extras, vendor additions)
        i, how, spec = entry
        if how == _AS_REPEATED:
            item = _decode_repeated_item(spec, child, f"{path}{spec.xml}/")
            if values[i] is _MISSING:
                values[i] = [item]
            else:
                values[i].append(item)
        elif values[i] is not _MISSING:
            continue  # a repeated singleton: the first one wins
        elif how == _AS_TEXT:
            values[i] = child.text or ""
        else:
            values[i] = _decode_field(spec, child, path)
    for i, value in enumerate(values):
        if value is _MISSING:
            spec = plan.specs[i]
            if spec.required:
                raise _FieldError(path + spec.xml, None)
            is_factory, default = plan.defaults[i]
            values[i] = default() if is_factory else default
        elif type(value) is list:
            values[i] = tuple(value)
    return cls(*values)


def _decode_value(element: etree._Element) -> ParameterValue:
    raw_type = element.get(_XSI_TYPE)
    if raw_type is None and len(element.attrib):
        # xsi bound to an unexpected URI: accept any attribute whose local name is "type".
        raw_type = next((v for k, v in element.attrib.items() if k.rpartition("}")[2] == "type"), None)
    return ParameterValue(element.text or "", canonical_type(raw_type))


def _decode_value_structs(array_el: etree._Element, path: str) -> tuple[ParameterValueStruct, ...]:
    """Fast path for ParameterValueStruct arrays (Inform, GPV response, SPV)."""
    result = []
    append = result.append
    for item in array_el:
        # The usual shape, unqualified <Name> then <Value>: index instead of iterating.
        if len(item) == 2:
            first = item[0]
            second = item[1]
            if first.tag == "Name" and second.tag == "Value":
                append(ParameterValueStruct(first.text or "", _decode_value(second)))
                continue
        name = value = None
        for child in item:
            tag = child.tag
            local = tag[tag.find("}") + 1 :]
            if local == "Name":
                if name is None:
                    name = child.text or ""
            elif local == "Value":
                if value is None:
                    value = _decode_value(child)
        if name is None:
            raise _FieldError(path + "Name", None)
        append(ParameterValueStruct(name, value if value is not None else ParameterValue()))
    return tuple(result)


def _decode_field(spec: FieldSpec, child: etree._Element, path: str) -> Any:
    kind = spec.kind
    if kind is FieldKind.INT:
        return _to_int(child.text, path + spec.xml)
    if kind is FieldKind.VALUE:
        return _decode_value(child)
    if kind is FieldKind.BOOL:
        raw = child.text or ""
        parsed = parse_boolean(raw)
        if parsed is None:
            if raw.strip():
                raise _FieldError(path + spec.xml, raw)
            return False
        return parsed
    if kind is FieldKind.STRUCT:
        return _decode(spec.item, child, f"{path}{spec.xml}/")
    # ARRAY: every element child is an item, whatever its name and the arrayType size say.
    item_path = f"{path}{spec.xml}/{spec.item_xml}/"
    if spec.item is ParameterValueStruct:
        return _decode_value_structs(child, item_path)
    if spec.item is FieldKind.STR:
        return tuple(item.text or "" for item in child)
    return tuple(_decode(spec.item, item, item_path) for item in child)


_OPERATION_BY_XSI_TYPE = {cls.XSI_TYPE: cls for cls in OPERATION_TYPES}


def _decode_repeated_item(spec: FieldSpec, child: etree._Element, path: str) -> Any:
    if not isinstance(spec.item, tuple):
        return _decode(spec.item, child, path)
    raw_type = child.get(_XSI_TYPE)
    cls = _OPERATION_BY_XSI_TYPE.get(raw_type.rpartition(":")[2]) if raw_type else None
    if cls is None:
        cls = _guess_operation(child)
    return _decode(cls, child, path)


def _guess_operation(element: etree._Element) -> type:
    """ChangeDUState operation without (or with an unknown) xsi:type: infer from its children."""
    names = {_split(c.tag)[1] for c in element}
    if "URL" in names and "Version" not in names:
        return OPERATION_TYPES[0]  # Install: the only operation that requires a URL
    if "URL" not in names and "Username" not in names and "UUID" in names:
        return OPERATION_TYPES[2]  # Uninstall
    return OPERATION_TYPES[1]  # Update


# ---------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------

_ENVELOPE_OPEN = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<soap-env:Envelope xmlns:soap-env="{SOAP_ENV_NS}" xmlns:soap-enc="{SOAP_ENC_NS}"'
    f' xmlns:xsd="{XSD_NS}" xmlns:xsi="{XSI_NS}" xmlns:cwmp="'
)
_ENVELOPE_CLOSE = "</soap-env:Body></soap-env:Envelope>"
# Characters XML 1.0 cannot carry at all, not even as character references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_XSI_TYPE_VALUE = re.compile(r"xsd:[A-Za-z][A-Za-z0-9]*\Z")


def _esc(text: str) -> str:
    if text.isascii() and text.isprintable():  # the common case: one C-level scan each
        if "&" in text or "<" in text or ">" in text:
            text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return text
    if _NOT_XML.search(text):
        raise ValueError(f"text {text[:40]!r} contains characters that XML 1.0 cannot represent")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii")


def _bool_text(value: bool, literal: BooleanLiteral) -> str:
    if literal is BooleanLiteral.ONE_ZERO:
        return "1" if value else "0"
    return "true" if value else "false"


def build_envelope(
    message: CwmpMessage | CwmpFault,
    *,
    cwmp_ns: str,
    cwmp_id: str | None,
    hold_requests: bool | None = None,
    use_cwmp_version: str | None = None,
    session_timeout: int | None = None,
    supported_cwmp_versions: str | None = None,
    boolean_literal: BooleanLiteral = BooleanLiteral.TRUE_FALSE,
) -> bytes:
    """Serialise one message (or fault) into a SOAP envelope.

    ``cwmp_ns`` is the namespace to speak (echo the CPE's). ``cwmp_id`` is echoed exactly,
    even when empty; None omits the header. ``session_timeout`` and
    ``supported_cwmp_versions`` are the CPE-side headers of an Inform (for simulators).
    """
    if not is_cwmp_namespace(cwmp_ns):
        raise ValueError(f"not a cwmp namespace: {cwmp_ns!r}")
    out = [_ENVELOPE_OPEN, cwmp_ns, '">']
    headers = []
    if cwmp_id is not None:
        headers.append(f'<cwmp:ID soap-env:mustUnderstand="1">{_esc(cwmp_id)}</cwmp:ID>')
    if hold_requests is not None:
        value = _bool_text(hold_requests, boolean_literal)
        headers.append(f'<cwmp:HoldRequests soap-env:mustUnderstand="1">{value}</cwmp:HoldRequests>')
    if session_timeout is not None:
        headers.append(f'<cwmp:SessionTimeout soap-env:mustUnderstand="0">{int(session_timeout)}</cwmp:SessionTimeout>')
    if supported_cwmp_versions is not None:
        headers.append(
            '<cwmp:SupportedCWMPVersions soap-env:mustUnderstand="0">'
            f"{_esc(supported_cwmp_versions)}</cwmp:SupportedCWMPVersions>"
        )
    if use_cwmp_version is not None:
        headers.append(
            f'<cwmp:UseCWMPVersion soap-env:mustUnderstand="1">{_esc(use_cwmp_version)}</cwmp:UseCWMPVersion>'
        )
    if headers:
        out.append("<soap-env:Header>")
        out.extend(headers)
        out.append("</soap-env:Header>")
    out.append("<soap-env:Body>")
    if isinstance(message, CwmpFault):
        _encode_fault(message, out)
    else:
        method = message.METHOD
        out.append(f"<cwmp:{method}>")
        _encode_struct(message, out, boolean_literal)
        out.append(f"</cwmp:{method}>")
    out.append(_ENVELOPE_CLOSE)
    return "".join(out).encode("ascii")


def build_fault(fault: CwmpFault, *, cwmp_ns: str, cwmp_id: str | None) -> bytes:
    """A SOAP fault envelope (A.5): faultcode Client/Server, faultstring, cwmp:Fault detail."""
    return build_envelope(fault, cwmp_ns=cwmp_ns, cwmp_id=cwmp_id)


def _encode_fault(fault: CwmpFault, out: list[str]) -> None:
    out.append(
        f"<soap-env:Fault><faultcode>{_esc(fault.faultcode)}</faultcode>"
        f"<faultstring>{_esc(fault.faultstring)}</faultstring>"
        f"<detail><cwmp:Fault><FaultCode>{int(fault.code)}</FaultCode>"
        f"<FaultString>{_esc(fault.string)}</FaultString>"
    )
    for item in fault.set_parameter_values_faults:
        out.append(
            f"<SetParameterValuesFault><ParameterName>{_esc(item.parameter_name)}</ParameterName>"
            f"<FaultCode>{int(item.fault_code)}</FaultCode>"
            f"<FaultString>{_esc(item.fault_string)}</FaultString></SetParameterValuesFault>"
        )
    out.append("</cwmp:Fault></detail></soap-env:Fault>")


def _encode_struct(obj: Any, out: list[str], literal: BooleanLiteral) -> None:
    for spec in struct_fields(type(obj)):
        value = getattr(obj, spec.attr)
        kind = spec.kind
        xml = spec.xml
        if value is None:
            if spec.optional:
                continue
            raise ValueError(f"{type(obj).__name__}.{spec.attr} is None")
        if kind is FieldKind.STR or kind is FieldKind.DATETIME:
            out.append(f"<{xml}>{_esc(value)}</{xml}>")
        elif kind is FieldKind.INT:
            if type(value) is not int:
                raise ValueError(f"{type(obj).__name__}.{spec.attr} must be int, got {value!r}")
            out.append(f"<{xml}>{value}</{xml}>")
        elif kind is FieldKind.BOOL:
            if type(value) is not bool:
                raise ValueError(f"{type(obj).__name__}.{spec.attr} must be bool, got {value!r}")
            out.append(f"<{xml}>{_bool_text(value, literal)}</{xml}>")
        elif kind is FieldKind.VALUE:
            xsi_type = value.type
            if _XSI_TYPE_VALUE.match(xsi_type) is None:
                raise ValueError(f"xsi:type {xsi_type!r} is not of the form xsd:<name>")
            out.append(f'<{xml} xsi:type="{xsi_type}">{_esc(value.wire_text(literal))}</{xml}>')
        elif kind is FieldKind.STRUCT:
            out.append(f"<{xml}>")
            _encode_struct(value, out, literal)
            out.append(f"</{xml}>")
        elif kind is FieldKind.ARRAY:
            out.append(f'<{xml} soap-enc:arrayType="{spec.array_type}[{len(value)}]">')
            item_xml = spec.item_xml
            if spec.item is FieldKind.STR:
                out.extend(f"<{item_xml}>{_esc(item)}</{item_xml}>" for item in value)
            else:
                for item in value:
                    out.append(f"<{item_xml}>")
                    _encode_struct(item, out, literal)
                    out.append(f"</{item_xml}>")
            out.append(f"</{xml}>")
        else:  # REPEATED
            polymorphic = isinstance(spec.item, tuple)
            for item in value:
                out.append(f'<{xml} xsi:type="cwmp:{item.XSI_TYPE}">' if polymorphic else f"<{xml}>")
                _encode_struct(item, out, literal)
                out.append(f"</{xml}>")
