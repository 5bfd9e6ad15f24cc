"""Hardened XML parsing for bodies sent by CPEs, which are treated as hostile input.

What this module guarantees, in order of the checks:

1. ``max_bytes``: the body is rejected before any parsing.
2. DTDs are rejected outright. Any ``<!...>`` markup declaration in the prolog (``<!DOCTYPE``,
   ``<!ENTITY``) raises :class:`XmlForbidden` after a scan of the prolog only, so a billion-laughs
   or XXE payload costs nothing and allocates nothing. (After the root start tag a DTD is a
   syntax error anyway.) As a second line of defence the lxml parser is configured with
   ``resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
   huge_tree=False``.
3. ``max_elements``: bounded before parsing by counting ``<`` in the raw bytes (an upper bound
   of the number of start tags), so an element-count bomb never becomes a tree.
4. ``max_depth``: checked on the parsed tree with one compiled XPath. libxml2 without
   ``huge_tree`` already stops at depth 256, which bounds the memory a depth bomb can use.

Charset (checklist Q6): the XML declaration wins; without one, the HTTP ``charset`` is used;
without both, UTF-8. UTF-16/32 with a byte-order mark are accepted. ISO-8859-1 is accepted
when declared or announced, and as a last resort when a body that claims (or defaults to)
UTF-8 is not valid UTF-8 (some CPEs send Latin-1 without saying so).

Repairs of real-world defects, tried only after a first strict parse failed so that the common
path costs nothing: invalid XML 1.0 control characters, raw or as character references, are
removed (genieacs#76); namespace prefixes used without a declaration (``xsi:type`` with no
``xmlns:xsi``, checklist Q4) get one on the root element.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache

from lxml import etree

__all__ = [
    "DEFAULT_LIMITS",
    "XmlForbidden",
    "XmlLimitExceeded",
    "XmlLimits",
    "XmlRejected",
    "XmlSyntaxError",
    "charset_from_content_type",
    "parse_xml",
]


@dataclass(frozen=True, slots=True)
class XmlLimits:
    """Resource limits applied to every parsed body."""

    max_bytes: int = 4 * 1024 * 1024
    max_depth: int = 64
    max_elements: int = 200_000


DEFAULT_LIMITS = XmlLimits()


class XmlRejected(ValueError):
    """Base class: the bytes were not accepted as an XML document."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class XmlSyntaxError(XmlRejected):
    """Not well-formed XML, even after the tolerated repairs."""


class XmlForbidden(XmlRejected):
    """The document uses a construct we refuse outright (DTD, entity declarations)."""


class XmlLimitExceeded(XmlRejected):
    """A size, depth or element-count limit was exceeded. ``limit`` names the XmlLimits field."""

    def __init__(self, limit: str, reason: str) -> None:
        super().__init__(reason)
        self.limit = limit


_XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_XSD_NS = "http://www.w3.org/2001/XMLSchema"
_SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
_SOAP_ENC_NS = "http://schemas.xmlsoap.org/soap/encoding/"

# Namespaces for prefixes that CPEs use without declaring them. cwmp-1-0 for an undeclared
# "cwmp" prefix is a guess: such agents are old, and the guess only matters if the envelope
# carries no other cwmp namespace.
_WELL_KNOWN_PREFIXES: dict[bytes, bytes] = {
    b"xsi": _XSI_NS.encode(),
    b"xsd": _XSD_NS.encode(),
    b"xs": _XSD_NS.encode(),
    b"cwmp": b"urn:dslforum-org:cwmp-1-0",
}
for _p in (b"soap-env", b"SOAP-ENV", b"soapenv", b"soap", b"soap_env", b"SOAP_ENV", b"env", b"s"):
    _WELL_KNOWN_PREFIXES[_p] = _SOAP_ENV_NS.encode()
for _p in (b"soap-enc", b"SOAP-ENC", b"soapenc", b"soap_enc", b"SOAP_ENC", b"enc"):
    _WELL_KNOWN_PREFIXES[_p] = _SOAP_ENC_NS.encode()

_UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})

