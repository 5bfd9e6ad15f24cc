"""Data-model operations of one device: GPN/GPV/SPV/attributes/Add/DeleteObject, copy-on-write."""

from __future__ import annotations

import pytest

from cwmp.faults import CwmpFault
from cwmp.models import ParameterValueStruct, SetParameterAttributesStruct
from cwmp.values import ParameterValue
from simulator.datamodel import MAX_INSTANCES, DataModel
from simulator.template import load_template

IGD = "InternetGatewayDevice."
MS = IGD + "ManagementServer."
PM = IGD + "WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.PortMapping."


class FakeDevice:
    """Resolves placeholders as <name+offset>, so tests can see which one was used."""

    def placeholder(self, name: str, offset: int, instance: int | None) -> str:
        return f"<{name}{offset:+d}>" if offset else f"<{name}>"


@pytest.fixture
def igd() -> DataModel:
    return DataModel(load_template("tr098"), FakeDevice())


@pytest.fixture
def dev() -> DataModel:
    return DataModel(load_template("tr181"), FakeDevice())


def pv(name: str, value: str, xsd: str = "xsd:string") -> ParameterValueStruct:
    return ParameterValueStruct(name, ParameterValue(value, xsd))


def names(items: list) -> list[str]:  # type: ignore[type-arg]
    return [item.name for item in items]


def fault_of(excinfo: pytest.ExceptionInfo[CwmpFault]) -> dict[str, int]:
    return {f.parameter_name: f.fault_code for f in excinfo.value.set_parameter_values_faults}


# -- GetParameterNames (R10) -----------------------------------------------------------------


def test_gpn_root_next_level_true_gives_only_the_root_object(igd: DataModel) -> None:
    result = igd.get_parameter_names("", True)
    assert [(r.name, r.writable) for r in result] == [(IGD, False)]


def test_gpn_root_next_level_false_gives_the_whole_tree(igd: DataModel) -> None:
    result = igd.get_parameter_names("", False)
    params = [r for r in result if not r.name.endswith(".")]
    assert result[0].name == IGD
    assert len(params) == igd.parameter_count() >= 400
    assert IGD + "DeviceInfo." in names(result)


def test_gpn_next_level_true_lists_immediate_children_only(igd: DataModel) -> None:
    result = igd.get_parameter_names(IGD + "LANDevice.1.Hosts.", True)
    assert names(result) == [IGD + "LANDevice.1.Hosts.HostNumberOfEntries", IGD + "LANDevice.1.Hosts.Host."]
    table = igd.get_parameter_names(IGD + "LANDevice.1.Hosts.Host.", True)
    assert names(table) == [f"{IGD}LANDevice.1.Hosts.Host.{n}." for n in (1, 2, 3, 4)]


def test_gpn_next_level_false_includes_the_path_and_its_subtree(igd: DataModel) -> None:
    result = igd.get_parameter_names(IGD + "LANDevice.1.Hosts.Host.2.", False)
    assert result[0].name == IGD + "LANDevice.1.Hosts.Host.2."
    assert all(r.name.startswith(IGD + "LANDevice.1.Hosts.Host.2.") for r in result)
    assert IGD + "LANDevice.1.Hosts.Host.2.MACAddress" in names(result)


def test_gpn_writable_flags_of_tables_instances_and_parameters(igd: DataModel) -> None:
    by_name = {r.name: r.writable for r in igd.get_parameter_names("", False)}
    assert by_name[PM] is True  # AddObject allowed
    assert by_name[IGD + "LANDevice.1.Hosts.Host."] is False
    assert by_name[IGD + "Layer3Forwarding.Forwarding.1."] is True  # deletable instance
    assert by_name[MS + "PeriodicInformInterval"] is True
    assert by_name[IGD + "DeviceInfo.SerialNumber"] is False


def test_gpn_full_parameter_name(igd: DataModel) -> None:
    result = igd.get_parameter_names(MS + "URL", False)
    assert [(r.name, r.writable) for r in result] == [(MS + "URL", True)]
    with pytest.raises(CwmpFault) as excinfo:
        igd.get_parameter_names(MS + "URL", True)
    assert excinfo.value.code == 9003


