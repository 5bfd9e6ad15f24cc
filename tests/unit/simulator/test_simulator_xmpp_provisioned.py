"""The provisioned XMPP mode's reading of the account the ACS set (simulator/xmppmode.py), on the
TR-181 template's own Device.XMPP. rows."""

from __future__ import annotations

import pytest

from cwmp.models import ParameterValueStruct
from cwmp.values import ParameterValue
from simulator.cli import build_parser, settings_from_args
from simulator.config import FleetSettings
from simulator.xmppmode import Account, provisioned
from tests.unit.simulator.test_simulator_session import Clock, make_device

CONN = "Device.XMPP.Connection.1."


def _set(device: object, values: dict[str, tuple[str, str]]) -> None:
    items = [ParameterValueStruct(name=n, value=ParameterValue(value=v, type=t)) for n, (v, t) in values.items()]
    device.model.set_parameter_values(items, "")  # type: ignore[attr-defined]


def test_an_account_counts_once_connection_server_and_reference_are_set() -> None:
    device = make_device(Clock(), [], model="tr181")
    assert provisioned(device) is None  # out of the box: a disabled, empty connection
    server = device.model.add_object(f"{CONN}Server.", "")
    _set(device, {f"{CONN}Username": ("cpe-1", "xsd:string"), f"{CONN}Password": ("pw", "xsd:string"),
                  f"{CONN}Domain": ("acs.test", "xsd:string"), f"{CONN}Resource": ("cwmp", "xsd:string"),
                  f"{CONN}Server.{server}.ServerAddress": ("192.0.2.5", "xsd:string"),
                  f"{CONN}Server.{server}.Port": ("5299", "xsd:unsignedInt"),
                  f"{CONN}Server.{server}.Enable": ("true", "xsd:boolean"),
                  f"{CONN}Enable": ("true", "xsd:boolean")})
    assert provisioned(device) is None  # not the connection for connection requests yet
    _set(device, {"Device.ManagementServer.ConnReqXMPPConnection": ("Device.XMPP.Connection.1", "xsd:string")})
    assert provisioned(device) == Account("cpe-1@acs.test", "pw", "192.0.2.5", 5299, "cwmp", CONN)
    assert "pw" not in repr(provisioned(device))
    _set(device, {f"{CONN}Enable": ("false", "xsd:boolean")})
    assert provisioned(device) is None


def test_a_connection_without_an_enabled_server_is_no_account() -> None:
    device = make_device(Clock(), [], model="tr181")
    server = device.model.add_object(f"{CONN}Server.", "")
    _set(device, {f"{CONN}Username": ("cpe-1", "xsd:string"), f"{CONN}Domain": ("acs.test", "xsd:string"),
                  f"{CONN}Enable": ("true", "xsd:boolean"),
                  f"{CONN}Server.{server}.ServerAddress": ("192.0.2.5", "xsd:string"),
                  "Device.ManagementServer.ConnReqXMPPConnection": ("Device.XMPP.Connection.1", "xsd:string")})
    assert provisioned(device) is None


def test_the_mode_is_on_the_command_line_and_excludes_a_fixed_account() -> None:
    assert settings_from_args(build_parser().parse_args(["--xmpp-provisioned"])).xmpp_provisioned is True
    assert settings_from_args(build_parser().parse_args([])).xmpp_provisioned is False
    with pytest.raises(ValueError, match="xmpp_provisioned"):
        FleetSettings(xmpp_provisioned=True, xmpp_server="127.0.0.1:5222")