# The encoding pseudo-attribute of an XML declaration at the very start of the document.
_DECL_ENCODING = re.compile(rb"""\A(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z][\w.:-]*)["']""")
_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?([^"';,\s]+)""", re.IGNORECASE)

# XML 1.0 forbids C0 controls except TAB, LF, CR, also as character references.
_INVALID_RAW = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_INVALID_UTF8 = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]|\xef\xbf[\xbe\xbf]")
_INVALID_REF = re.compile(
    rb"&#(?:[xX]0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F]|[dD][89a-fA-F][0-9a-fA-F]{2}|[fF]{3}[eEfF])"
    rb"|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]));"
)
_NAME = rb"[A-Za-z_][\w.\-]*"
_USED_PREFIX = re.compile(rb"<\/?(" + _NAME + rb"):|\s(" + _NAME + rb"):" + _NAME + rb"\s*=")
_DECLARED_PREFIX = re.compile(rb"xmlns:(" + _NAME + rb")\s*=")
_ROOT_TAG = re.compile(rb"<(" + _NAME + rb"(?::" + _NAME + rb")?)")

_local = threading.local()


def _parser(encoding: str | None) -> etree.XMLParser:
    """One parser per thread and encoding override: lxml parsers must not be shared across threads."""
    cache: dict[str | None, etree.XMLParser] | None = getattr(_local, "parsers", None)
    if cache is None:
        cache = _local.parsers = {}
    parser = cache.get(encoding)
    if parser is None:
        parser = etree.XMLParser(
            encoding=encoding,
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
        )
        cache[encoding] = parser
    return parser


@lru_cache(maxsize=16)
def _too_deep(max_depth: int) -> etree.XPath:
    # True when an element exists at depth max_depth + 1 (the root is depth 1). Each step
    # visits the elements of one level, so the cost is linear in the size of the tree.
    return etree.XPath("boolean(" + "/*" * (max_depth + 1) + ")")


def charset_from_content_type(content_type: str | None) -> str | None:
    """The ``charset`` parameter of a Content-Type header, quoted or not, lower-cased."""
    if not content_type:
        return None
    match = _CHARSET_PARAM.search(content_type)
    return match.group(1).lower() if match else None


def parse_xml(body: bytes, *, charset: str | None = None, limits: XmlLimits = DEFAULT_LIMITS) -> etree._Element:
    """Parse an untrusted XML body and return its root element.

    ``charset`` is the HTTP charset, used only when the document has no XML declaration
    naming its encoding. Raises a subclass of :class:`XmlRejected`.
    """
    if len(body) > limits.max_bytes:
        raise XmlLimitExceeded("max_bytes", f"body of {len(body)} bytes exceeds {limits.max_bytes}")
    data, override, utf8 = _normalise_encoding(body, charset)
    _reject_markup_declarations(data)
    # Every element needs a "<"; closing tags, comments and PIs make this an over-estimate,
    # so compute the exact-ish count only when the cheap bound is exceeded.
    if data.count(b"<") > limits.max_elements:
        estimate = data.count(b"<") - data.count(b"</") - data.count(b"<?") - data.count(b"<!")
        if estimate > limits.max_elements:
            raise XmlLimitExceeded("max_elements", f"more than {limits.max_elements} elements")
    root = _parse_with_repairs(data, override, utf8)
    if _too_deep(limits.max_depth)(root):
        raise XmlLimitExceeded("max_depth", f"nesting deeper than {limits.max_depth} elements")
    return root


def _normalise_encoding(body: bytes, charset: str | None) -> tuple[bytes, str | None, bool]:
    """Return (bytes for lxml, encoding override for the parser, whether the bytes are UTF-8).

    The result is always ASCII-compatible, so that the byte-level checks that follow are sound.
    """
    wide = _wide_codecs(body[:4])
    if wide:
        # UTF-16/32 (with a BOM, or "<\0?\0" style without): transcode, and override the
        # declaration, which would otherwise still name the wide encoding.
        for codec in wide:
            try:
                return body.decode(codec).encode("utf-8"), "utf-8", True
            except UnicodeDecodeError:
                continue
        raise XmlSyntaxError("undecodable UTF-16/32 body")
    match = _DECL_ENCODING.match(body)
    if match is not None:
        declared = match.group(1).decode("ascii").lower()
        if declared in _UTF8_NAMES:
            return body, "utf-8", True
        if declared.startswith(("utf-16", "utf-32", "ucs")):
            raise XmlSyntaxError(f"declared encoding {declared} does not match the bytes")
        # lxml (libiconv) honours the declaration itself, e.g. ISO-8859-1.
        return body, None, False
    if charset and charset not in _UTF8_NAMES:
        try:
            text = body.decode(charset, errors="replace")
        except LookupError:
            raise XmlSyntaxError(f"unknown charset {charset!r}") from None
        return text.encode("utf-8"), "utf-8", True
    return body, None, True


