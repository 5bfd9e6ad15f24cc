"""The CPE session state machine and the device behind it, driven without any socket."""

from __future__ import annotations

import pytest

from cwmp.codec import CWMP_NS_1_0, CWMP_NS_1_2, build_envelope, parse_envelope
from cwmp.faults import CwmpFault
from cwmp.models import (
    CancelTransfer,
    CancelTransferResponse,
    ChangeDUState,
    ChangeDUStateResponse,
    Download,
    DownloadResponse,
    DUStateChangeComplete,
    DUStateChangeCompleteResponse,
    FactoryReset,
    FaultStruct,
    GetAllQueuedTransfers,
    GetAllQueuedTransfersResponse,
    GetParameterValues,
    GetParameterValuesResponse,
    GetRPCMethodsResponse,
    Inform,
    InformResponse,
    InstallOpStruct,
    ParameterValueStruct,
    Reboot,
    ScheduleDownload,
    ScheduleInform,
    SetParameterValues,
    TimeWindowStruct,
    TransferComplete,
    TransferCompleteResponse,
    UninstallOpStruct,
    UpdateOpStruct,
    Upload,
)
from cwmp.values import ParameterValue
from simulator.config import FleetSettings
from simulator.device import PROFILES, Device, Transfer
from simulator.session import CpeSession, OutKind, SessionFailed
from simulator.template import load_template

URL = "http://acs.example/"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wakes() -> list[float]:
    return []


def make_device(clock: Clock, wakes: list[float], model: str = "tr098", **settings: object) -> Device:
    s = FleetSettings(acs_url=URL, serial_prefix="T", clock=clock, seed=7,
                      cr_base_url="http://127.0.0.1:9999", **settings)  # type: ignore[arg-type]
    device = Device(42, PROFILES[model], load_template(model), s, lambda _d, when: wakes.append(when))
    device.boot(clock())
    return device


@pytest.fixture
def device(clock: Clock, wakes: list[float]) -> Device:
    return make_device(clock, wakes)


def acs(message: object, cwmp_id: str | None = "acs-1", ns: str = CWMP_NS_1_2, hold: bool | None = None) -> bytes:
    return build_envelope(message, cwmp_ns=ns, cwmp_id=cwmp_id, hold_requests=hold)  # type: ignore[arg-type]


def inform_response(session: CpeSession, hold: bool | None = None) -> bytes:
    sent = parse_envelope(session._current[1])  # type: ignore[index]
    return acs(InformResponse(), cwmp_id=sent.header.id, hold=hold)


def events(inform: Inform) -> list[tuple[str, str]]:
    return [(e.event_code, e.command_key) for e in inform.event]


def run_until_idle(session: CpeSession) -> None:
    """Start and acknowledge the Inform; leaves the session after the empty POST."""
    out = session.start()
    assert out.kind is OutKind.REQUEST
    out2 = session.receive(200, inform_response(session))
    assert out2 is not None and out2.kind is OutKind.EMPTY


# -- the Inform ------------------------------------------------------------------------------


def test_first_inform_is_bootstrap_and_boot_with_the_forced_parameters(device: Device) -> None:
    session = CpeSession(device, url=URL)
    out = session.start()
    envelope = parse_envelope(out.body)
    inform = envelope.message
    assert isinstance(inform, Inform)
    assert envelope.cwmp_ns == CWMP_NS_1_2
    assert events(inform) == [("0 BOOTSTRAP", ""), ("1 BOOT", "")]
    assert inform.device_id.serial_number == "T000042"
    assert inform.device_id.oui == "00D09E"
    params = {p.name: p.value.value for p in inform.parameter_list}
    assert set(params) == set(load_template("tr098").forced_inform)
    assert params["InternetGatewayDevice.ManagementServer.ConnectionRequestURL"] == "http://127.0.0.1:9999/42"
    assert params["InternetGatewayDevice.DeviceInfo.SoftwareVersion"] == "1.0.0"
    assert inform.retry_count == 0 and inform.max_envelopes == 1


