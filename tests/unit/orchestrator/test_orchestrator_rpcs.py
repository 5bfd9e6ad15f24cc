"""The RPC dicts the orchestrator builds are exactly what cwmp.models accepts, and it reads what
cwmp.models produces."""

from __future__ import annotations

from typing import Any

import pytest

from cwmp import models
from cwmp.values import ParameterValue
from services.orchestrator import rpcs

BUILT: list[dict[str, Any]] = [
    rpcs.get_parameter_values(["Device.DeviceInfo.", "Device.ManagementServer.URL"]),
    rpcs.get_parameter_names("Device.DeviceInfo.", True),
    rpcs.set_parameter_values([rpcs.Value("Device.ManagementServer.PeriodicInformEnable", "true", "xsd:boolean")],
                              "key-1"),
    rpcs.get_parameter_attributes(["Device.DeviceInfo.SoftwareVersion"]),
    rpcs.set_parameter_attributes([{"name": "Device.DeviceInfo.SoftwareVersion", "notification": 2},
                                   {"name": "Device.X.", "access_list": ["Subscriber"]}]),
    rpcs.add_object("Device.IP.Interface.", "k"),
    rpcs.delete_object("Device.IP.Interface.3.", "k"),
    rpcs.reboot("abc.1"),
    rpcs.factory_reset(),
    rpcs.get_rpc_methods(),
    rpcs.schedule_inform(60, "abc.1"),
    rpcs.download(command_key="abc.1", file_type="1 Firmware Upgrade Image", url="http://f/download/fw.bin",
                  username="u", password="p", file_size=83687),
    rpcs.upload(command_key="abc.1", file_type="2 Vendor Log File", url="http://f/upload/x", username="u",
                password="p"),
]


@pytest.mark.parametrize("rpc", BUILT, ids=[rpc["method"] for rpc in BUILT])
def test_every_built_rpc_round_trips_through_cwmp_models(rpc: dict[str, Any]) -> None:
    message = models.rpc_from_dict(rpc)
    assert models.rpc_to_dict(message) == rpc


def test_set_parameter_attributes_flags_only_what_is_given() -> None:
    message = models.rpc_from_dict(BUILT[4])
    assert isinstance(message, models.SetParameterAttributes)
    first, second = message.parameter_list
    assert (first.notification_change, first.notification, first.access_list_change) == (True, 2, False)
    assert (second.notification_change, second.access_list_change, second.access_list) == (False, True,
                                                                                            ("Subscriber",))


def test_readers_understand_what_the_gateway_publishes() -> None:
    gpv = models.rpc_to_dict(models.GetParameterValuesResponse(parameter_list=(
        models.ParameterValueStruct("Device.DeviceInfo.UpTime", ParameterValue("42", "xsd:unsignedInt")),)))
    assert rpcs.read_values(gpv) == {"Device.DeviceInfo.UpTime": {"value": "42", "type": "xsd:unsignedInt"}}
    gpn = models.rpc_to_dict(models.GetParameterNamesResponse(parameter_list=(
        models.ParameterInfoStruct("Device.DeviceInfo.", False), models.ParameterInfoStruct("Device.X", True))))
    assert rpcs.read_names(gpn) == {"Device.DeviceInfo.": False, "Device.X": True}
    add = models.rpc_to_dict(models.AddObjectResponse(instance_number=7, status=1))
    assert (rpcs.read_instance_number(add), rpcs.read_status(add)) == (7, 1)
    methods = models.rpc_to_dict(models.GetRPCMethodsResponse(method_list=("GetRPCMethods", "Reboot")))
    assert rpcs.read_method_list(methods) == ["GetRPCMethods", "Reboot"]
    attributes = models.rpc_to_dict(models.GetParameterAttributesResponse(parameter_list=(
        models.ParameterAttributeStruct("Device.X", 2, ("Subscriber",)),)))
    assert rpcs.read_attributes(attributes) == {"Device.X": {"notification": 2, "access_list": ["Subscriber"]}}


def test_transfer_complete_is_read_with_its_fault_struct() -> None:
    done = models.rpc_to_dict(models.TransferComplete(command_key="1464922149048_BF3C937DCE59AE812C",
                                                      fault_struct=models.FaultStruct(9010, "Download failed")))
    result = rpcs.read_transfer_complete(done)
    assert (result.command_key, result.fault_code, result.fault_string) == (
        "1464922149048_BF3C937DCE59AE812C", 9010, "Download failed")


def test_redaction_hides_passwords_of_downloads_and_password_parameters() -> None:
    shown = rpcs.redacted(BUILT[11])
    assert shown["password"] == "***" and shown["username"] == "u"
    spv = rpcs.set_parameter_values([rpcs.Value("Device.ManagementServer.ConnectionRequestPassword", "s3cret"),
                                     rpcs.Value("Device.ManagementServer.ConnectionRequestUsername", "me")])
    text = repr(rpcs.redacted(spv))
    assert "s3cret" not in text and "me" in text
