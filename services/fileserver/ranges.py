"""HTTP semantics of a file download, as pure functions: Range, If-Range, If-None-Match.

No I/O here, so every rule is tested directly (tests/unit/fileserver). The download endpoint
asks :func:`plan_response` what to send and then streams exactly that. Only single byte ranges
are served: that is what CPEs resuming a firmware download send; a multi-range request gets the
whole file, which RFC 9110 section 14.2 allows ("a server MAY ignore the Range header").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

_RANGE_SPEC_RE = re.compile(r"^\s*([0-9]*)\s*-\s*([0-9]*)\s*$")
# A header with thousands of ranges is an attack (RFC 9110 section 14.2), not a CPE.
_MAX_RANGES = 16
# Positions beyond any file: a number with more digits than this (leading zeros aside) is taken
# as "past the end" without converting it (int() of 5,000 digits raises, and costs time).
_MAX_POSITION_DIGITS = 18
_BEYOND_ANY_FILE = 10**_MAX_POSITION_DIGITS


def _position(digits: str) -> int:
    """A byte position or suffix length from the header: exact up to 18 digits, else a value
    larger than any file, which the range rules then clamp (last, suffix) or find unsatisfiable
    (first), as RFC 9110 14.1.1 says for positions beyond the representation."""
    significant = digits.lstrip("0")
    if len(significant) > _MAX_POSITION_DIGITS:
        return _BEYOND_ANY_FILE
    return int(significant or "0")


class RangeNotSatisfiable(Exception):
    """Every range in the request starts beyond the end of the file: answer 416."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive, as on the wire

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range to serve, or None to serve the whole file.

    Raises :class:`RangeNotSatisfiable` when the header is valid but no range overlaps the file.
    A header we cannot parse is ignored (None), as RFC 9110 lets a server do.
    """
    if header is None:
        return None
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = specs.split(",")
    if len(parts) > _MAX_RANGES:
        return None
    ranges: list[ByteRange] = []
    any_valid = False
    for part in parts:
        match = _RANGE_SPEC_RE.match(part)
        if match is None:
            return None
        first, last = match.groups()
        if first == "" and last == "":
            return None
        any_valid = True
        if first == "":
            # Suffix range: the last N bytes. "-0" asks for nothing and so is unsatisfiable.
            suffix = _position(last)
            if suffix == 0 or size == 0:
                continue
            ranges.append(ByteRange(max(0, size - suffix), size - 1))
            continue
        start = _position(first)
        if last and _position(last) < start:
            return None  # syntactically invalid (RFC 9110 14.1.1): ignore the header
        if start >= size:
            continue
        end = min(_position(last), size - 1) if last else size - 1
        ranges.append(ByteRange(start, end))
    if not any_valid:
        return None
    if not ranges:
        raise RangeNotSatisfiable
    if len(ranges) > 1:
        return None
    return ranges[0]


def make_etag(sha256_hex: str) -> str:
    """A strong ETag from the content hash: equal bytes, equal tag, on every instance."""
    return f'"{sha256_hex}"'


def http_date(moment: datetime) -> str:
    # email.utils insists on datetime.UTC itself, not merely an equal zone (pymongo's utc).
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def _parse_http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _etag_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _weak_match(a: str, b: str) -> bool:
    return a.removeprefix("W/") == b.removeprefix("W/")


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """What to answer: status, headers, and which bytes of the file to stream (None: none)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    byte_range: ByteRange | None = None

    @property
    def body_length(self) -> int:
        return self.byte_range.length if self.byte_range is not None else 0


def plan_response(request_headers: dict[str, str], *, size: int, etag: str, last_modified: datetime,
                  content_type: str) -> ResponsePlan:
    """Apply RFC 9110's conditional and range rules to a GET or HEAD of a whole file.

    ``request_headers`` has lower-case names. The caller sends the body only for GET.
    """
    modified = last_modified.replace(microsecond=0)
    common = {"etag": etag, "last-modified": http_date(modified), "accept-ranges": "bytes",
              # Authenticated per CPE: shared caches must not keep a copy.
              "cache-control": "private"}

    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
    if_none_match = request_headers.get("if-none-match")
    if if_none_match is not None:
        tags = _etag_list(if_none_match)
        if "*" in tags or any(_weak_match(tag, etag) for tag in tags):
            return ResponsePlan(304, common)
    elif (since := request_headers.get("if-modified-since")) is not None:
        since_date = _parse_http_date(since)
        if since_date is not None and modified <= since_date:
            return ResponsePlan(304, common)

    whole = ByteRange(0, size - 1) if size > 0 else None
    full = ResponsePlan(200, {**common, "content-type": content_type, "content-length": str(size)}, whole)
    range_header = request_headers.get("range")
    if range_header is None:
        return full
    if_range = request_headers.get("if-range")
    if if_range is not None and not _if_range_holds(if_range.strip(), etag, modified):
        # The client holds another version: a fragment of this one would corrupt its copy.
        return full
    try:
        wanted = parse_range(range_header, size)
    except RangeNotSatisfiable:
        return ResponsePlan(416, {**common, "content-range": f"bytes */{size}", "content-length": "0"})
    if wanted is None:
        return full
    return ResponsePlan(206, {**common, "content-type": content_type, "content-length": str(wanted.length),
                              "content-range": wanted.content_range(size)}, wanted)


def _if_range_holds(value: str, etag: str, modified: datetime) -> bool:
    if value.startswith('"') or value.startswith("W/"):
        # If-Range needs the strong comparison (RFC 9110 13.1.5): a weak tag never matches.
        return value == etag
    date = _parse_http_date(value)
    return date is not None and date == modified
