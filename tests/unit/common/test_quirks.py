"""The per-vendor quirks table's pure parts: the model, matching, specificity, ties, transformations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.common.quirks import (
    NameCase,
    QuirkEntry,
    QuirkMatch,
    Quirks,
    conflicts,
    matches,
    rename,
    select,
    software_version_of,
)


def entry(name: str, quirks: dict[str, object] | None = None, **match: object) -> QuirkEntry:
    return QuirkEntry(id=name, name=name, match=QuirkMatch.model_validate(match),
                      quirks=Quirks.model_validate(quirks or {"end_session": "200"}))


def test_selectors_exact_prefix_and_comparisons() -> None:
    m = QuirkMatch(oui="00D09E", product_class={"$prefix": "HG5"}, software_version={"$gte": "1.2", "$lt": "2"})
    assert matches(m, "00D09E", "HG532e", "1.9.82")
    assert not matches(m, "00D09F", "HG532e", "1.9.82")  # other OUI
    assert not matches(m, "00D09E", "XG532e", "1.9.82")  # other prefix
    assert not matches(m, "00D09E", "HG532e", "2.0")  # above the bound
    assert not matches(m, "00D09E", "HG532e", "1.1")  # below the bound
    assert not matches(m, "00D09E", "HG532e", None)  # no version known: a version selector cannot match


def test_the_most_specific_entry_wins_alone() -> None:
    vendor = entry("vendor", {"boolean_style": "numeric"}, oui="00D09E")
    model = entry("model", {"end_session": "200"}, oui="00D09E", product_class="HG532e")
    old_fw = entry("old-fw", {"digest_without_qop": True}, oui="00D09E", product_class="HG532e",
                   software_version={"$prefix": "1."})
    table = [vendor, model, old_fw]
    assert select(table, "00D09E", "HG532e", "1.4") is old_fw
    assert select(table, "00D09E", "HG532e", "2.4") is model
    assert select(table, "00D09E", "Other", "1.4") is vendor
    assert select(table, "AAAAAA", "HG532e", "1.4") is None
    # Exact beats prefix beats comparison, for the same number of fields.
    exact = entry("exact", oui="00D09E", software_version="1.4")
    prefix = entry("prefix", oui="00D09E", software_version={"$prefix": "1."})
    compared = entry("compared", oui="00D09E", software_version={"$lt": "2"})
    assert select([compared, prefix, exact], "00D09E", "X", "1.4") is exact
    assert select([compared, prefix], "00D09E", "X", "1.4") is prefix
    # The longer prefix is the more specific.
    longer = entry("longer", oui="00D09E", software_version={"$prefix": "1.4"})
    assert select([prefix, longer], "00D09E", "X", "1.45") is longer


def test_ties_apply_nothing_and_are_found_before_writing() -> None:
    a = entry("a", oui="00D09E", software_version={"$lt": "2"})
    b = entry("b", oui="00D09E", software_version={"$gt": "1"})
    assert select([a, b], "00D09E", "X", "1.5") is None  # both match with the same specificity
    assert select([a, b], "00D09E", "X", "0.5") is a  # only one matches
    assert conflicts(b.match, [a]) == [a]
    # Exact values that differ can never match one device: no tie.
    assert conflicts(QuirkMatch(oui="00D09E", product_class="A"), [entry("c", oui="00D09E", product_class="B")]) == []
    # Nested prefixes of the same length class overlap; disjoint ones do not.
    p1 = entry("p1", oui="00D09E", product_class={"$prefix": "HG"})
    assert conflicts(QuirkMatch(oui="00D09E", product_class={"$prefix": "XG"}), [p1]) == []
    # Different specificity: no tie (the more specific wins).
    assert conflicts(QuirkMatch(oui="00D09E", product_class="HG1"), [p1]) == []
    # An entry never ties with itself (an update).
    assert conflicts(a.match, [a], own_id="a") == []


def test_the_model_refuses_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        Quirks.model_validate({"colour": "red"})
    with pytest.raises(ValidationError):
        Quirks.model_validate({"boolean_style": "yes"})
    with pytest.raises(ValidationError):
        Quirks.model_validate({"max_envelopes": 0})
    with pytest.raises(ValidationError):
        Quirks.model_validate({"parameter_case": {"Foo": "Bar"}})  # more than the case differs
    with pytest.raises(ValidationError):
        Quirks.model_validate({"parameter_case": {"A.b": "A.B"}})  # one segment at a time
    with pytest.raises(ValidationError):
        QuirkMatch.model_validate({})
    with pytest.raises(ValidationError):
        QuirkMatch.model_validate({"oui": {"$regex": "^00"}})
    with pytest.raises(ValidationError):
        QuirkMatch.model_validate({"oui": {"$prefix": "00", "$lt": "1"}})
    assert Quirks.model_validate({"max_envelopes": 5}).active() == {"max_envelopes": 5}


def test_name_case_fixes_both_ways() -> None:
    case = NameCase({"Lanhostconfigmanagement": "LANHostConfigManagement", "softwareVersion": "SoftwareVersion"})
    assert case.to_model("InternetGatewayDevice.Lanhostconfigmanagement.DHCPServerEnable") == \
        "InternetGatewayDevice.LANHostConfigManagement.DHCPServerEnable"
    assert case.to_cpe("InternetGatewayDevice.LANHostConfigManagement.") == \
        "InternetGatewayDevice.Lanhostconfigmanagement."
    response = {"method": "GetParameterValuesResponse", "parameter_list": [
        {"name": "InternetGatewayDevice.DeviceInfo.softwareVersion", "value": {"value": "softwareVersion"}}]}
    fixed = rename(response, case.to_model)
    assert fixed["parameter_list"][0]["name"] == "InternetGatewayDevice.DeviceInfo.SoftwareVersion"
    assert fixed["parameter_list"][0]["value"]["value"] == "softwareVersion"  # values are left alone
    gpv = rename({"method": "GetParameterValues", "parameter_names": ["X.DeviceInfo.SoftwareVersion"]}, case.to_cpe)
    assert gpv["parameter_names"] == ["X.DeviceInfo.softwareVersion"]
    assert rename({"method": "GetParameterNames", "parameter_path": "X.LANHostConfigManagement.",
                   "next_level": True}, case.to_cpe)["parameter_path"] == "X.Lanhostconfigmanagement."


def test_software_version_comes_from_device_info() -> None:
    assert software_version_of([("Device.DeviceInfo.SoftwareVersion", "2.1"), ("Device.X", "y")]) == "2.1"
    assert software_version_of([("InternetGatewayDevice.DeviceInfo.SoftwareVersion", "1.0")]) == "1.0"
    assert software_version_of([("Device.Services.X.DeviceInfo.SoftwareVersion", "9")]) is None
