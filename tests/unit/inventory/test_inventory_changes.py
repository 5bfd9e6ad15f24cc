"""Planning: which MongoDB updates and which device facts each inbound message produces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.bus.events import (
    DeviceDeleted,
    DeviceIdentity,
    InformEventCode,
    InformReceived,
    ParameterValue,
    RpcResponseReceived,
    SessionEnded,
    ValueChange,
)
from services.inventory.changes import (
    KEEP_APPLIED,
    DeviceState,
    PlanConfig,
    observe,
    plan,
    projection_for,
)

DEVICE = "00259E-Box-SN1"
T0 = datetime(2025, 5, 1, 12, tzinfo=UTC)
CONFIG = PlanConfig(silent_after_intervals=3, default_interval=3600)
SV = "Device:DeviceInfo:SoftwareVersion"


def inform(*codes: str, params: dict[str, tuple[str, str]] | None = None, at: datetime = T0,
           event_id: str | None = None) -> InformReceived:
    extra = {"event_id": event_id} if event_id else {}
    return InformReceived(
        device_id=DEVICE, session_id="s", reply_to="r:0", gateway_id="g", time=at,
        device=DeviceIdentity(manufacturer="Acme", oui="00259E", product_class="Box", serial_number="SN1"),
        events=[InformEventCode(code=code) for code in codes],
        parameters=[ParameterValue(name=name, value=value, type=kind)
                    for name, (value, kind) in (params or {}).items()],
        remote_address="10.0.0.1", **extra)


def response(method: str, rpc: dict[str, Any], at: datetime = T0,
             request: dict[str, Any] | None = None) -> RpcResponseReceived:
    return RpcResponseReceived(device_id=DEVICE, session_id="s", reply_to="r:0", gateway_id="g",
                               time=at, rpc_id="1", method=method, rpc={"method": method, **rpc},
                               request=request)


def known(**params: Any) -> DeviceState:
    """An existing device whose stored parameters are ``params`` (encoded name -> entry)."""
    return DeviceState(DEVICE, exists=True, params=dict(params))


def run(state: DeviceState, message: Any) -> tuple[Any, list[Any]]:
    observation = observe(message)
    assert observation is not None
    return plan(state, observation, CONFIG)


def test_first_inform_registers_the_device_with_an_upsert() -> None:
    state = DeviceState(DEVICE)
    write, facts = run(state, inform("0 BOOTSTRAP", "1 BOOT", params={
        "Device.DeviceInfo.SoftwareVersion": ("1.0", "xsd:string"),
        "Device.ManagementServer.PeriodicInformInterval": ("300", "xsd:unsignedInt")}))
    assert write.upsert
    assert write.filter["_id"] == DEVICE and "$ne" in write.filter["applied"]
    update = write.update
    assert update["$setOnInsert"]["serial_number"] == "SN1"
    assert update["$setOnInsert"]["first_seen"] == T0
    assert update["$set"]["software_version"] == "1.0"
    assert update["$set"]["inform_interval"] == 300
    assert update["$set"]["params"][SV] == {"v": "1.0", "t": "xsd:string", "ts": T0}
    assert update["$set"]["silent_deadline"] == T0 + timedelta(seconds=900)
    assert update["$max"] == {"last_inform": T0, "last_boot": T0, "last_bootstrap": T0}
    assert [f.kind for f in facts] == ["registered", "bootstrapped", "booted", "informed"]
    assert facts[0].details["serial_number"] == "SN1"
    assert state.exists and state.applied


def test_periodic_inform_writes_only_changed_values_and_reports_old_and_new() -> None:
    state = known(**{SV: {"v": "1.0", "t": "xsd:string"},
                     "Device:X:Uptime": {"v": 5, "t": "xsd:unsignedInt"}})
    write, facts = run(state, inform("2 PERIODIC", params={
        "Device.DeviceInfo.SoftwareVersion": ("1.0", "xsd:string"),
        "Device.X.Uptime": ("65", "xsd:unsignedInt"),
        "Device.X.New": ("n", "xsd:string")}))
    sets = write.update["$set"]
    assert f"params.{SV}.v" not in sets and sets[f"params.{SV}.ts"] == T0  # unchanged: read time only
    assert sets["params.Device:X:Uptime.v"] == 65
    assert sets["params.Device:X:New.v"] == "n"
    assert "software_version" not in sets
    assert "params" not in sets  # never the whole tree outside BOOTSTRAP
    kinds = [f.kind for f in facts]
    assert kinds == ["value_changed", "informed"]
    # A first reading is not a change: there is no old value to report.
    assert facts[0].changes == (
        ValueChange(name="Device.X.Uptime", old="5", new="65", type="xsd:unsignedInt"),)


def test_a_replayed_message_is_not_planned_again() -> None:
    state = known()
    message = inform("2 PERIODIC", params={"Device.X.A": ("1", "xsd:string")})
    first, _ = run(state, message)
    again, facts = run(state, message)
    assert first is not None and again is None and facts == []


def test_the_applied_marker_is_bounded() -> None:
    state = known()
    for i in range(KEEP_APPLIED + 5):
        run(state, inform("2 PERIODIC", event_id=f"e{i}"))
    assert len(state.applied) == KEEP_APPLIED and state.applied[-1] == f"e{KEEP_APPLIED + 4}"


def test_boolean_spellings_are_the_same_value_but_a_type_change_is_not() -> None:
    state = known(**{"Device:X:On": {"v": True, "t": "xsd:boolean"}})
    write, facts = run(state, inform("2 PERIODIC", params={"Device.X.On": ("1", "xsd:boolean")}))
    assert "params.Device:X:On.v" not in write.update["$set"]
    assert [f.kind for f in facts] == ["informed"]
    write, facts = run(state, inform("2 PERIODIC", params={"Device.X.On": ("1", "xsd:int")},
                                     event_id="other"))
    assert write.update["$set"]["params.Device:X:On.v"] == 1
    assert facts[0].changes[0].old == "true" and facts[0].changes[0].new == "1"


def test_bootstrap_replaces_the_cached_tree_with_what_the_inform_carries() -> None:
    state = known(**{SV: {"v": "1.0", "t": "xsd:string"}, "Device:Old": {"v": "x", "t": "xsd:string"}})
    write, facts = run(state, inform("0 BOOTSTRAP", params={
        "Device.DeviceInfo.SoftwareVersion": ("2.0", "xsd:string")}))
    sets = write.update["$set"]
    assert sets["params"] == {SV: {"v": "2.0", "t": "xsd:string", "ts": T0}}
    assert sets["software_version"] == "2.0"
    assert write.update["$unset"] == {"silent_since": "", "inform_interval": "",
                                      "connection_request_url": ""}
    assert "Device:Old" not in state.params
    assert [f.kind for f in facts] == ["bootstrapped", "value_changed", "informed"]


def test_silence_deadline_follows_the_interval_of_either_data_model_and_periodic_enable() -> None:
    state = known(**{"InternetGatewayDevice:ManagementServer:PeriodicInformInterval": {"v": 60}})
    write, _ = run(state, inform("2 PERIODIC"))
    assert write.update["$set"]["silent_deadline"] == T0 + timedelta(seconds=180)
    state = known(**{"Device:ManagementServer:PeriodicInformEnable": {"v": False}})
    write, _ = run(state, inform("2 PERIODIC", event_id="x"))
    assert "silent_deadline" not in write.update["$set"]
    assert "silent_deadline" in write.update["$unset"]
    write, _ = run(known(), inform("2 PERIODIC", event_id="y"))
    assert write.update["$set"]["silent_deadline"] == T0 + timedelta(hours=3)


def test_a_periodic_interval_beyond_unsigned_int_falls_back_to_the_default_instead_of_overflowing() -> None:
    name = "InternetGatewayDevice.ManagementServer.PeriodicInformInterval"
    for i, huge in enumerate(("18446744073709551616", "9" * 5000)):  # stored as text: beyond int64
        write, _ = run(known(), inform("2 PERIODIC", params={name: (huge, "xsd:unsignedInt")}, event_id=f"h{i}"))
        assert write.update["$set"]["silent_deadline"] == T0 + timedelta(hours=3)
    stored = {"InternetGatewayDevice:ManagementServer:PeriodicInformInterval": {"v": 2**62}}  # an int64
    write, _ = run(known(**stored), inform("2 PERIODIC", event_id="big"))
    assert write.update["$set"]["silent_deadline"] == T0 + timedelta(hours=3)


def test_gpv_response_updates_values_and_denormalised_fields() -> None:
    state = known(**{SV: {"v": "1.0", "t": "xsd:string", "w": False}})
    write, facts = run(state, response("GetParameterValuesResponse", {"parameter_list": [
        {"name": "Device.DeviceInfo.SoftwareVersion", "value": {"value": "1.1", "type": "xsd:string"}},
        {"name": "Device.ManagementServer.ConnectionRequestURL", "value": "http://cpe:7547/x",
         "type": "xsd:string"}]}))
    assert not write.upsert
    sets = write.update["$set"]
    assert sets[f"params.{SV}.v"] == "1.1" and f"params.{SV}.w" not in sets
    assert sets["software_version"] == "1.1"
    assert sets["connection_request_url"] == "http://cpe:7547/x"
    assert [f.kind for f in facts] == ["value_changed"]
    assert facts[0].changes[0].old == "1.0"


def test_gpn_response_sets_writable_flags_that_changed() -> None:
    state = known(**{"Device:WiFi:": {"w": False}})
    write, facts = run(state, response("GetParameterNamesResponse", {"parameter_list": [
        {"name": "Device.WiFi.", "writable": False},
        {"name": "Device.WiFi.SSID.1.SSID", "writable": True}]}))
    assert write.update["$set"] == {"params.Device:WiFi:SSID:1:SSID.w": True}
    assert facts == []
    again, _ = run(state, response("GetParameterNamesResponse", {"parameter_list": [
        {"name": "Device.WiFi.SSID.1.SSID", "writable": True}]}))
    assert again is None  # nothing new: no write at all


def test_delete_object_unsets_the_subtree_server_side() -> None:
    state = known(**{"Device:WiFi:SSID:2:SSID": {"v": "x"}, "Device:WiFi:SSID:1:SSID": {"v": "y"}})
    write, facts = run(state, response("DeleteObjectResponse", {"status": 0},
                                       request={"method": "DeleteObject", "object_name": "Device.WiFi.SSID.2."}))
    assert isinstance(write.update, list)  # a pipeline: filters the keys inside MongoDB
    assert "$literal" in str(write.update) and "Device:WiFi:SSID:2:" in str(write.update)
    assert set(state.params) == {"Device:WiFi:SSID:1:SSID"}
    assert facts == []


def test_delete_object_takes_the_name_from_the_request_it_answers() -> None:
    observation = observe(response("DeleteObjectResponse", {"status": 0},
                                   request={"method": "DeleteObject", "object_name": "Device.NAT.PortMapping.3."}))
    assert observation is not None and observation.deleted_object == "Device.NAT.PortMapping.3."
    assert observe(response("DeleteObjectResponse", {"status": 0})) is None  # no request: unchanged


def test_add_object_records_the_new_instance() -> None:
    write, _ = run(known(), response("AddObjectResponse", {"instance_number": 4, "status": 0},
                                     request={"method": "AddObject", "object_name": "Device.NAT.PortMapping."}))
    assert write.update["$set"] == {"params.Device:NAT:PortMapping:4:.ts": T0}


def test_responses_for_unknown_devices_and_other_messages_change_nothing() -> None:
    write, facts = run(DeviceState(DEVICE), response("GetParameterValuesResponse", {"parameter_list": [
        {"name": "Device.A", "value": "1"}]}))
    assert write is None and facts == []
    assert observe(response("SetParameterValuesResponse", {"status": 0})) is None
    assert observe(SessionEnded(device_id=DEVICE, session_id="s", reply_to="r", gateway_id="g",
                                outcome="completed")) is None


def test_fact_ids_are_derived_from_the_inbound_message() -> None:
    message = inform("1 BOOT", event_id="abc")
    _, first = run(DeviceState(DEVICE), message)
    _, second = run(DeviceState(DEVICE), message)
    assert [f.event_id for f in first] == [f.event_id for f in second]
    assert len({f.event_id for f in first}) == len(first)


def test_projection_reads_only_mentioned_and_always_needed_parameters() -> None:
    observation = observe(inform("2 PERIODIC", params={"Device.X.A": ("1", "xsd:string")}))
    assert observation is not None
    projection = projection_for([observation])
    assert projection["params.Device:X:A"] == 1 and projection["applied"] == 1
    assert "params.InternetGatewayDevice:ManagementServer:PeriodicInformInterval" in projection
    assert "params" not in projection


def test_planning_later_messages_does_not_alter_earlier_writes() -> None:
    state = DeviceState(DEVICE)
    bootstrap, _ = run(state, inform("0 BOOTSTRAP", params={"Device.X.A": ("1", "xsd:string")}))
    periodic, facts = run(state, inform("2 PERIODIC", params={"Device.X.A": ("2", "xsd:string")}, event_id="p"))
    assert bootstrap.update["$set"]["params"]["Device:X:A"]["v"] == "1"
    assert periodic.update["$set"]["params.Device:X:A.v"] == "2"
    assert facts[0].changes[0].old == "1"


def spv(status: int, *values: tuple[str, str, str], event_id: str = "spv") -> RpcResponseReceived:
    """A SetParameterValuesResponse with the request it answers, as the gateway publishes them."""
    message = response("SetParameterValuesResponse", {"status": status}, request={
        "method": "SetParameterValues", "parameter_key": "k",
        "parameter_list": [{"name": n, "value": {"value": v, "type": t}} for n, v, t in values]})
    return message.model_copy(update={"event_id": event_id})


def test_spv_status_0_applies_the_values_it_set_and_reports_the_changes() -> None:
    state = known(**{"Device:X:Name": {"v": "old", "t": "xsd:string"}})
    write, facts = run(state, spv(0, ("Device.X.Name", "new", "xsd:string"),
                                  ("Device.X.Port", "8080", "xsd:unsignedInt"),
                                  ("Device.DeviceInfo.SoftwareVersion", "9", "xsd:string")))
    sets = write.update["$set"]
    assert sets["params.Device:X:Name.v"] == "new" and sets["params.Device:X:Port.v"] == 8080
    assert sets["params.Device:X:Name.ts"] == T0
    assert sets["software_version"] == "9"  # denormalised fields follow, as for a read
    assert not any(path.endswith(".r") for path in sets) and "$addToSet" not in write.update
    assert [f.kind for f in facts] == ["value_changed"]
    assert [(c.name, c.old, c.new) for c in facts[0].changes] == [("Device.X.Name", "old", "new")]


def test_spv_status_1_flags_the_values_until_the_device_boots() -> None:
    state = known(**{"Device:X:Name": {"v": "old", "t": "xsd:string"}})
    write, facts = run(state, spv(1, ("Device.X.Name", "new", "xsd:string")))
    assert write.update["$set"]["params.Device:X:Name.v"] == "new"
    assert write.update["$set"]["params.Device:X:Name.r"] is True
    assert write.update["$addToSet"] == {"reboot_pending": {"$each": ["Device.X.Name"]}}
    assert [f.kind for f in facts] == ["value_changed"]  # a change like any other
    assert state.reboot_pending == ["Device.X.Name"]

    # A periodic Inform changes nothing about it; the boot puts it into effect.
    write, _ = run(state, inform("2 PERIODIC", event_id="p"))
    assert "reboot_pending" not in write.update.get("$unset", {})
    write, _ = run(state, inform("1 BOOT", event_id="b"))
    assert {"params.Device:X:Name.r", "reboot_pending"} <= set(write.update["$unset"])
    assert state.reboot_pending == [] and "r" not in state.params["Device:X:Name"]


def test_a_read_of_a_flagged_value_clears_its_flag() -> None:
    state = known(**{"Device:X:A": {"v": "a", "t": "xsd:string", "r": True},
                     "Device:X:B": {"v": "b", "t": "xsd:string", "r": True}})
    state.reboot_pending = ["Device.X.A", "Device.X.B"]
    write, _ = run(state, response("GetParameterValuesResponse", {"parameter_list": [
        {"name": "Device.X.A", "value": {"value": "a", "type": "xsd:string"}}]}))
    assert write.update["$unset"] == {"params.Device:X:A.r": ""}
    assert write.update["$pull"] == {"reboot_pending": {"$in": ["Device.X.A"]}}
    assert state.reboot_pending == ["Device.X.B"]
    # A later Status 0 write applies at once: no flag either.
    write, _ = run(state, spv(0, ("Device.X.B", "c", "xsd:string")))
    assert write.update["$unset"] == {"params.Device:X:B.r": ""} and state.reboot_pending == []


def test_bootstrap_drops_the_flags_with_the_tree() -> None:
    state = known(**{"Device:X:A": {"v": "a", "t": "xsd:string", "r": True}})
    state.reboot_pending = ["Device.X.A"]
    write, _ = run(state, inform("0 BOOTSTRAP", "1 BOOT"))
    assert write.update["$unset"]["reboot_pending"] == ""
    assert not any(path.startswith("params.") for path in write.update["$unset"])  # the tree is $set whole


def test_secret_values_are_never_stored_from_a_write() -> None:
    write, _ = run(known(), spv(0, ("Device.ManagementServer.ConnectionRequestPassword", "s3cret", "xsd:string"),
                                    ("Device.WiFi.AccessPoint.1.Security.KeyPassphrase", "wifi-key", "xsd:string"),
                                    ("Device.ManagementServer.ConnectionRequestUsername", "cr-user", "xsd:string")))
    assert "s3cret" not in str(write.update) and "wifi-key" not in str(write.update)
    assert write.update["$set"]["params.Device:ManagementServer:ConnectionRequestUsername.v"] == "cr-user"
    assert observe(spv(0, ("Device.Users.User.1.Password", "x", "xsd:string"))) is None


def test_spv_without_its_request_or_with_another_status_changes_nothing() -> None:
    assert observe(response("SetParameterValuesResponse", {"status": 0})) is None
    assert observe(spv(2, ("Device.X.A", "1", "xsd:string"))) is None


def test_add_object_with_status_1_flags_the_new_instance() -> None:
    state = known()
    write, _ = run(state, response("AddObjectResponse", {"instance_number": 2, "status": 1},
                                   request={"method": "AddObject", "object_name": "Device.NAT.PortMapping."}))
    assert write.update["$set"]["params.Device:NAT:PortMapping:2:.r"] is True
    assert state.reboot_pending == ["Device.NAT.PortMapping.2."]


def test_delete_object_drops_the_flags_below_it() -> None:
    state = known(**{"Device:NAT:PortMapping:2:Enable": {"v": True, "r": True}})
    state.reboot_pending = ["Device.NAT.PortMapping.2.Enable", "Device.X.A"]
    write, _ = run(state, response("DeleteObjectResponse", {"status": 0},
                                   request={"method": "DeleteObject", "object_name": "Device.NAT.PortMapping.2."}))
    assert write.update[0]["$set"]["reboot_pending"] == {"$literal": ["Device.X.A"]}
    assert state.reboot_pending == ["Device.X.A"]
    state.reboot_pending = ["Device.X.A"]
    write, _ = run(state, response("DeleteObjectResponse", {"status": 0}, request={
        "method": "DeleteObject", "object_name": "Device.X."}).model_copy(update={"event_id": "d2"}))
    assert write.update[0]["$set"]["reboot_pending"] == "$$REMOVE"


def test_a_deleted_device_is_deleted_and_its_next_inform_registers_it_again() -> None:
    state = known(**{"Device:X:A": {"v": "a", "t": "xsd:string"}})
    state.applied = ["earlier"]
    deletion = DeviceDeleted(device_id=DEVICE, deleted_by="ops")
    write, facts = run(state, deletion)
    assert write.delete and write.filter == {"_id": DEVICE} and facts == []
    assert not state.exists and state.params == {} and state.applied == []
    # Later messages of the same batch see a device that never existed.
    gpv, _ = run(state, response("GetParameterValuesResponse", {"parameter_list": [
        {"name": "Device.X.A", "value": "b"}]}))
    assert gpv is None
    again, facts = run(state, inform("1 BOOT", params={"Device.X.A": ("c", "xsd:string")}, event_id="i2"))
    assert again.upsert and [f.kind for f in facts] == ["registered", "booted", "informed"]


def test_informed_events_can_leave_out_routine_periodic_informs() -> None:
    from dataclasses import replace

    notable = replace(CONFIG, informed_events="notable")
    state = known()
    _, facts = plan(state, observe(inform("2 PERIODIC", event_id="r1")), notable)
    assert facts == []  # routine: nothing to tell
    _, facts = plan(state, observe(inform("2 PERIODIC", event_id="r2")), CONFIG)
    assert [f.kind for f in facts] == ["informed"]  # "all": as before
    _, facts = plan(state, observe(inform("2 PERIODIC", "4 VALUE CHANGE", event_id="r3",
                                          params={"Device.X.A": ("2", "xsd:string")})), notable)
    assert "informed" in [f.kind for f in facts]  # not routine