@pytest.mark.parametrize("path", [IGD + "NoSuch.", IGD + "DeviceInfo", "Device.", IGD + "LANDevice.7.",
                                  IGD + "LANDevice.01.", IGD + "DeviceInfo.SerialNumber.", "InternetGateway"])
def test_gpn_invalid_paths_are_9005(igd: DataModel, path: str) -> None:
    with pytest.raises(CwmpFault) as excinfo:
        igd.get_parameter_names(path, False)
    assert excinfo.value.code == 9005


# -- GetParameterValues (R9) -----------------------------------------------------------------


def test_gpv_partial_path_returns_every_parameter_below(igd: DataModel) -> None:
    result = igd.get_parameter_values([IGD + "DeviceInfo."])
    assert IGD + "DeviceInfo.MemoryStatus.Total" in names(result)
    assert all(not n.endswith(".") for n in names(result))
    serial = next(r for r in result if r.name == IGD + "DeviceInfo.SerialNumber")
    assert serial.value == ParameterValue("<serial>", "xsd:string")


def test_gpv_mixes_full_names_and_partial_paths_in_request_order(igd: DataModel) -> None:
    result = igd.get_parameter_values([MS + "PeriodicInformInterval", IGD + "LANDevice.1.Hosts."])
    assert result[0].name == MS + "PeriodicInformInterval"
    assert result[0].value.type == "xsd:unsignedInt"
    assert result[1].name == IGD + "LANDevice.1.Hosts.HostNumberOfEntries"
    assert result[1].value.value == "4"
    assert result[2].value.value == "192.168.1.100"  # Host.1.IPAddress from the {i+99} prototype


def test_gpv_empty_string_is_the_whole_tree(dev: DataModel) -> None:
    assert len(dev.get_parameter_values([""])) == dev.parameter_count() >= 400


def test_gpv_any_invalid_name_faults_the_whole_call(igd: DataModel) -> None:
    with pytest.raises(CwmpFault) as excinfo:
        igd.get_parameter_values([MS + "URL", IGD + "No.Such.Thing"])
    assert excinfo.value.code == 9005


def test_gpv_hidden_parameters_read_back_empty(igd: DataModel) -> None:
    igd.set_parameter_values([pv(MS + "ConnectionRequestPassword", "s3cret")], "k")
    [item] = igd.get_parameter_values([MS + "ConnectionRequestPassword"])
    assert item.value.value == ""
    assert igd.get(MS + "ConnectionRequestPassword") == "s3cret"  # the device still knows it


# -- SetParameterValues (R8) -----------------------------------------------------------------


def test_spv_applies_and_updates_the_parameter_key(igd: DataModel) -> None:
    changed = igd.set_parameter_values(
        [pv(MS + "PeriodicInformInterval", "60", "xsd:unsignedInt"),
         pv(MS + "PeriodicInformEnable", "1", "xsd:boolean"),
         pv(IGD + "DeviceInfo.ProvisioningCode", "ABC")], "key-1")
    assert MS + "PeriodicInformInterval" in changed
    assert igd.get(MS + "PeriodicInformInterval") == "60"
    assert igd.get(MS + "PeriodicInformEnable") == "true"  # booleans stored canonically
    assert igd.get(MS + "ParameterKey") == "key-1"


def test_spv_is_atomic_and_reports_every_bad_parameter(igd: DataModel) -> None:
    before = igd.get(MS + "PeriodicInformInterval")
    with pytest.raises(CwmpFault) as excinfo:
        igd.set_parameter_values(
            [pv(MS + "PeriodicInformInterval", "120", "xsd:unsignedInt"),  # fine on its own
             pv(IGD + "No.Such", "1"),
             pv(IGD + "DeviceInfo.SerialNumber", "X"),
             pv(MS + "STUNServerPort", "80", "xsd:string"),
             pv(MS + "CWMPRetryIntervalMultiplier", "999", "xsd:unsignedInt"),
             pv(IGD + "UserInterface.CurrentLanguage", "klingon")], "key-2")
    assert excinfo.value.code == 9003
    assert fault_of(excinfo) == {
        IGD + "No.Such": 9005,
        IGD + "DeviceInfo.SerialNumber": 9008,
        MS + "STUNServerPort": 9006,
        MS + "CWMPRetryIntervalMultiplier": 9007,
        IGD + "UserInterface.CurrentLanguage": 9007,
    }
    assert igd.get(MS + "PeriodicInformInterval") == before  # nothing applied
    assert igd.get(MS + "ParameterKey") == ""  # ParameterKey unchanged on failure


