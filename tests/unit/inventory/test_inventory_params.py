"""Parameter name encoding, typed values and RPC payload parsing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.inventory.params import (
    ReadName,
    ReadValue,
    decode_name,
    encode_name,
    names_from_rpc,
    normalise_type,
    stored_value,
    suffix_of,
    text_value,
    values_from_rpc,
)


def test_encoding_replaces_dots_and_escapes_what_mongodb_would_misread() -> None:
    assert encode_name("Device.DeviceInfo.SoftwareVersion") == "Device:DeviceInfo:SoftwareVersion"
    assert encode_name("Device.WANDevice.1.") == "Device:WANDevice:1:"
    assert encode_name("$where.x:y%z") == "%24where:x%3Ay%25z"


@given(st.text(min_size=1, max_size=60))
def test_encoding_is_reversible_and_safe_for_any_name(name: str) -> None:
    key = encode_name(name)
    assert decode_name(key) == name
    assert "." not in key and "\x00" not in key and not key.startswith("$")


@given(st.text(max_size=20), st.text(max_size=20))
def test_encoding_preserves_prefixes(prefix: str, rest: str) -> None:
    assert encode_name(prefix + rest).startswith(encode_name(prefix))


def test_values_are_stored_typed_by_xsi_type() -> None:
    assert stored_value("42", "xsd:unsignedInt") == 42
    assert stored_value(" -7 ", "xsd:int") == -7
    assert stored_value("1", "xsd:boolean") is True
    assert stored_value("FALSE", "xsd:boolean") is False
    assert stored_value("abc", "xsd:int") == "abc"  # unparsable: kept as sent
    assert stored_value(str(2**64), "xsd:unsignedLong") == str(2**64)  # beyond BSON int64
    assert stored_value("1", "xsd:string") == "1"
    assert stored_value("2025-01-01T00:00:00Z", "xsd:dateTime") == "2025-01-01T00:00:00Z"


def test_types_are_normalised_whatever_prefix_the_cpe_used() -> None:
    assert normalise_type(None) == "xsd:string"
    assert normalise_type("int") == "xsd:int"
    assert normalise_type("xs:boolean") == "xsd:boolean"
    assert normalise_type("xsd:unsignedInt") == "xsd:unsignedInt"


def test_text_value_is_the_canonical_xsd_spelling() -> None:
    assert text_value(True) == "true"
    assert text_value(5) == "5"
    assert text_value("x") == "x"
    assert text_value(None) is None


def test_suffix_of_strips_either_data_model_root() -> None:
    assert suffix_of("Device.DeviceInfo.SoftwareVersion") == "DeviceInfo.SoftwareVersion"
    assert suffix_of("InternetGatewayDevice.DeviceInfo.SoftwareVersion") == "DeviceInfo.SoftwareVersion"
    assert suffix_of("Other.DeviceInfo.SoftwareVersion") is None


def test_gpv_response_accepts_nested_and_flat_items_and_counts_bad_ones() -> None:
    rpc = {"method": "GetParameterValuesResponse", "parameter_list": [
        {"name": "Device.A", "value": {"value": "3", "type": "xsd:int"}},
        {"name": "Device.B", "value": "on", "type": "xsd:string"},
        {"name": "Device.C", "value": "1", "type": "xsd:boolean"},
        {"name": "Device.D"},  # no value: an empty string, as the CPE sent <Value/>
        {"value": "no name"},
        "not an object",
        {"name": "Device.E", "value": ["a", "list"]},
    ]}
    values, skipped = values_from_rpc(rpc)
    assert values == [ReadValue("Device.A", 3, "xsd:int"), ReadValue("Device.B", "on", "xsd:string"),
                      ReadValue("Device.C", True, "xsd:boolean"), ReadValue("Device.D", "", "xsd:string")]
    assert skipped == 3


def test_gpv_response_without_a_list_yields_nothing() -> None:
    assert values_from_rpc({"method": "GetParameterValuesResponse"}) == ([], 0)
    assert values_from_rpc({"parameter_list": "oops"}) == ([], 0)


def test_gpn_response_reads_writable_flags_in_several_spellings() -> None:
    names, skipped = names_from_rpc({"parameter_list": [
        {"name": "Device.WiFi.", "writable": False},
        {"name": "Device.WiFi.SSID.1.SSID", "writable": "1"},
        {"name": "Device.X", "writable": "maybe"},
        {"name": ""},
    ]})
    assert names == [ReadName("Device.WiFi.", False), ReadName("Device.WiFi.SSID.1.SSID", True),
                     ReadName("Device.X", None)]
    assert skipped == 1


def test_the_codec_rpc_to_dict_format_is_understood() -> None:
    from cwmp import models

    gpv = models.GetParameterValuesResponse(parameter_list=(
        models.ParameterValueStruct(name="Device.X.Count", value=models.ParameterValue("7", "xsd:int")),))
    assert values_from_rpc(models.rpc_to_dict(gpv)) == ([ReadValue("Device.X.Count", 7, "xsd:int")], 0)
    gpn = models.GetParameterNamesResponse(parameter_list=(
        models.ParameterInfoStruct(name="Device.X.", writable=True),))
    assert names_from_rpc(models.rpc_to_dict(gpn)) == ([ReadName("Device.X.", True)], 0)