def test_cwmp_1_4_sends_supported_versions_and_session_timeout(clock: Clock, wakes: list[float]) -> None:
    device = make_device(clock, wakes, model="tr181")
    out = CpeSession(device, url=URL, cwmp_version="1.4").start()
    header = parse_envelope(out.body).header
    assert header.supported_cwmp_versions == "1.0,1.1,1.2,1.3,1.4"
    assert header.session_timeout == 30


def test_informresponse_acknowledges_events_and_bootstrap(device: Device) -> None:
    session = CpeSession(device, url=URL)
    run_until_idle(session)
    assert session.receive(204, b"") is None
    assert session.done
    assert device.rt.events == []
    assert device.bootstrapped_url == URL
    # The next session is a plain one: no BOOTSTRAP again.
    device.add_event("2 PERIODIC")
    inform = CpeSession(device, url=URL).start()
    assert events(parse_envelope(inform.body).message) == [("2 PERIODIC", "")]  # type: ignore[arg-type]


def test_acs_url_change_means_bootstrap_again(device: Device) -> None:
    session = CpeSession(device, url=URL)
    run_until_idle(session)
    session.receive(204, b"")
    device.add_event("2 PERIODIC")
    out = CpeSession(device, url="http://other-acs/").start()
    assert ("0 BOOTSTRAP", "") in events(parse_envelope(out.body).message)  # type: ignore[arg-type]


def test_8005_to_the_inform_resends_it_unchanged(device: Device) -> None:
    session = CpeSession(device, url=URL)
    first = session.start()
    again = session.receive(200, acs(CwmpFault.from_code(8005), cwmp_id="1"))
    assert again is not None and again.body == first.body


@pytest.mark.parametrize(("status", "body", "reason"), [
    (200, acs(CwmpFault.from_code(8002)), "Inform faulted: 8002"),
    (204, b"", "empty reply to Inform"),
    (500, b"", "HTTP 500"),
    (200, b"<html>oops</html>", "malformed ACS reply"),
    (200, acs(GetParameterValuesResponse()), "expected InformResponse"),
])
def test_a_bad_answer_to_the_inform_fails_the_session(device: Device, status: int, body: bytes,
                                                      reason: str) -> None:
    session = CpeSession(device, url=URL)
    session.start()
    with pytest.raises(SessionFailed, match=reason):
        session.receive(status, body)
    assert ("1 BOOT", "") in device.rt.events  # not acknowledged: kept for the retry


# -- ACS requests --------------------------------------------------------------------------


def test_acs_request_is_answered_with_its_id_and_namespace(device: Device) -> None:
    session = CpeSession(device, url=URL)
    run_until_idle(session)
    request = GetParameterValues(["InternetGatewayDevice.DeviceInfo.SerialNumber"])
    out = session.receive(200, acs(request, cwmp_id="gpv-7", ns=CWMP_NS_1_0))
    assert out is not None and out.kind is OutKind.RESPONSE
    envelope = parse_envelope(out.body)
    assert envelope.header.id == "gpv-7"
    assert envelope.cwmp_ns == CWMP_NS_1_0
    assert envelope.message == GetParameterValuesResponse(
        [ParameterValueStruct("InternetGatewayDevice.DeviceInfo.SerialNumber", ParameterValue("T000042"))])
    assert session.receive(204, b"") is None
    assert session.rpcs == ["GetParameterValues"]


def test_cpe_fault_goes_back_with_the_id(device: Device) -> None:
    session = CpeSession(device, url=URL)
    run_until_idle(session)
    out = session.receive(200, acs(GetParameterValues(["InternetGatewayDevice.Bogus."]), cwmp_id="x1"))
    assert out is not None
    envelope = parse_envelope(out.body)
    assert isinstance(envelope.message, CwmpFault) and envelope.message.code == 9005
    assert envelope.header.id == "x1"
    assert session.faults_sent == [9005]


