"""Range, If-Range, If-None-Match and If-Modified-Since as the download endpoint applies them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.fileserver.ranges import (
    ByteRange,
    RangeNotSatisfiable,
    ResponsePlan,
    http_date,
    make_etag,
    parse_range,
    plan_response,
)

SIZE = 1000
ETAG = make_etag("ab" * 32)
MODIFIED = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-99", ByteRange(0, 99)),
    ("bytes=900-", ByteRange(900, 999)),
    ("bytes=-100", ByteRange(900, 999)),
    ("bytes=-5000", ByteRange(0, 999)),
    ("bytes=990-5000", ByteRange(990, 999)),
    ("BYTES = 10 - 19", ByteRange(10, 19)),
    ("bytes=999-999", ByteRange(999, 999)),
    ("bytes=2000-3000, 5-9", ByteRange(5, 9)),  # unsatisfiable parts are dropped
    # Positions beyond any file (5,000 digits): clamped as RFC 9110 says, never int()-ed.
    ("bytes=0-" + "9" * 5000, ByteRange(0, 999)),
    ("bytes=-" + "9" * 5000, ByteRange(0, 999)),
    ("bytes=" + "0" * 5000 + "7-8", ByteRange(7, 8)),  # leading zeros are only zeros
])
def test_fileserver_satisfiable_ranges(header: str, expected: ByteRange) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize("header", [
    "items=0-1", "bytes", "bytes=", "bytes=a-b", "bytes=-", "bytes=9-3", "bytes=0-1,2-3",
    "bytes=" + ",".join(["0-1"] * 17),
    "bytes=" + "9" * 5000 + "-5",  # last before first: invalid, ignored
    "bytes=\u0661-\u0662",  # Arabic-Indic digits are not HTTP digits
])
def test_fileserver_ranges_we_ignore_and_serve_whole(header: str) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize(("header", "size"), [("bytes=1000-", SIZE), ("bytes=-0", SIZE), ("bytes=0-", 0),
                                              ("bytes=1000-1001,2000-", SIZE), ("bytes=" + "9" * 5000 + "-", SIZE),
                                              ("bytes=18446744073709551616-", SIZE)])
def test_fileserver_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def plan(headers: dict[str, str], size: int = SIZE) -> ResponsePlan:
    return plan_response(headers, size=size, etag=ETAG, last_modified=MODIFIED,
                         content_type="application/x-fw")


def test_fileserver_plain_get_is_the_whole_file_with_validators() -> None:
    result = plan({})
    assert (result.status, result.byte_range, result.body_length) == (200, ByteRange(0, 999), SIZE)
    assert result.headers == {"etag": ETAG, "last-modified": "Wed, 01 May 2024 12:30:15 GMT",
                              "accept-ranges": "bytes", "cache-control": "private",
                              "content-type": "application/x-fw", "content-length": "1000"}


def test_fileserver_range_gives_206_and_content_range() -> None:
    result = plan({"range": "bytes=100-199"})
    assert (result.status, result.headers["content-range"], result.headers["content-length"]) == \
        (206, "bytes 100-199/1000", "100")


def test_fileserver_unsatisfiable_range_gives_416_with_size() -> None:
    result = plan({"range": "bytes=5000-"})
    assert (result.status, result.headers["content-range"], result.byte_range) == (416, "bytes */1000", None)


def test_fileserver_if_range_decides_between_fragment_and_whole() -> None:
    assert plan({"range": "bytes=0-9", "if-range": ETAG}).status == 206
    assert plan({"range": "bytes=0-9", "if-range": http_date(MODIFIED)}).status == 206
    assert plan({"range": "bytes=0-9", "if-range": '"other"'}).status == 200
    assert plan({"range": "bytes=0-9", "if-range": "W/" + ETAG}).status == 200  # weak never matches
    earlier = http_date(MODIFIED - timedelta(seconds=1))
    assert plan({"range": "bytes=0-9", "if-range": earlier}).status == 200


def test_fileserver_conditional_get_gives_304() -> None:
    assert plan({"if-none-match": ETAG}).status == 304
    assert plan({"if-none-match": f'"x", W/{ETAG}'}).status == 304
    assert plan({"if-none-match": "*"}).status == 304
    assert plan({"if-none-match": '"x"'}).status == 200
    assert plan({"if-modified-since": http_date(MODIFIED)}).status == 304
    assert plan({"if-modified-since": http_date(MODIFIED - timedelta(days=1))}).status == 200
    assert plan({"if-modified-since": "garbage"}).status == 200
    # If-None-Match takes precedence over If-Modified-Since.
    assert plan({"if-none-match": '"x"', "if-modified-since": http_date(MODIFIED)}).status == 200


def test_fileserver_empty_file_has_no_body_and_no_ranges() -> None:
    empty = plan({}, size=0)
    assert (empty.status, empty.byte_range, empty.headers["content-length"]) == (200, None, "0")
    assert plan({"range": "bytes=0-"}, size=0).status == 416