def _wide_codecs(head: bytes) -> tuple[str, ...]:
    """Candidate codecs when the first bytes show a UTF-16/32 document, else ()."""
    if head in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        return ("utf-32", "utf-16")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ("utf-16",)
    if len(head) == 4 and head[1] == 0 and head[0] != 0:
        return ("utf-16-le",)
    if len(head) == 4 and head[0] == 0 and head[1] != 0:
        return ("utf-16-be",)
    return ()


def _reject_markup_declarations(data: bytes) -> None:
    """Scan the prolog (XML declaration, PIs, comments) and refuse any ``<!`` declaration."""
    pos = 0
    while True:
        start = data.find(b"<", pos)
        if start < 0:
            return
        marker = data[start + 1 : start + 2]
        if marker == b"?":
            end = data.find(b"?>", start + 2)
            if end < 0:
                return
            pos = end + 2
        elif marker == b"!":
            if not data.startswith(b"<!--", start):
                raise XmlForbidden("DTDs and entity declarations are not accepted")
            end = data.find(b"-->", start + 4)
            if end < 0:
                return
            pos = end + 3
        else:
            return


def _parse_with_repairs(data: bytes, override: str | None, utf8: bool) -> etree._Element:
    repairs = [_strip_invalid_chars, _declare_missing_prefixes, _reinterpret_as_latin1]
    first_error: etree.XMLSyntaxError | None = None
    while True:
        try:
            return etree.fromstring(data, _parser(override))
        except etree.XMLSyntaxError as exc:
            first_error = first_error or exc
        except ValueError as exc:  # e.g. lxml refusing an unknown declared encoding
            raise XmlSyntaxError(str(exc)) from exc
        while repairs:
            repaired = repairs.pop(0)(data, utf8)
            if repaired is not None:
                data, override, utf8 = repaired
                break
        else:
            if "Excessive depth" in str(first_error):  # libxml2's own hard limit (256 without huge_tree)
                raise XmlLimitExceeded("max_depth", str(first_error)) from first_error
            raise XmlSyntaxError(str(first_error)) from first_error


_Repair = tuple[bytes, str | None, bool]


def _strip_invalid_chars(data: bytes, utf8: bool) -> _Repair | None:
    raw = _INVALID_UTF8 if utf8 else _INVALID_RAW
    cleaned = raw.sub(b"", data)
    if b"&#" in cleaned:
        cleaned = _INVALID_REF.sub(b"", cleaned)
    if cleaned == data:
        return None
    return cleaned, "utf-8" if utf8 else None, utf8


def _declare_missing_prefixes(data: bytes, utf8: bool) -> _Repair | None:
    used = {m.group(1) or m.group(2) for m in _USED_PREFIX.finditer(data)}
    missing = used - set(_DECLARED_PREFIX.findall(data)) - {b"xml", b"xmlns"}
    if not missing:
        return None
    pos = 0
    while True:  # find the root start tag, skipping the prolog
        start = data.find(b"<", pos)
        if start < 0:
            return None
        if data[start + 1 : start + 2] in (b"?", b"!"):
            pos = start + 2
            continue
        root = _ROOT_TAG.match(data, start)
        if root is None:
            return None
        break
    decls = b"".join(
        b' xmlns:%s="%s"' % (p, _WELL_KNOWN_PREFIXES.get(p, b"urn:undeclared-prefix:" + p)) for p in sorted(missing)
    )
    return data[: root.end()] + decls + data[root.end() :], "utf-8" if utf8 else None, utf8


def _reinterpret_as_latin1(data: bytes, utf8: bool) -> _Repair | None:
    if not utf8:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("iso-8859-1").encode("utf-8"), "utf-8", True
    return None