def test_unknown_method_gets_9000(device: Device) -> None:
    session = CpeSession(device, url=URL)
    run_until_idle(session)
    body = acs(GetParameterValues(["x"]), cwmp_id="bogus-1").replace(b"GetParameterValues", b"X_Bogus")
    out = session.receive(200, body)
    assert out is not None
    envelope = parse_envelope(out.body)
    assert isinstance(envelope.message, CwmpFault) and envelope.message.code == 9000
    assert envelope.header.id == "bogus-1"


def test_request_with_a_missing_required_field_gets_9003(device: Device) -> None:
    session = CpeSession(device, url=URL)
    run_until_idle(session)
    body = acs(Download(url="http://f/x"), cwmp_id="dl").replace(b"<URL>http://f/x</URL>", b"")
    out = session.receive(200, body)
    assert out is not None
    fault = parse_envelope(out.body).message
    assert isinstance(fault, CwmpFault) and fault.code == 9003


def test_get_rpc_methods_lists_what_the_device_implements(device: Device) -> None:
    from cwmp.models import GetRPCMethods

    response = device.handle(GetRPCMethods())
    assert isinstance(response, GetRPCMethodsResponse)
    assert {"GetParameterNames", "SetParameterValues", "Download", "Reboot", "FactoryReset"} <= set(
        response.method_list)


def test_acs_response_when_nothing_is_outstanding_fails(device: Device) -> None:
    session = CpeSession(device, url=URL)
    run_until_idle(session)
    with pytest.raises(SessionFailed, match="unexpected InformResponse"):
        session.receive(200, acs(InformResponse()))


# -- TransferComplete and HoldRequests -------------------------------------------------------


def add_finished_download(device: Device, key: str = "dl-1", code: int = 0) -> TransferComplete:
    transfer = Transfer(key, True, "1 Firmware Upgrade Image", "http://f/fw-2.0.bin", "", "", 0, "", 0.0,
                        "M Download")
    device.rt.transfers.append(transfer)
    result = TransferComplete(key, FaultStruct(code, ""), "2025-01-01T00:00:00Z", "2025-01-01T00:00:10Z")
    device.transfer_finished(transfer, result, "2.0" if code == 0 else None)
    return result


def test_transfer_complete_follows_the_informresponse(device: Device) -> None:
    CpeSession(device, url=URL).start()  # the BOOTSTRAP session is not acknowledged: irrelevant here
    device.rt.events.clear()
    tc = add_finished_download(device)
    session = CpeSession(device, url=URL)
    inform = parse_envelope(session.start().body).message
    assert {("7 TRANSFER COMPLETE", ""), ("M Download", "dl-1")} <= set(events(inform))  # type: ignore[arg-type]
    out = session.receive(200, inform_response(session))
    assert out is not None and out.kind is OutKind.REQUEST and out.method == "TransferComplete"
    sent = parse_envelope(out.body)
    assert sent.message == tc
    # Until the ACS answers, the events stay (T26).
    assert ("M Download", "dl-1") in device.rt.events
    empty = session.receive(200, acs(TransferCompleteResponse(), cwmp_id=sent.header.id))
    assert empty is not None and empty.kind is OutKind.EMPTY
    assert device.rt.pending_tcs == []
    assert all(code not in ("7 TRANSFER COMPLETE", "M Download") for code, _k in device.rt.events)


def test_hold_requests_defers_the_transfer_complete_until_the_204(device: Device) -> None:
    device.rt.events.clear()
    add_finished_download(device)
    session = CpeSession(device, url=URL)
    session.start()
    out = session.receive(200, inform_response(session, hold=True))
    assert out is not None and out.kind is OutKind.EMPTY  # HoldRequests: no request now
    out = session.receive(200, acs(GetParameterValues(["InternetGatewayDevice.DeviceInfo.UpTime"]), hold=True))
    assert out is not None and out.kind is OutKind.RESPONSE
    out = session.receive(204, b"")  # a 204 lifts HoldRequests (T10)
    assert out is not None and out.method == "TransferComplete"
    out = session.receive(200, acs(TransferCompleteResponse(), cwmp_id=parse_envelope(out.body).header.id))
    assert out is not None and out.kind is OutKind.EMPTY
    assert session.receive(204, b"") is None