@pytest.mark.parametrize(("name", "value", "xsd"), [
    (MS + "PeriodicInformInterval", "-5", "xsd:unsignedInt"),
    (MS + "PeriodicInformInterval", "0", "xsd:unsignedInt"),  # range:1:
    (MS + "PeriodicInformInterval", "abc", "xsd:unsignedInt"),
    (MS + "PeriodicInformEnable", "yes", "xsd:boolean"),
    (MS + "PeriodicInformTime", "tomorrow", "xsd:dateTime"),
    (MS + "STUNMaximumKeepAlivePeriod", "4294967296", "xsd:int"),
    (IGD + "DeviceInfo.ProvisioningCode", "x" * 65, "xsd:string"),
])
def test_spv_bad_values_are_9007(igd: DataModel, name: str, value: str, xsd: str) -> None:
    with pytest.raises(CwmpFault) as excinfo:
        igd.set_parameter_values([pv(name, value, xsd)], "k")
    assert fault_of(excinfo) == {name: 9007}


def test_spv_accepts_unknown_time_and_zoned_datetimes(igd: DataModel) -> None:
    igd.set_parameter_values([pv(MS + "PeriodicInformTime", "2025-01-01T03:00:00+01:00", "xsd:dateTime")], "a")
    igd.set_parameter_values([pv(MS + "PeriodicInformTime", "0001-01-01T00:00:00Z", "xsd:dateTime")], "b")
    assert igd.get(MS + "PeriodicInformTime") == "0001-01-01T00:00:00Z"


def test_spv_lenient_types_checks_the_value_only(igd: DataModel) -> None:
    igd.set_parameter_values([pv(MS + "STUNServerPort", "3479", "xsd:string")], "k", strict_types=False)
    assert igd.get(MS + "STUNServerPort") == "3479"


def test_spv_same_name_twice_is_9003_without_applying(igd: DataModel) -> None:
    with pytest.raises(CwmpFault) as excinfo:
        igd.set_parameter_values([pv(MS + "URL", "http://a/"), pv(MS + "URL", "http://b/")], "k")
    assert excinfo.value.code == 9003
    assert igd.get(MS + "URL") == "<acs_url>"


# -- Attributes (R11, R12) -------------------------------------------------------------------


def test_attributes_round_trip_and_forced_active_parameters(igd: DataModel) -> None:
    igd.set_parameter_attributes([
        SetParameterAttributesStruct(IGD + "LANDevice.1.WLANConfiguration.1.", True, 1, True, ("Subscriber",)),
        SetParameterAttributesStruct(MS + "ConnectionRequestURL", True, 0),
    ])
    attrs = {a.name: a for a in igd.get_parameter_attributes([IGD + "LANDevice.1.WLANConfiguration.1.", MS])}
    ssid = attrs[IGD + "LANDevice.1.WLANConfiguration.1.SSID"]
    assert (ssid.notification, ssid.access_list) == (1, ("Subscriber",))
    # Forced active notification cannot be switched off.
    assert attrs[MS + "ConnectionRequestURL"].notification == 2
    assert attrs[MS + "URL"].notification == 0


def test_active_notification_on_a_denying_parameter_is_9009(igd: DataModel) -> None:
    with pytest.raises(CwmpFault) as excinfo:
        igd.set_parameter_attributes([SetParameterAttributesStruct(IGD + "DeviceInfo.UpTime", True, 2)])
    assert excinfo.value.code == 9009
    # Through a partial path, the denying parameters are skipped, the others accepted.
    igd.set_parameter_attributes([SetParameterAttributesStruct(IGD + "DeviceInfo.", True, 2)])
    attrs = {a.name: a.notification for a in igd.get_parameter_attributes([IGD + "DeviceInfo."])}
    assert attrs[IGD + "DeviceInfo.UpTime"] == 0
    assert attrs[IGD + "DeviceInfo.ProvisioningCode"] == 2


def test_invalid_attribute_requests(igd: DataModel) -> None:
    with pytest.raises(CwmpFault) as excinfo:
        igd.set_parameter_attributes([SetParameterAttributesStruct(IGD + "Nope", True, 1)])
    assert excinfo.value.code == 9005
    with pytest.raises(CwmpFault) as excinfo:
        igd.set_parameter_attributes([SetParameterAttributesStruct(MS + "URL", True, 7)])
    assert excinfo.value.code == 9003


