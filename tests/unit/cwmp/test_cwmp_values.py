"""Typed parameter values and the fault tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cwmp import (
    ACS_FAULTS,
    CPE_FAULTS,
    UNKNOWN_TIME,
    AcsFault,
    BooleanLiteral,
    CpeFault,
    CwmpFault,
    ParameterValue,
    SetParameterValuesFault,
    XsdType,
    canonical_type,
    fault_info,
    format_datetime,
    parse_boolean,
    parse_datetime,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "xsd:string"),
        ("xsd:string", "xsd:string"),
        ("xs:unsignedInt", "xsd:unsignedInt"),
        ("SOAP-ENC:int", "xsd:int"),
        ("unsignedlong", "xsd:unsignedLong"),
        (" xsd:DateTime ", "xsd:dateTime"),
        ("xsd:base64", "xsd:base64"),
        ("xsd:base64Binary", "xsd:base64Binary"),
        ("xsd:HEXBINARY", "xsd:hexBinary"),
        ("cwmp:IPAddress", "xsd:IPAddress"),
        ("", "xsd:string"),
    ],
)
def test_canonical_type(raw: str | None, expected: str) -> None:
    assert canonical_type(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("true", True), ("TRUE", True), (" True\n", True), ("0", False), ("FALSE", False),
     ("yes", None), ("", None), ("2", None)],
)  # fmt: skip
def test_parse_boolean(text: str, expected: bool | None) -> None:
    assert parse_boolean(text) is expected


def test_boolean_values_are_normalised_and_written_per_literal() -> None:
    value = ParameterValue("1", "xsd:boolean")
    assert value == ParameterValue.boolean(True) and value.value == "true"
    assert value.wire_text() == "true" and value.wire_text(BooleanLiteral.ONE_ZERO) == "1"
    assert ParameterValue("False", "xsd:boolean").wire_text(BooleanLiteral.ONE_ZERO) == "0"
    assert ParameterValue("1", "xsd:string").value == "1"  # only booleans are normalised


def test_constructors_and_to_python() -> None:
    assert ParameterValue.string("x") == ParameterValue("x", "xsd:string")
    assert ParameterValue.integer(-5).to_python() == -5
    assert ParameterValue.integer(2**40, XsdType.UNSIGNED_LONG) == ParameterValue(str(2**40), "xsd:unsignedLong")
    with pytest.raises(ValueError, match="out of range"):
        ParameterValue.integer(-1, XsdType.UNSIGNED_INT)
    with pytest.raises(ValueError, match="not an integer type"):
        ParameterValue.integer(1, XsdType.STRING)
    assert ParameterValue.base64(b"\x00\x01").to_python() == b"\x00\x01"
    assert (
        ParameterValue.hex_binary(b"\xab").value == "ab"
        and ParameterValue("AB", "xsd:hexBinary").to_python() == b"\xab"
    )
    assert ParameterValue.boolean(False).to_python() is False
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert ParameterValue.date_time(moment) == ParameterValue("2026-01-02T03:04:05Z", "xsd:dateTime")
    assert ParameterValue.date_time("2026-01-02T03:04:05+01:00").to_python() == moment + timedelta(hours=-1)
    assert ParameterValue(UNKNOWN_TIME, "xsd:dateTime").to_python() is None


def test_to_python_keeps_text_that_does_not_match_its_type() -> None:
    assert ParameterValue("n/a", "xsd:int").to_python() == "n/a"
    assert ParameterValue("maybe", "xsd:boolean").to_python() == "maybe"
    assert ParameterValue("zz", "xsd:hexBinary").to_python() == "zz"
    assert ParameterValue("1.5", "xsd:float").to_python() == "1.5"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T18:34:16+00:00", datetime(2026, 11, 23, 18, 34, 16, tzinfo=UTC)),
        ("2026-11-23T18:25:44.249Z", datetime(2026, 11, 23, 18, 25, 44, 249000, tzinfo=UTC)),
        ("2016-06-01T23:39:09-04:00", datetime(2016, 6, 1, 23, 39, 9, tzinfo=timezone(timedelta(hours=-4)))),
        ("2026-01-01T00:00:00", datetime(2026, 1, 1, tzinfo=UTC)),  # no zone: UTC
        (UNKNOWN_TIME, None),
        ("0001-01-01T00:00:00+00:00", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_parse_datetime(text: str, expected: datetime | None) -> None:
    assert parse_datetime(text) == expected


def test_format_datetime() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert format_datetime(moment) == "2026-01-02T03:04:05Z"  # some CPEs reject milliseconds
    assert format_datetime(moment, milliseconds=True) == "2026-01-02T03:04:05.678Z"
    assert format_datetime(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"
    offset = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert format_datetime(offset) == "2026-01-02T03:04:05+02:00"


def test_fault_tables_are_complete() -> None:
    assert sorted(ACS_FAULTS) == list(range(8000, 8007)) == sorted(AcsFault)
    assert sorted(CPE_FAULTS) == list(range(9000, 9033)) == sorted(CpeFault)
    assert {info.soap_faultcode for info in ACS_FAULTS.values()} == {"Client", "Server"}
    assert fault_info(9005) is not None and fault_info(9005).string == "Invalid parameter name"  # type: ignore[union-attr]
    assert fault_info(9899) is None and fault_info(1) is None


def test_cwmp_fault_is_an_exception_with_a_readable_message() -> None:
    fault = CwmpFault.from_code(9003, set_parameter_values_faults=[SetParameterValuesFault("Device.A", 9007, "")])
    with pytest.raises(CwmpFault) as info:
        raise fault
    assert str(info.value) == "CWMP fault 9003: Invalid arguments (Device.A=9007)"
    assert info.value.args == (9003, "Invalid arguments")
    assert fault == CwmpFault(9003, "Invalid arguments", [SetParameterValuesFault("Device.A", 9007, "")])  # type: ignore[arg-type]
    assert CwmpFault.from_code(8002, "database down").string == "database down"