def test_faulted_transfer_complete_stays_for_a_later_session(device: Device) -> None:
    device.rt.events.clear()
    add_finished_download(device)
    session = CpeSession(device, url=URL)
    session.start()
    out = session.receive(200, inform_response(session))
    assert out is not None and out.method == "TransferComplete"
    out = session.receive(200, acs(CwmpFault.from_code(8002)))
    assert out is not None and out.kind is OutKind.EMPTY
    assert session.receive(204, b"") is None
    assert len(device.rt.pending_tcs) == 1
    # Delivered events alone do not trigger a new session; the next Inform carries them again.
    assert not device.wants_session(1e9)


# -- device behaviour behind the RPCs ----------------------------------------------------------


def test_reboot_then_boot_reports_m_reboot(device: Device, clock: Clock) -> None:
    device.rt.events.clear()
    device.handle(Reboot(command_key="rb-1"))
    assert device.reboot_key == "rb-1"
    device.bootstrapped_url = URL
    device.boot(clock())
    assert device.rt.events == [("1 BOOT", ""), ("M Reboot", "rb-1")]


def test_factory_reset_resets_the_data_model_and_bootstraps(device: Device, clock: Clock) -> None:
    ms = "InternetGatewayDevice.ManagementServer."
    device.handle(SetParameterValues([ParameterValueStruct(ms + "PeriodicInformInterval",
                                                           ParameterValue("77", "xsd:unsignedInt"))], "k"))
    device.bootstrapped_url = URL
    device.rt.events.clear()
    device.handle(FactoryReset())
    device.boot(clock(), factory_reset=True)
    assert device.model.get(ms + "PeriodicInformInterval") == "300"
    assert device.model.get(ms + "ParameterKey") == ""
    inform = device.build_inform(URL)
    assert events(inform) == [("0 BOOTSTRAP", ""), ("1 BOOT", "")]


def test_schedule_inform_fires_3_scheduled_with_its_key(device: Device, clock: Clock,
                                                        wakes: list[float]) -> None:
    device.rt.events.clear()
    device.handle(ScheduleInform(delay_seconds=30, command_key="si-1"))
    assert clock() + 30 in wakes
    clock.now += 31
    device.tick(clock())
    assert ("3 SCHEDULED", "") in device.rt.events and ("M ScheduleInform", "si-1") in device.rt.events
    with pytest.raises(CwmpFault) as excinfo:
        device.handle(ScheduleInform(delay_seconds=0))
    assert excinfo.value.code == 9003


def test_periodic_interval_set_by_the_acs_is_honoured(device: Device, clock: Clock) -> None:
    ms = "InternetGatewayDevice.ManagementServer."
    device.handle(SetParameterValues([ParameterValueStruct(ms + "PeriodicInformInterval",
                                                           ParameterValue("60", "xsd:unsignedInt"))], "k"))
    assert device.periodic_due is not None
    assert clock() + 60 <= device.periodic_due <= clock() + 60 * 1.05
    device.rt.events.clear()
    first_base = device.periodic_base
    clock.now = device.periodic_due
    device.tick(clock())
    assert device.rt.events == [("2 PERIODIC", "")]
    # The next one is one interval after the previous base, so jitter does not accumulate.
    assert device.periodic_base == first_base + 60
    assert device.periodic_due is not None and device.periodic_due >= first_base + 60
    device.handle(SetParameterValues([ParameterValueStruct(ms + "PeriodicInformEnable",
                                                           ParameterValue("false", "xsd:boolean"))], "k2"))
    assert device.periodic_due is None


def test_download_is_accepted_pending_and_unsupported_schemes_are_9013(device: Device) -> None:
    response = device.handle(Download(command_key="d1", url="http://files/fw-2.1.0.bin", file_size=10))
    assert response == DownloadResponse(status=1, start_time="0001-01-01T00:00:00Z",
                                        complete_time="0001-01-01T00:00:00Z")
    assert [t.command_key for t in device.transfers_to_start()] == ["d1"]
    with pytest.raises(CwmpFault) as excinfo:
        device.handle(Download(command_key="d2", url="ftp://files/fw.bin"))
    assert excinfo.value.code == 9013
    device.handle(Upload(command_key="u1", url="http://files/up"))
    assert len(device.rt.transfers) == 2


