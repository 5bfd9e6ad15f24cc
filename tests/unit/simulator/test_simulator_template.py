"""The data-model templates: both files load, have realistic sizes, and bad files are refused."""

from __future__ import annotations

import pytest

from simulator.template import ParamSpec, TableSpec, TemplateError, Token, compile_value, load_template, parse_template


@pytest.mark.parametrize(("name", "root"), [("tr098", "InternetGatewayDevice"), ("tr181", "Device")])
def test_templates_load_with_several_hundred_parameters(name: str, root: str) -> None:
    template = load_template(name)
    assert template.root_name == root
    assert template.parameter_count() >= 400
    types = {node.type for _path, node in template.walk() if isinstance(node, ParamSpec)}
    assert {"xsd:string", "xsd:unsignedInt", "xsd:boolean", "xsd:int", "xsd:dateTime"} <= types
    writable = [path for path, node in template.walk() if isinstance(node, ParamSpec) and node.writable]
    assert len(writable) > 100


def test_tr098_forced_inform_parameters_follow_the_checklist() -> None:
    forced = set(load_template("tr098").forced_inform)
    assert forced == {
        "InternetGatewayDevice.DeviceSummary",
        "InternetGatewayDevice.DeviceInfo.SpecVersion",
        "InternetGatewayDevice.DeviceInfo.HardwareVersion",
        "InternetGatewayDevice.DeviceInfo.SoftwareVersion",
        "InternetGatewayDevice.DeviceInfo.ProvisioningCode",
        "InternetGatewayDevice.ManagementServer.ParameterKey",
        "InternetGatewayDevice.ManagementServer.ConnectionRequestURL",
        "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.ExternalIPAddress",
    }


def test_tr181_forced_inform_parameters_follow_the_checklist() -> None:
    forced = set(load_template("tr181").forced_inform)
    assert forced == {
        "Device.DeviceInfo.HardwareVersion",
        "Device.DeviceInfo.SoftwareVersion",
        "Device.DeviceInfo.ProvisioningCode",
        "Device.ManagementServer.ParameterKey",
        "Device.ManagementServer.ConnectionRequestURL",
        "Device.ManagementServer.AliasBasedAddressing",
    }


def test_prototype_rows_materialise_the_default_instances() -> None:
    template = load_template("tr181")
    hosts = template.root.children["Hosts"].children["Host"]  # type: ignore[union-attr]
    assert isinstance(hosts, TableSpec)
    assert sorted(hosts.instances) == [1, 2, 3, 4, 5, 6]
    assert hosts.prototype is not None
    ip = hosts.instances[3].children["IPAddress"]
    assert isinstance(ip, ParamSpec) and ip.default == "192.168.1.102" and ip.parts is None
    # The prototype keeps {i} for instances the ACS adds later.
    proto_ip = hosts.prototype.children["IPAddress"]
    assert isinstance(proto_ip, ParamSpec) and proto_ip.parts is not None


def test_placeholders_compile_into_literals_and_tokens() -> None:
    assert compile_value("plain") is None
    assert compile_value("192.168.1.{i+99}") == ("192.168.1.", Token("i", "", 99))
    assert compile_value("{count:Host}") == (Token("count", "Host", 0),)
    assert compile_value("{mac+8}") == (Token("mac", "", 8),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Device.A.{i}.B.{i}.C,string,R,x", "prototypes do not nest"),
        ("Device.A,float,R,1", "unknown type"),
        ("Device.A,string,X,1", "access must start with R or W"),
        ("Device.A,string,RQ,1", "unknown access flags"),
        ("Device.A,string,R,1\nOther.B,string,R,1", "is not under Device."),
        ("Device.A,string,R,1\nDevice.A,string,R,2", "duplicate name"),
        ("Device.T.,table,W,2", "needs a {i} prototype"),
        ("Device.A,string,R,1,range:x", "invalid literal"),
    ],
)
def test_malformed_templates_are_refused_with_the_line(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_template(text, "bad")


def test_unknown_template_name_lists_the_available_ones() -> None:
    with pytest.raises(TemplateError, match="tr098, tr181"):
        load_template("tr999")


def test_a_big_template_has_the_parameters_asked_for_in_a_vendor_table() -> None:
    from simulator.template import load_big_template

    base = load_template("tr181").parameter_count()
    big = load_big_template("tr181", 20_000)
    assert 20_000 <= big.parameter_count() < 20_020
    names = [path for path, node in big.walk() if isinstance(node, ParamSpec)]
    assert "Device.X_SIM_Bulk.Entry.1.Param1" in names and len(names) == big.parameter_count()
    assert load_big_template("tr181", 10) is load_template("tr181")  # already big enough
    assert big.parameter_count() - base == len([n for n in names if n.startswith("Device.X_SIM_Bulk.")])
