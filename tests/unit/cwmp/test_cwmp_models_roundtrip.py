"""Property tests: for every method, in both directions, build then parse gives back the same
model and header; rpc_to_dict -> JSON -> rpc_from_dict is exact; and rpc_from_dict rejects
bad input with a ValueError that says where."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cwmp import (
    CWMP_NAMESPACES,
    METHODS,
    BooleanLiteral,
    CwmpFault,
    Envelope,
    Header,
    MessageKind,
    build_envelope,
    parse_envelope,
    rpc_from_dict,
    rpc_to_dict,
)
from cwmp import models as m
from cwmp.values import ParameterValue
from tests.unit.cwmp.cwmp_samples import ALL_METHODS, faults, message_strategy, xml_text

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

headers = st.fixed_dictionaries(
    {
        "cwmp_ns": st.sampled_from(CWMP_NAMESPACES),
        "cwmp_id": st.none() | xml_text,
        "hold_requests": st.none() | st.booleans(),
        "boolean_literal": st.sampled_from(list(BooleanLiteral)),
    }
)


def test_every_method_has_a_class_and_both_directions_exist() -> None:
    assert len(METHODS) == 54
    requests = {n for n, c in METHODS.items() if c.KIND is MessageKind.REQUEST}
    assert {c.RESPONSE for n, c in METHODS.items() if n in requests} == set(METHODS) - requests
    assert {n for n in requests if "cpe" in METHODS[n].SENDERS} == {
        "Inform", "GetRPCMethods", "TransferComplete", "AutonomousTransferComplete", "RequestDownload",
        "DUStateChangeComplete", "AutonomousDUStateChangeComplete", "Kicked",
    }  # fmt: skip
    assert all(METHODS[name].METHOD == name for name in METHODS)


@pytest.mark.parametrize("method", ALL_METHODS)
@PROPERTY
@given(data=st.data())
def test_build_then_parse_is_identity(method: str, data: st.DataObject) -> None:
    message = data.draw(message_strategy(method))
    header = data.draw(headers)
    body = build_envelope(message, **header)
    assert body.isascii()
    parsed = parse_envelope(body)
    assert parsed == Envelope(header["cwmp_ns"], Header(header["cwmp_id"], header["hold_requests"]), message)


@PROPERTY
@given(fault=faults, header=headers)
def test_fault_build_then_parse_is_identity(fault: CwmpFault, header: dict[str, Any]) -> None:
    parsed = parse_envelope(build_envelope(fault, **header))
    assert parsed.message == fault
    assert parsed.header.id == header["cwmp_id"]


@pytest.mark.parametrize("method", ALL_METHODS)
@PROPERTY
@given(data=st.data())
def test_dict_round_trip_through_json(method: str, data: st.DataObject) -> None:
    message = data.draw(message_strategy(method))
    as_dict = rpc_to_dict(message)
    assert as_dict["method"] == method
    assert rpc_from_dict(json.loads(json.dumps(as_dict))) == message


@PROPERTY
@given(fault=faults)
def test_fault_dict_round_trip(fault: CwmpFault) -> None:
    assert rpc_from_dict(json.loads(json.dumps(rpc_to_dict(fault)))) == fault


def test_dict_format() -> None:
    assert rpc_to_dict(m.GetParameterValues(["Device.A", "Device.B."])) == {
        "method": "GetParameterValues",
        "parameter_names": ["Device.A", "Device.B."],
    }
    spv = m.SetParameterValues([m.ParameterValueStruct("Device.A", ParameterValue.integer(5))], "pk")
    assert rpc_to_dict(spv) == {
        "method": "SetParameterValues",
        "parameter_list": [{"name": "Device.A", "value": {"value": "5", "type": "xsd:int"}}],
        "parameter_key": "pk",
    }
    du = m.ChangeDUState([m.UninstallOpStruct("u")])
    assert rpc_to_dict(du)["operations"] == [
        {"type": "UninstallOpStruct", "uuid": "u", "version": None, "execution_env_ref": None}
    ]
    assert rpc_to_dict(CwmpFault.from_code(9005)) == {
        "method": "Fault",
        "code": 9005,
        "string": "Invalid parameter name",
        "set_parameter_values_faults": [],
        "faultcode": "Client",
        "faultstring": "CWMP fault",
    }


def test_from_dict_fills_defaults_and_accepts_lists() -> None:
    assert rpc_from_dict({"method": "Download", "url": "http://x"}) == m.Download(url="http://x")
    assert rpc_from_dict({"method": "Fault", "code": 8003}) == CwmpFault.from_code(8003, "")
    value = rpc_from_dict({"method": "SetParameterValues", "parameter_list": [{"name": "A", "value": {"value": "x"}}]})
    assert value == m.SetParameterValues((m.ParameterValueStruct("A", ParameterValue("x", "xsd:string")),))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"method": "Frobnicate"}, "unknown CWMP method 'Frobnicate'"),
        ({"parameter_names": []}, "unknown CWMP method None"),
        ("GetParameterValues", "expected a mapping"),
        (
            {"method": "GetParameterValues", "parameter_name": []},
            r"GetParameterValues: unknown field\(s\) \['parameter_name'\]",
        ),
        (
            {"method": "GetParameterValues", "parameter_names": "Device."},
            "GetParameterValues.parameter_names: expected",
        ),
        ({"method": "GetParameterValues", "parameter_names": [1]}, r"parameter_names\[0\]: expected str"),
        ({"method": "GetParameterNames", "next_level": True}, "parameter_path: required field missing"),
        ({"method": "GetParameterNames", "parameter_path": "", "next_level": 1}, "next_level: expected bool"),
        ({"method": "ScheduleInform", "delay_seconds": True}, "delay_seconds: expected int"),
        ({"method": "ScheduleInform", "delay_seconds": "5"}, "delay_seconds: expected int"),
        ({"method": "Reboot", "command_key": None}, "command_key: null is not allowed"),
        (
            {"method": "SetParameterValues", "parameter_list": [{"name": "A", "value": "x"}]},
            r"parameter_list\[0\].value",
        ),
        (
            {"method": "SetParameterValues", "parameter_list": [{"name": "A", "value": {"value": "x", "kind": "y"}}]},
            r"expected \{'value': str, 'type': str\}",
        ),
        ({"method": "Inform", "device_id": {"oui": "1"}}, "Inform.device_id.serial_number: required field missing"),
        ({"method": "ChangeDUState", "operations": [{"url": "x"}]}, r"operations\[0\].type: expected one of"),
        ({"method": "ChangeDUState", "operations": [{"type": "InstallOpStruct"}]}, r"operations\[0\].url: required"),
        ({"method": "Fault", "code": "9000"}, "Fault.code: expected int"),
        ({"method": "Fault", "code": 9000, "detail": 1}, "Fault: unknown field"),
        ({"method": "Fault", "code": 9003, "set_parameter_values_faults": [{"name": "A"}]}, "unknown field"),
    ],
)
def test_from_dict_errors(data: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rpc_from_dict(data)


def test_models_normalise_sequences_and_booleans() -> None:
    built = m.GetParameterValues(["A"])
    assert built.parameter_names == ("A",) and built == m.GetParameterValues(("A",))
    assert ParameterValue("TRUE", "xsd:boolean") == ParameterValue("true", "xsd:boolean")
    assert ParameterValue("1", "xsd:boolean").wire_text(BooleanLiteral.ONE_ZERO) == "1"
    assert ParameterValue("yes", "xsd:boolean").value == "yes"  # not a boolean literal: kept as sent