def test_firmware_transfer_changes_the_version_at_the_next_boot(device: Device, clock: Clock) -> None:
    device.bootstrapped_url = URL
    device.rt.events.clear()
    add_finished_download(device, "fw-1")
    assert device.firmware_pending == "2.0"
    device.boot(clock())
    inform = device.build_inform(URL)
    assert set(events(inform)) == {("1 BOOT", ""), ("4 VALUE CHANGE", ""), ("7 TRANSFER COMPLETE", ""),
                                   ("M Download", "fw-1")}
    params = {p.name: p.value.value for p in inform.parameter_list}
    assert params["InternetGatewayDevice.DeviceInfo.SoftwareVersion"] == "2.0"


def test_retry_backoff_and_retry_count(device: Device, clock: Clock, wakes: list[float]) -> None:
    device.session_ended(False, clock())
    assert device.retry_count == 1
    assert clock() + 5 <= device.retry_at <= clock() + 10  # T16 table, retry #1
    assert not device.wants_session(clock())  # waiting for the backoff
    assert device.wants_session(device.retry_at)
    device.session_ended(False, clock())
    assert clock() + 10 <= device.retry_at <= clock() + 20  # retry #2
    assert device.build_inform(URL).retry_count == 2
    device.session_ended(True, clock())
    assert device.retry_count == 0


# -- ChangeDUState (TR-157 deployment units) -----------------------------------------------------


def _answer_acs(session: CpeSession, message: object) -> object:
    out = session.receive(200, acs(message))
    assert out is not None and out.kind is OutKind.RESPONSE
    return parse_envelope(out.body).message


