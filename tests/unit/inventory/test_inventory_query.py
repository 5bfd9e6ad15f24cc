"""The device query language: what compiles, to what, and what is refused with which message."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.inventory.query import (
    FULL,
    SUMMARY,
    QueryError,
    Sort,
    cursor_filter,
    encode_cursor,
    parse_fields,
    parse_query,
    parse_sort,
)

SV = "params.Device:DeviceInfo:SoftwareVersion"


def q(query: object) -> dict:
    return parse_query(json.dumps(query))


def test_no_query_matches_every_device() -> None:
    assert parse_query(None) == {}
    assert parse_query("  ") == {}
    assert q({}) == {}


def test_scalar_on_a_device_field_is_equality() -> None:
    assert q({"serial_number": "ABC"}) == {"serial_number": {"$eq": "ABC"}}
    assert q({"id": "00259E-Box-1"}) == {"_id": {"$eq": "00259E-Box-1"}}
    assert q({"tags": "lab"}) == {"tags": {"$eq": "lab"}}


def test_several_conditions_are_anded() -> None:
    assert q({"oui": "00259E", "product_class": "Box"}) == {
        "$and": [{"oui": {"$eq": "00259E"}}, {"product_class": {"$eq": "Box"}}]}


def test_parameters_compile_to_their_encoded_value_path() -> None:
    assert q({"Device.DeviceInfo.SoftwareVersion": {"$eq": "1.0"}}) == {f"{SV}.v": {"$eq": "1.0"}}
    assert q({"Device.DeviceInfo.SoftwareVersion": {"$exists": False}}) == {SV: {"$exists": False}}


def test_parameter_equality_matches_typed_and_text_forms() -> None:
    assert q({"Device.X.Count": 5}) == {"params.Device:X:Count.v": {"$in": [5, "5"]}}
    assert q({"Device.X.Count": "5"}) == {"params.Device:X:Count.v": {"$in": ["5", 5]}}
    assert q({"Device.X.On": True}) == {"params.Device:X:On.v": {"$in": [True, "true", "1"]}}
    assert q({"Device.X.On": {"$ne": "false"}}) == {"params.Device:X:On.v": {"$nin": ["false", False]}}
    assert q({"Device.X.Count": {"$in": [1, "1", 2]}}) == {
        "params.Device:X:Count.v": {"$in": [1, "1", 2, "2"]}}


def test_ranges_on_parameters_and_dates() -> None:
    assert q({"Device.X.Uptime": {"$gte": 10, "$lt": 20.5}}) == {"$and": [
        {"params.Device:X:Uptime.v": {"$gte": 10}}, {"params.Device:X:Uptime.v": {"$lt": 20.5}}]}
    assert q({"last_inform": {"$gt": "2025-01-31T12:00:00Z"}}) == {
        "last_inform": {"$gt": datetime(2025, 1, 31, 12, tzinfo=UTC)}}
    # A date-time without zone is read as UTC, the zone MongoDB stores.
    assert q({"first_seen": {"$lte": "2025-01-31T12:00:00"}}) == {
        "first_seen": {"$lte": datetime(2025, 1, 31, 12, tzinfo=UTC)}}


def test_prefix_is_an_index_range_not_a_regex() -> None:
    assert q({"software_version": {"$prefix": "2.1"}}) == {"software_version": {"$gte": "2.1", "$lt": "2.2"}}
    assert q({"Device.DeviceInfo.SoftwareVersion": {"$prefix": "a.*"}}) == {
        f"{SV}.v": {"$gte": "a.*", "$lt": "a.+"}}
    assert q({"serial_number": {"$prefix": ""}}) == {"serial_number": {"$type": "string"}}
    assert q({"serial_number": {"$prefix": "a\U0010ffff"}}) == {"serial_number": {"$gte": "a\U0010ffff",
                                                                                "$lt": "b"}}


def test_and_or_nest() -> None:
    assert q({"$or": [{"tags": "lab"}, {"$and": [{"oui": "A"}, {"software_version": "1"}]}]}) == {
        "$or": [{"tags": {"$eq": "lab"}},
                {"$and": [{"oui": {"$eq": "A"}}, {"software_version": {"$eq": "1"}}]}]}


def test_objects_can_be_tested_for_existence_only() -> None:
    assert q({"Device.WiFi.SSID.2.": {"$exists": True}}) == {"params.Device:WiFi:SSID:2:": {"$exists": True}}
    with pytest.raises(QueryError, match=r"only be tested with \$exists"):
        q({"Device.WiFi.SSID.2.": "x"})


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", r"q: not valid JSON"),
    ('["serial_number"]', r"q: expected a JSON object of conditions, got a list"),
    ('{"serial_number": "a", "serial_number": "b"}', r"key 'serial_number' appears twice"),
    ('{"Device.X": NaN}', r"NaN is not allowed"),
    ('{"$where": "sleep(1000)"}', r"q: unknown operator '\$where' in place of a field"),
    ('{"$expr": {"$eq": [1, 1]}}', r"unknown operator '\$expr'"),
    ('{"$nor": [{}]}', r"unknown operator '\$nor'"),
    ('{"serial_number": {"$regex": ".*"}}', r"q.serial_number.\$regex: unknown operator '\$regex'"),
    ('{"serial_number": {"$where": "1"}}', r"unknown operator '\$where'"),
    ('{"serial_number": {"$eq": {"$gt": ""}}}', r"q.serial_number.\$eq: expected a string, got an object"),
    ('{"Device.X": {"$eq": {"$ne": 1}}}', r"expected a string, number or boolean, got an object"),
    ('{"Device.X": {"$in": [{"$gt": 1}]}}', r"q.Device.X.\$in\[0\]: expected a string, number or boolean"),
    ('{"serial_number": {"nested": 1}}', r"unknown operator 'nested'.*keys of an object"),
    ('{"params.Device:X.v": 1}', r"unknown field 'params.Device:X.v'"),
    ('{"applied": "x"}', r"unknown field 'applied'"),
    ('{"Device.X$y": 1}', r"unknown field"),
    ('{"tags": ["a", "b"]}', r"a list is not a value; use \{\"\$in\""),
    ('{"serial_number": {}}', r"empty operator object"),
    ('{"serial_number": null}', r"expected a string, got null"),
    ('{"serial_number": 5}', r"expected a string, got a number"),
    ('{"inform_interval": "5"}', r"expected an integer"),
    ('{"last_inform": {"$gt": "yesterday"}}', r"'yesterday' is not an ISO 8601 date-time"),
    ('{"last_inform": {"$prefix": "2025"}}', r"\$prefix applies to text, not to a date field"),
    ('{"Device.X": {"$gt": true}}', r"\$gt compares numbers, text or dates, not booleans"),
    ('{"Device.X": {"$exists": "yes"}}', r"expected true or false"),
    ('{"Device.X": {"$in": []}}', r"expected a non-empty list"),
    ('{"$or": []}', r"q.\$or: expected a non-empty list of queries"),
    ('{"$or": {"tags": "a"}}', r"expected a non-empty list of queries"),
    ('{"$or": ["tags"]}', r"q.\$or\[0\]: expected a JSON object"),
])
def test_invalid_queries_are_refused_with_a_precise_message(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(text)


def test_size_limits() -> None:
    with pytest.raises(QueryError, match="longer than"):
        parse_query(json.dumps({"serial_number": "x" * 9000}))
    with pytest.raises(QueryError, match="nested more than 4 deep"):
        q({"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"tags": "a"}]}]}]}]}]})
    with pytest.raises(QueryError, match="more than 100 conditions"):
        q({"$and": [{"tags": str(i)} for i in range(60)] + [{"$and": [{"tags": str(i)} for i in range(60)]}]})
    with pytest.raises(QueryError, match="more than 1000 values"):
        q({"serial_number": {"$in": [str(i) for i in range(1001)]}})
    with pytest.raises(QueryError, match="nested too deeply"):
        parse_query("[" * 4000 + "]" * 4000)


def test_fields_projection() -> None:
    assert parse_fields(None, SUMMARY) is SUMMARY
    projection = parse_fields("serial_number, Device.DeviceInfo.SoftwareVersion,id", SUMMARY)
    assert projection.mongo() == {"_id": 1, "serial_number": 1, SV: 1}
    assert FULL.mongo()["params"] == 1
    subtree = parse_fields("Device.WiFi.,Device.DeviceInfo.SoftwareVersion", SUMMARY).mongo()
    assert set(subtree) == {"_id", "params"}
    assert subtree["params"]["$arrayToObject"]["$filter"]["cond"]["$or"] == [
        {"$eq": [{"$indexOfBytes": ["$$p.k", {"$literal": "Device:WiFi:"}]}, 0]},
        {"$in": ["$$p.k", {"$literal": ["Device:DeviceInfo:SoftwareVersion"]}]}]
    with pytest.raises(QueryError, match="'applied' is neither a device field"):
        parse_fields("applied", SUMMARY)


def test_sort_is_limited_to_indexed_always_present_fields() -> None:
    assert parse_sort(None) == Sort("id")
    assert parse_sort("-last_inform").mongo() == [("last_inform", -1), ("_id", -1)]
    assert parse_sort("id").mongo() == [("_id", 1)]
    with pytest.raises(QueryError, match="'manufacturer' is not sortable"):
        parse_sort("manufacturer")


def test_cursor_round_trip_selects_what_follows_in_sort_order() -> None:
    when = datetime(2025, 3, 1, tzinfo=UTC)
    sort = parse_sort("-last_inform")
    cursor = encode_cursor(sort, {"_id": "dev-9", "last_inform": when})
    assert cursor_filter(sort, cursor) == {"$or": [
        {"last_inform": {"$lt": when}}, {"last_inform": {"$eq": when}, "_id": {"$lt": "dev-9"}}]}
    by_id = parse_sort(None)
    assert cursor_filter(by_id, encode_cursor(by_id, {"_id": "dev-9"})) == {"_id": {"$gt": "dev-9"}}


def test_cursors_cannot_be_forged_or_reused_with_another_sort() -> None:
    sort = parse_sort("serial_number")
    cursor = encode_cursor(sort, {"_id": "d", "serial_number": "S1"})
    with pytest.raises(QueryError, match="made for sort='serial_number'"):
        cursor_filter(parse_sort("software_version"), cursor)
    with pytest.raises(QueryError, match="not a cursor"):
        cursor_filter(sort, "%%%")
    import base64

    forged = base64.urlsafe_b64encode(json.dumps(
        {"s": "serial_number", "v": {"$where": "1"}, "i": "d"}).encode()).decode()
    with pytest.raises(QueryError, match="not a cursor"):
        cursor_filter(sort, forged)
    forged_id = base64.urlsafe_b64encode(json.dumps({"s": "id", "i": {"$gt": ""}}).encode()).decode()
    with pytest.raises(QueryError, match="not a cursor"):
        cursor_filter(parse_sort("id"), forged_id)


def test_a_relative_name_means_either_root() -> None:
    igd, dev = "params.InternetGatewayDevice:DeviceInfo:SoftwareVersion", "params.Device:DeviceInfo:SoftwareVersion"
    assert q({"DeviceInfo.SoftwareVersion": {"$lt": "2"}}) == {
        "$or": [{f"{dev}.v": {"$lt": "2"}}, {f"{igd}.v": {"$lt": "2"}}]}
    # Negative conditions must hold under both roots: the device has one, the other is absent.
    assert q({"DeviceInfo.SoftwareVersion": {"$ne": "x"}}) == {
        "$and": [{f"{dev}.v": {"$ne": "x"}}, {f"{igd}.v": {"$ne": "x"}}]}
    assert q({"DeviceInfo.SoftwareVersion": {"$exists": False}}) == {
        "$and": [{dev: {"$exists": False}}, {igd: {"$exists": False}}]}


def test_nin_is_the_negation_of_in() -> None:
    assert q({"Device.X.Count": {"$nin": [1, "a"]}}) == {"params.Device:X:Count.v": {"$nin": [1, "1", "a"]}}
    assert q({"tags": {"$nin": ["lab"]}}) == {"tags": {"$nin": ["lab"]}}