# -- AddObject / DeleteObject (R13, R14) -----------------------------------------------------


def test_add_object_creates_an_instance_from_the_prototype(igd: DataModel) -> None:
    assert igd.add_object(PM, "add-1") == 1
    assert igd.add_object(PM, "add-2") == 2
    assert igd.get(MS + "ParameterKey") == "add-2"
    assert names(igd.get_parameter_names(PM, True)) == [PM + "1.", PM + "2."]
    values = {v.name: v.value.value for v in igd.get_parameter_values([PM + "2."])}
    assert values[PM + "2.PortMappingProtocol"] == "TCP"
    count = IGD + "WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.PortMappingNumberOfEntries"
    assert igd.get(count) == "2"
    igd.set_parameter_values([pv(PM + "2.ExternalPort", "8080", "xsd:unsignedInt")], "set")
    assert igd.get(PM + "2.ExternalPort") == "8080"


def test_instance_numbers_are_not_reused_after_delete(igd: DataModel) -> None:
    igd.add_object(PM, "a")
    igd.add_object(PM, "b")
    igd.set_parameter_values([pv(PM + "2.ExternalPort", "8080", "xsd:unsignedInt")], "c")
    igd.delete_object(PM + "2.", "d")
    assert igd.get(MS + "ParameterKey") == "d"
    assert names(igd.get_parameter_names(PM, True)) == [PM + "1."]
    with pytest.raises(CwmpFault):
        igd.get(PM + "2.ExternalPort")
    assert igd.add_object(PM, "e") == 3
    assert igd.get(PM + "3.ExternalPort") == "0"  # nothing of the deleted instance leaks


def test_delete_a_template_instance(dev: DataModel) -> None:
    ap = "Device.WiFi.AccessPoint."
    dev.delete_object(ap + "1.", "k")
    assert names(dev.get_parameter_names(ap, True)) == [ap + "2."]
    assert dev.get("Device.WiFi.AccessPointNumberOfEntries") == "1"
    assert dev.add_object(ap, "k2") == 3


@pytest.mark.parametrize("name", [IGD + "LANDevice.1.Hosts.Host.", IGD + "DeviceInfo.", PM + "1.",
                                  IGD + "Nope.", MS + "URL"])
def test_add_object_refuses_what_is_not_an_addable_table(igd: DataModel, name: str) -> None:
    with pytest.raises(CwmpFault) as excinfo:
        igd.add_object(name, "k")
    assert excinfo.value.code == 9005
    assert igd.get(MS + "ParameterKey") == ""


@pytest.mark.parametrize("name", [IGD + "LANDevice.1.Hosts.Host.1.", PM, IGD + "DeviceInfo.",
                                  IGD + "Layer3Forwarding.Forwarding.9."])
def test_delete_object_refuses_what_is_not_a_deletable_instance(igd: DataModel, name: str) -> None:
    with pytest.raises(CwmpFault) as excinfo:
        igd.delete_object(name, "k")
    assert excinfo.value.code == 9005


def test_add_object_has_a_resource_limit(igd: DataModel) -> None:
    for _ in range(MAX_INSTANCES):
        igd.add_object(PM, "k")
    with pytest.raises(CwmpFault) as excinfo:
        igd.add_object(PM, "k")
    assert excinfo.value.code == 9004


# -- copy-on-write -------------------------------------------------------------------------


def test_devices_share_the_template_and_store_only_their_changes() -> None:
    template = load_template("tr098")
    a, b = DataModel(template, FakeDevice()), DataModel(template, FakeDevice())
    assert a.overlay_size() == 0
    a.set_parameter_values([pv(MS + "URL", "http://elsewhere/")], "k")
    a.add_object(PM, "k2")
    assert a.get(MS + "URL") == "http://elsewhere/"
    assert b.get(MS + "URL") == "<acs_url>"
    assert b.get_parameter_names(PM, True) == []
    assert a.overlay_size() == 3  # URL, ParameterKey, one added instance
    a.reset()
    assert a.overlay_size() == 0 and a.get(MS + "URL") == "<acs_url>"
