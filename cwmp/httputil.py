"""Tolerant HTTP helpers for the CWMP gateway, and the device id convention. No I/O.

CPE HTTP stacks are old, small and often wrong: cookies come back in RFC 2965 form with
``$Version``/``$Path`` attributes and the same cookie repeated, Content-Type is text/html or
missing, empty POSTs carry a Content-Type or a chunked zero-length body (checklist Q6-Q8). The
parsers here accept all of that and never raise on header input.

The device id is ``OUI-ProductClass-SerialNumber`` (``OUI-SerialNumber`` without a product
class), each component percent-encoded like GenieACS does, so ids are the same as in a GenieACS
database and ``-`` can only ever be the separator.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "SOAP_CONTENT_TYPES",
    "ContentType",
    "DeviceIdParts",
    "decode_component",
    "encode_component",
    "format_set_cookie",
    "is_empty_body",
    "make_device_id",
    "parse_content_type",
    "parse_cookie_header",
    "parse_device_id",
    "username_matches_device",
]


# --------------------------------------------------------------------------------------------
# Cookies
# --------------------------------------------------------------------------------------------


def _read_cookie_value(text: str, pos: int) -> tuple[str, int]:
    """Value starting at ``pos``: a quoted string (escapes honoured) or raw text up to ; or ,."""
    n = len(text)
    if pos < n and text[pos] == '"':
        out: list[str] = []
        i = pos + 1
        while i < n:
            ch = text[i]
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                i += 1
                # Anything glued to the closing quote (a="x"y) is junk; skip to the separator.
                while i < n and text[i] not in ";,":
                    i += 1
                return "".join(out), i
            out.append(ch)
            i += 1
        # Unterminated quote: keep what we have rather than dropping the cookie.
        return "".join(out), n
    end = pos
    while end < n and text[end] not in ";,":
        end += 1
    return text[pos:end].strip(), end


def parse_cookie_header(header: str | None) -> dict[str, str]:
    """Cookie name -> value from a ``Cookie`` request header.

    Accepts ``;`` and ``,`` as separators (RFC 2965 and broken CPEs), quoted values, and drops
    RFC 2965 attributes (``$Version``, ``$Path``, ``$Domain``, ``$Port``). When a name repeats
    (one CPE in the wild appends the session cookie again on every request) the first one wins.
    Pairs without ``=`` are ignored. Names are case-sensitive.
    """
    cookies: dict[str, str] = {}
    if not header:
        return cookies
    text = header
    n = len(text)
    pos = 0
    while pos < n:
        while pos < n and text[pos] in " \t;,":
            pos += 1
        if pos >= n:
            break
        start = pos
        while pos < n and text[pos] not in "=;,":
            pos += 1
        name = text[start:pos].strip()
        if pos >= n or text[pos] != "=":
            continue  # a bare token, not a pair
        pos += 1
        while pos < n and text[pos] in " \t":
            pos += 1
        value, pos = _read_cookie_value(text, pos)
        if not name or name.startswith("$"):
            continue
        cookies.setdefault(name, value)
    return cookies


def _cookie_value_ok(value: str) -> bool:
    # RFC 6265 cookie-octet: visible ASCII except DQUOTE, comma, semicolon and backslash.
    return all(0x21 <= ord(ch) <= 0x7E and ch not in '",;\\' for ch in value)


def format_set_cookie(
    name: str,
    value: str,
    *,
    path: str = "/",
    max_age: int | None = None,
    http_only: bool = True,
    secure: bool = False,
    same_site: str | None = None,
) -> str:
    """A ``Set-Cookie`` value. ``Path=/`` by default: CPEs that post to another path of the same
    ACS must still send the session cookie back (genieacs#79).
    """
    if not name or not _cookie_value_ok(name) or "=" in name:
        raise ValueError(f"invalid cookie name {name!r}")
    if not _cookie_value_ok(value):
        raise ValueError(
            "cookie value must be visible ASCII without quotes, commas, semicolons or backslashes"
        )
    parts = [f"{name}={value}"]
    if path:
        if any(ch in path for ch in ";\r\n"):
            raise ValueError("invalid cookie path")
        parts.append(f"Path={path}")
    if max_age is not None:
        parts.append(f"Max-Age={int(max_age)}")
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    if same_site is not None:
        if same_site not in ("Strict", "Lax", "None"):
            raise ValueError(f"invalid SameSite value {same_site!r}")
        parts.append(f"SameSite={same_site}")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# Content-Type and bodies
# --------------------------------------------------------------------------------------------

#: Media types that CPEs put on SOAP envelopes in practice (checklist Q6): text/xml per the
#: spec, text/html from easycwmp, application/soap+xml and application/xml from others.
SOAP_CONTENT_TYPES: frozenset[str] = frozenset(
    {"text/xml", "application/xml", "application/soap+xml", "text/html"}
)


@dataclass(frozen=True, slots=True)
class ContentType:
    """A parsed Content-Type. ``media_type`` and ``charset`` are lower-cased, None if absent."""

    media_type: str | None
    charset: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_absent(self) -> bool:
        return self.media_type is None

    @property
    def is_soap_compatible(self) -> bool:
        """Whether a body with this type should be parsed as a SOAP envelope.

        An absent Content-Type counts (freeacs#186), so does any ``+xml`` type.
        """
        if self.media_type is None:
            return True
        return self.media_type in SOAP_CONTENT_TYPES or self.media_type.endswith("+xml")

    @property
    def codec(self) -> str | None:
        """Python codec name for ``charset``, or None when absent or unknown to Python."""
        if self.charset is None:
            return None
        try:
            return codecs.lookup(self.charset).name
        except LookupError:
            return None


def _split_params(text: str) -> list[str]:
    """Split on ``;`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch == ";" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote_param(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        i = 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                i += 1
            out.append(inner[i])
            i += 1
        return "".join(out)
    # Tolerate a lone opening or closing quote (charset="utf-8 or charset=utf-8").
    return value.strip('"').strip()


def parse_content_type(header: str | None) -> ContentType:
    """Parse a Content-Type header tolerantly; an absent or blank header gives ``media_type=None``.

    Handles ``text/xml; charset="utf-8"``, ``text/xml;charset=ISO-8859-1``, stray spaces and
    trailing semicolons. A value without ``/`` is kept as the media type as-is (lower-cased).
    """
    if header is None or not header.strip():
        return ContentType(None)
    pieces = _split_params(header)
    media_type = pieces[0].strip().lower() or None
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, sep, value = piece.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            continue
        params.setdefault(name, _unquote_param(value))
    charset = params.get("charset")
    return ContentType(media_type, charset.lower() if charset else None, params)


def is_empty_body(body: bytes | bytearray | memoryview | None) -> bool:
    """True for the CWMP "empty POST": no body, zero bytes, or only whitespace (checklist Q7).

    Some CPEs send CRLF or a few spaces; the check is on bytes so no charset is involved.
    """
    if body is None:
        return True
    return not bytes(body).strip(b" \t\r\n\x0b\x0c")


# --------------------------------------------------------------------------------------------
# Device id and the CPE username convention
# --------------------------------------------------------------------------------------------

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_HEX = frozenset("0123456789abcdefABCDEF")


def encode_component(value: str) -> str:
    """Percent-encode one device id component after UTF-8 conversion.

    Everything except ASCII letters, digits and ``_`` is encoded (upper-case hex), the same set
    GenieACS uses, so ``-`` is unambiguous as the separator and ids match a GenieACS database.
    """
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in value.encode("utf-8"))


def decode_component(value: str) -> str:
    """Reverse of :func:`encode_component`, accepting any case of hex and unencoded characters.

    Raises ValueError for a malformed escape (``%G1``, a trailing ``%4``) or invalid UTF-8.
    """
    out = bytearray()
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == "%":
            pair = value[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise ValueError(f"malformed percent escape {value[i : i + 3]!r} in {value!r}")
            out.append(int(pair, 16))
            i += 3
        else:
            out += ch.encode("utf-8")
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"percent escapes in {value!r} are not valid UTF-8") from exc


@dataclass(frozen=True, slots=True)
class DeviceIdParts:
    oui: str
    product_class: str | None
    serial: str


def make_device_id(oui: str, product_class: str | None, serial: str) -> str:
    """``OUI-ProductClass-SerialNumber``, or ``OUI-SerialNumber`` when the product class is
    empty or None (TR-069 makes ProductClass optional in the id), each part percent-encoded.
    """
    if product_class:
        return f"{encode_component(oui)}-{encode_component(product_class)}-{encode_component(serial)}"
    return f"{encode_component(oui)}-{encode_component(serial)}"


def parse_device_id(device_id: str) -> DeviceIdParts:
    """Split and decode a device id made by :func:`make_device_id`; ValueError if it is not one."""
    pieces = device_id.split("-")
    if len(pieces) == 2:
        return DeviceIdParts(decode_component(pieces[0]), None, decode_component(pieces[1]))
    if len(pieces) == 3:
        product_class = decode_component(pieces[1])
        return DeviceIdParts(decode_component(pieces[0]), product_class or None, decode_component(pieces[2]))
    raise ValueError(f"device id {device_id!r} must have 2 or 3 '-'-separated components")


# Usernames longer than this, or with more hyphens, cannot be a sane OUI-ProductClass-Serial;
# the bounds keep the splitting search below cheap on hostile input.
_MAX_USERNAME = 1024
_MAX_HYPHENS = 64


def _decodes_to(text: str, expected: str, *, fold_case: bool = False) -> bool:
    try:
        decoded = decode_component(text)
    except ValueError:
        return False
    if fold_case:
        return decoded.upper() == expected.upper()
    return decoded == expected


def username_matches_device(username: str, oui: str, product_class: str | None, serial: str) -> bool:
    """Whether a CPE's HTTP username names this device (TR-069 section 3.4.4, checklist A2/S2).

    Accepts ``<OUI>-<ProductClass>-<SerialNumber>`` and ``<OUI>-<SerialNumber>``, with each
    component percent-encoded or not: CPEs rarely encode a ``-`` inside a serial number, so the
    username is split at every possible pair of hyphens and each part is decoded and compared.
    The OUI is compared case-insensitively (it is hex). This answers "could this username belong
    to this device", which is what the impersonation check needs; the password binds the
    username to one device.
    """
    if len(username) > _MAX_USERNAME:
        return False
    hyphens = [i for i, ch in enumerate(username) if ch == "-"]
    if not hyphens or len(hyphens) > _MAX_HYPHENS:
        return False
    pc = product_class or ""
    for first in hyphens:
        if not _decodes_to(username[:first], oui, fold_case=True):
            continue
        rest_start = first + 1
        # Two-part form: OUI-Serial.
        if _decodes_to(username[rest_start:], serial):
            return True
        # Three-part form: OUI-ProductClass-Serial (an empty product class gives "OUI--Serial").
        for second in hyphens:
            if second < rest_start:
                continue
            if _decodes_to(username[rest_start:second], pc) and _decodes_to(username[second + 1 :], serial):
                return True
    return False