def test_change_du_state_installs_updates_uninstalls_and_reports_in_a_new_session(
        clock: Clock, wakes: list[float]) -> None:
    device = make_device(clock, wakes, "tr181")
    session = CpeSession(device, url=URL)
    run_until_idle(session)
    table = "Device.SoftwareModules.DeploymentUnit."
    answer = _answer_acs(session, ChangeDUState((
        InstallOpStruct("http://files.test/download/app.ipk"),
        InstallOpStruct("ftp://files.test/other.ipk"),
        UninstallOpStruct("6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
    ), "du-1"))
    assert isinstance(answer, ChangeDUStateResponse)
    rows = device.model.get_parameter_names(table, True)
    assert [r.name for r in rows] == [f"{table}1."]
    uuid = device.model.get(f"{table}1.UUID")
    assert device.model.get(f"{table}1.URL") == "http://files.test/download/app.ipk"
    assert device.model.get("Device.SoftwareModules.DeploymentUnitNumberOfEntries") == "1"
    assert wakes, "the device wants a new session to report"

    report = CpeSession(device, url=URL)
    inform = parse_envelope(report.start().body).message
    assert {("11 DU STATE CHANGE COMPLETE", ""), ("M ChangeDUState", "du-1")} <= set(events(inform))  # type: ignore[arg-type]
    out = report.receive(200, inform_response(report))
    assert out is not None and out.method == "DUStateChangeComplete"
    sent = parse_envelope(out.body)
    message = sent.message
    assert isinstance(message, DUStateChangeComplete) and message.command_key == "du-1"
    assert [(r.current_state, r.fault.fault_code) for r in message.results] == [
        ("Installed", 0), ("Failed", 9013), ("Failed", 9028)]
    assert message.results[0].uuid == uuid and message.results[0].deployment_unit_ref == f"{table}1"
    empty = report.receive(200, acs(DUStateChangeCompleteResponse(), cwmp_id=sent.header.id))
    assert empty is not None and empty.kind is OutKind.EMPTY
    assert device.rt.pending_tcs == []
    assert all(c not in ("11 DU STATE CHANGE COMPLETE", "M ChangeDUState") for c, _k in device.rt.events)

    # Update bumps the version, uninstall removes the row; a second install of the same URL is 9026.
    _answer_acs(report, ChangeDUState((UpdateOpStruct(uuid=uuid), InstallOpStruct("http://files.test/download/app.ipk"),
                                       UninstallOpStruct(uuid, "1.1")), "du-2"))
    (_event, done) = device.rt.pending_tcs[-1]
    assert isinstance(done, DUStateChangeComplete)
    assert [(r.current_state, r.version, r.fault.fault_code) for r in done.results] == [
        ("Installed", "1.1", 0), ("Failed", "", 9026), ("Uninstalled", "1.1", 0)]
    assert device.model.get_parameter_names(table, True) == []


def test_a_transfer_waiting_for_its_window_can_be_cancelled_a_running_one_cannot(device: Device) -> None:
    device.handle(ScheduleDownload(command_key="sd1", url="http://files/fw.bin", file_size=10,
                                   time_window_list=(TimeWindowStruct(3600, 7200),)))
    assert [t.command_key for t in device.transfers_to_start()] == ["sd1"]  # handed to the runner, waiting
    queued = device.handle(GetAllQueuedTransfers())
    assert isinstance(queued, GetAllQueuedTransfersResponse)
    assert [(t.command_key, t.state, t.is_download) for t in queued.transfer_list] == [("sd1", 1, True)]
    assert isinstance(device.handle(CancelTransfer("sd1")), CancelTransferResponse)
    assert device.rt.transfers == []
    device.handle(Download(command_key="d1", url="http://files/fw.bin", file_size=10))
    device.rt.transfers[0].state = 2  # the runner started it
    with pytest.raises(CwmpFault) as excinfo:
        device.handle(CancelTransfer("d1"))
    assert excinfo.value.code == 9021


def test_a_local_change_is_reported_as_value_change_only_with_notification_on(
        device: Device, clock: Clock, wakes: list[float]) -> None:
    from cwmp.models import SetParameterAttributes, SetParameterAttributesStruct

    device.bootstrapped_url = URL
    device.rt.events.clear()
    ntp = "InternetGatewayDevice.Time.NTPServer1"
    assert device.change_locally(ntp, "quiet.example")  # notification off: nobody asked to know
    assert not device.has_event("4 VALUE CHANGE")
    assert not device.change_locally(ntp, "quiet.example")  # the same value: no change
    assert not device.change_locally("InternetGatewayDevice.No.Such", "x")
    device.handle(SetParameterAttributes([SetParameterAttributesStruct(ntp, True, 2, False, ())]))
    woken = len(wakes)
    assert device.change_locally(ntp, "local.example")
    inform = device.build_inform(URL)
    assert ("4 VALUE CHANGE", "") in events(inform)
    assert {p.name: p.value.value for p in inform.parameter_list}[ntp] == "local.example"
    assert len(wakes) > woken  # active notification: a session at once


def test_a_value_applied_after_reboot_answers_status_1_and_holds_after_the_boot(
        clock: Clock, wakes: list[float]) -> None:
    device = make_device(clock, wakes, apply_after_reboot=("Time.NTPServer1",))
    ntp, other = "InternetGatewayDevice.Time.NTPServer1", "InternetGatewayDevice.Time.NTPServer2"
    old = device.model.get(ntp)
    answer = device.handle(SetParameterValues([
        ParameterValueStruct(ntp, ParameterValue("later.example", "xsd:string")),
        ParameterValueStruct(other, ParameterValue("now.example", "xsd:string"))], "k"))
    assert answer.status == 1  # type: ignore[union-attr]
    assert device.model.get(ntp) == old and device.model.get(other) == "now.example"
    assert device.after_boot == {ntp: "later.example"}
    device.boot(clock())
    assert device.model.get(ntp) == "later.example" and device.after_boot == {}
    # Only those names: a SetParameterValues without them answers Status 0.
    assert device.handle(SetParameterValues([  # type: ignore[union-attr]
        ParameterValueStruct(other, ParameterValue("again.example", "xsd:string"))], "k")).status == 0
