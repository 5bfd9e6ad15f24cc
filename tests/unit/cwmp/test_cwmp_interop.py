"""Real captures: the seed walk-through (a commercial ACS and the Workssys IGD simulator) and the
interop recordings (easycwmp 1.8.6, cwmp-sim) parse to the right models, and the replies the
library builds match what a correct ACS sends."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from cwmp import (
    CWMP_NS_1_0,
    CWMP_NS_1_2,
    UNKNOWN_TIME,
    AcsSession,
    CwmpFault,
    EmptyPostReceived,
    Envelope,
    FaultReceived,
    Header,
    InformReceived,
    RequestReceived,
    ResponseReceived,
    SetParameterValuesFault,
    State,
    build_envelope,
    default_response,
    is_empty_body,
    parse_envelope,
)
from cwmp import models as m
from tests.unit.cwmp.cwmp_samples import INTEROP_DIR, SEED_DIR, extract_seed_envelopes

SEED_FILE = SEED_DIR / "000_160ae486a397a4f3.txt"


@pytest.fixture(scope="module")
def seed() -> dict[int, tuple[bytes, Envelope]]:
    """line number of the envelope in the capture -> (bytes, parsed envelope)"""
    found = extract_seed_envelopes(SEED_FILE.read_text(encoding="utf-8"))
    return {line: (body, parse_envelope(body, "text/xml; charset=utf-8")) for line, body in found}


def _c14n(body: bytes) -> bytes:
    return etree.tostring(etree.fromstring(body), method="c14n")


def _http_capture(name: str) -> tuple[dict[str, str], bytes, bytes | None]:
    """(request headers, request body, recorded ACS reply envelope or None) of a .http.txt."""
    raw = (INTEROP_DIR / f"{name}.http.txt").read_bytes()
    request, _, reply = raw.partition(b"\n---- ACS reply:")
    head, _, body = request.partition(b"\n\n")
    headers = {}
    for line in head.decode("latin-1").splitlines()[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    start = reply.find(b"<?xml")
    return headers, body, (reply[start:].strip() if start >= 0 else None)


def _interop(name: str) -> Envelope:
    headers, body, _ = _http_capture(name)
    envelope = parse_envelope(body, headers.get("content-type"))
    assert envelope == parse_envelope((INTEROP_DIR / f"{name}.xml").read_bytes())
    return envelope


# ---------------------------------------------------------------------------------------
# The seed
# ---------------------------------------------------------------------------------------


def test_seed_holds_35_complete_envelopes(seed: dict[int, tuple[bytes, Envelope]]) -> None:
    assert len(seed) == 35
    assert {env.cwmp_ns for _, env in seed.values()} == {CWMP_NS_1_0}
    methods = [env.method for _, env in seed.values()]
    assert methods.count("Inform") == 6
    assert methods.count("GetParameterValuesResponse") == 4
    assert methods.count("InformResponse") == 3


def test_seed_inform(seed: dict[int, tuple[bytes, Envelope]]) -> None:
    env = seed[421][1]
    assert env.header.id == "1785452630"
    inform = env.message
    assert isinstance(inform, m.Inform)
    assert inform.device_id == m.DeviceId("Workssys", "09D021", "IGD Simulator", "000000000012")
    assert inform.event == (m.EventStruct("1 BOOT", ""),)
    assert (inform.max_envelopes, inform.retry_count) == (1, 0)
    assert inform.current_time == "2016-06-01T23:39:09-04:00"  # the CPE's text, zone kept
    params = {p.name: p.value for p in inform.parameter_list}
    assert len(params) == 7
    assert params["InternetGatewayDevice.DeviceInfo.SoftwareVersion"] == m.ParameterValue(
        "Rev 1.9.82.342.17", "xsd:string"
    )
    assert params["InternetGatewayDevice.ManagementServer.ConnectionRequestURL"].value == "http://A:10016/"
    assert params["InternetGatewayDevice.ManagementServer.ParameterKey"] == m.ParameterValue("", "xsd:string")
    wan_ip = "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.WANPPPConnection.1.ExternalIPAddress"
    assert params[wan_ip].value == "10.10.6.56"


def test_seed_transfer_complete_session(seed: dict[int, tuple[bytes, Envelope]]) -> None:
    inform = seed[2928][1].message
    assert isinstance(inform, m.Inform)
    assert [(e.event_code, e.command_key) for e in inform.event] == [
        ("2 PERIODIC", ""),
        ("7 TRANSFER COMPLETE", ""),
        ("M Download", "1464922149048_BF3C937DCE59AE812C"),
    ]
    tc = seed[3154][1]
    assert tc.message == m.TransferComplete(
        "1464922149048_BF3C937DCE59AE812C",
        m.FaultStruct(0, ""),
        "2016-06-02T22:49:10-04:00",
        "2016-06-02T22:49:10-04:00",
    )
    assert tc.header.id == "128833757"


def test_seed_acs_requests_and_cpe_responses(seed: dict[int, tuple[bytes, Envelope]]) -> None:
    spv = seed[841][1]
    assert spv.message == m.SetParameterValues(
        (
            m.ParameterValueStruct(
                "InternetGatewayDevice.ManagementServer.ConnectionRequestUsername", m.ParameterValue("test")
            ),
            m.ParameterValueStruct(
                "InternetGatewayDevice.ManagementServer.ConnectionRequestPassword", m.ParameterValue("test")
            ),
        ),
        "",
    )
    assert seed[869][1].message == m.SetParameterValuesResponse(1)
    assert seed[917][1].message == m.GetParameterNames("InternetGatewayDevice.WANDevice.1.WANConnectionDevice.", True)
    assert seed[939][1].message == m.GetParameterNamesResponse(
        (m.ParameterInfoStruct("InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.", True),)
    )
    gpv = seed[1419][1].message
    assert isinstance(gpv, m.GetParameterValuesResponse)
    prefix = "InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.WANPPPConnection.1."
    assert {p.name: p.value.value for p in gpv.parameter_list} == {
        prefix + "DefaultGateway": "10.10.0.1",
        prefix + "MACAddress": "000000000009",
    }
    methods = seed[1581][1].message
    assert isinstance(methods, m.GetRPCMethodsResponse)
    assert len(methods.method_list) == 17  # arrayType "cwmp:string[17]": a non-standard item type
    assert "X_WKS_SetParameterValuesCrypt" in methods.method_list
    download = seed[2288][1].message
    assert isinstance(download, m.Download)
    assert (download.command_key, download.file_type, download.file_size) == (
        "1464917704684_48E4A23255A058F89C",
        "1 Firmware Upgrade Image",
        83687,
    )
    assert (download.username, download.password) == ("download", "download")
    assert download.url == "http://172.31.50.211:8080/tr/fwStore/1464848265799_param.xml"
    assert seed[2320][1].message == m.DownloadResponse(1, UNKNOWN_TIME, UNKNOWN_TIME)


@pytest.mark.parametrize("line", [803, 2130, 3124, 3222, 841, 917, 1077, 1559, 2288])
def test_library_rebuilds_the_seed_acs_envelopes(seed: dict[int, tuple[bytes, Envelope]], line: int) -> None:
    """What the commercial ACS sent (SOAP-ENV prefixes, encodingStyle) equals what we build."""
    _, env = seed[line]
    assert env.message is not None
    ours = parse_envelope(build_envelope(env.message, cwmp_ns=env.cwmp_ns or "", cwmp_id=env.header.id))
    assert ours == env


def test_seed_first_session_replayed_through_the_session_machine(seed: dict[int, tuple[bytes, Envelope]]) -> None:
    """Inform, InformResponse, empty POST, then the ACS's SPV/GPN/GPV/GetRPCMethods, each
    answered by the CPE with the same cwmp:ID, then 204."""
    session = AcsSession(now=0.0, session_id="seed")
    event = session.receive_body(seed[625][0], "text/xml; charset=utf-8", now=1.0)
    assert isinstance(event, InformReceived)
    reply = session.respond(m.InformResponse(), now=1.0)
    assert parse_envelope(reply.body) == seed[803][1]  # same ID, namespace and MaxEnvelopes=1
    assert isinstance(session.receive_body(b"", now=2.0), EmptyPostReceived)
    exchanges = [(841, 869), (917, 939), (997, 1019), (1077, 1099), (1157, 1179), (1237, 1259)]
    exchanges += [(1317, 1339), (1397, 1419), (1489, 1511), (1559, 1581)]
    for t, (request_line, response_line) in enumerate(exchanges, start=3):
        acs = seed[request_line][1]
        assert acs.message is not None and not isinstance(acs.message, CwmpFault)
        out = session.send_request(acs.message, now=float(t), cwmp_id=acs.header.id)
        assert parse_envelope(out.body) == acs
        event = session.receive_body(seed[response_line][0], now=float(t))
        assert isinstance(event, ResponseReceived)
        assert event.request.request == acs.message
        assert event.response == seed[response_line][1].message
    assert session.end(now=20.0).status == 204
    assert session.state is State.ENDED


def test_seed_transfer_complete_answered_with_the_same_id(seed: dict[int, tuple[bytes, Envelope]]) -> None:
    session = AcsSession(now=0.0)
    assert isinstance(session.receive_body(seed[2928][0], now=0.0), InformReceived)
    assert parse_envelope(session.respond(m.InformResponse(), now=0.0).body) == seed[3124][1]
    event = session.receive_body(seed[3154][0], now=1.0)
    assert isinstance(event, RequestReceived)
    reply = session.respond(default_response(event.request), now=1.0)
    assert parse_envelope(reply.body) == seed[3222][1]


# ---------------------------------------------------------------------------------------
# easycwmp and cwmp-sim recordings
# ---------------------------------------------------------------------------------------

INFORMS = {
    "easycwmp_inform_0BOOTSTRAP_1BOOT_digest": [("0 BOOTSTRAP", ""), ("1 BOOT", ""), ("2 PERIODIC", "")],
    "easycwmp_inform_0BOOTSTRAP_1BOOT_unauthenticated": [("0 BOOTSTRAP", ""), ("1 BOOT", ""), ("2 PERIODIC", "")],
    "easycwmp_inform_1BOOT_7TRANSFERCOMPLETE_MDownload": [
        ("7 TRANSFER COMPLETE", ""),
        ("M Download", "dl-1"),
        ("1 BOOT", ""),
    ],
    "easycwmp_inform_1BOOT_MReboot": [("M Reboot", "reboot-1"), ("1 BOOT", "")],
    "easycwmp_inform_after_FactoryReset_0BOOTSTRAP": [("0 BOOTSTRAP", ""), ("1 BOOT", "")],
    "cwmp-sim_builtin-Device_inform_1BOOT": [("1 BOOT", "")],
    "cwmp-sim_inform_7TRANSFERCOMPLETE_MDownload": [("7 TRANSFER COMPLETE", ""), ("M Download", "")],
    "cwmp-sim_tr098-generic_inform_1BOOT": [("1 BOOT", "")],
    "cwmp-sim_tr181-ex220csv_inform_1BOOT": [("1 BOOT", "")],
}


@pytest.mark.parametrize("name", sorted(INFORMS))
def test_interop_inform_and_inform_response(name: str) -> None:
    envelope = _interop(name)
    inform = envelope.message
    assert isinstance(inform, m.Inform)
    assert [(e.event_code, e.command_key) for e in inform.event] == INFORMS[name]
    params = {p.name: p.value for p in inform.parameter_list}
    if name.startswith("easycwmp"):
        assert envelope.cwmp_ns == CWMP_NS_1_2 and envelope.header.id == "1"
        assert inform.device_id == m.DeviceId("easycwmp", "FFFFFF", "easycwmp", "FFFFFF123456")
        assert len(params) == 10
        assert params["Device.ManagementServer.ConnectionRequestURL"] == m.ParameterValue("http://127.0.0.1:7548/")
        # ParameterKey is "pk-4" after the SPV of an earlier session, "" after a (factory) reset.
        expected_key = "" if "BOOTSTRAP" in name else "pk-4"
        assert params["Device.ManagementServer.ParameterKey"] == m.ParameterValue(expected_key, "xsd:string")
    else:
        assert envelope.cwmp_ns == CWMP_NS_1_0
        assert inform.device_id.oui == "000000"
        root = "InternetGatewayDevice." if "tr098" in name else "Device."
        assert all(p.startswith(root) for p in params)
        assert params[root + "ManagementServer.ConnectionRequestURL"].value.startswith("http://127.0.0.1:7557/")
    assert inform.max_envelopes == 1 and inform.retry_count == 0

    _, _, recorded = _http_capture(name)
    reply = build_envelope(m.InformResponse(), cwmp_ns=envelope.cwmp_ns or "", cwmp_id=envelope.header.id)
    if recorded is not None:  # the unauthenticated capture was answered with 401
        assert _c14n(reply) == _c14n(recorded)
    # MaxEnvelopes=1, the CPE's cwmp:ID echoed, the CPE's namespace, nothing else.
    assert parse_envelope(reply) == Envelope(envelope.cwmp_ns, Header(id=envelope.header.id), m.InformResponse(1))


def test_interop_cwmp_sim_tr181_values() -> None:
    inform = _interop("cwmp-sim_tr181-ex220csv_inform_1BOOT").message
    assert isinstance(inform, m.Inform)
    assert inform.device_id == m.DeviceId("TP-Link", "000000", "Device2", "MIX0000")
    assert inform.parameter_list[1] == m.ParameterValueStruct(
        "Device.DeviceInfo.SoftwareVersion", m.ParameterValue("0.14.0 2.0.0 v605f.0 Build 221227 Rel.55257n")
    )


@pytest.mark.parametrize("name", ["easycwmp_TransferComplete", "cwmp-sim_TransferComplete"])
def test_interop_transfer_complete(name: str) -> None:
    envelope = _interop(name)
    tc = envelope.message
    assert isinstance(tc, m.TransferComplete)
    assert tc.command_key == "dl-1"
    assert tc.fault_struct == m.FaultStruct(0, "")
    if name.startswith("easycwmp"):
        assert (tc.start_time, tc.complete_time) == ("2026-11-23T18:34:34+00:00", "2026-11-23T18:35:16+00:00")
    else:  # cwmp-sim sends FaultStruct last: order does not matter to the parser
        assert (tc.start_time, tc.complete_time) == ("2026-11-23T18:25:44.249Z", "2026-11-23T18:25:44.251Z")
    _, _, recorded = _http_capture(name)
    assert recorded is not None
    reply = build_envelope(m.TransferCompleteResponse(), cwmp_ns=envelope.cwmp_ns or "", cwmp_id=envelope.header.id)
    assert _c14n(reply) == _c14n(recorded)


def test_interop_easycwmp_spv_fault_with_parameter_details() -> None:
    envelope = _interop("easycwmp_SPVFault_9003_9005")
    assert envelope.header.id == "acs-spvbad-1795458873"
    assert envelope.cwmp_ns == CWMP_NS_1_2
    assert envelope.message == CwmpFault(
        9003,
        "Invalid arguments",
        (SetParameterValuesFault("Device.No.Such.Param", 9005, "Invalid parameter name"),),
        "Client",
        "CWMP fault",
    )


def test_interop_cwmp_sim_fault_9000() -> None:
    envelope = _interop("cwmp-sim_Fault9000")
    assert envelope.header.id == "acs-bogus-1795458343"
    assert envelope.message == CwmpFault(9000, "Method not supported.", (), "Client", "CWMP fault")


def test_interop_responses() -> None:
    gpa = _interop("easycwmp_GPAResponse").message
    assert gpa == m.GetParameterAttributesResponse(
        (m.ParameterAttributeStruct("Device.DeviceInfo.SoftwareVersion", 0, ()),)
    )
    methods = _interop("easycwmp_GetRPCMethodsResponse").message
    assert isinstance(methods, m.GetRPCMethodsResponse)
    assert methods.method_list[:3] == ("GetRPCMethods", "SetParameterValues", "GetParameterValues")
    assert len(methods.method_list) == 13
    sim_methods = _interop("cwmp-sim_GetRPCMethodsResponse").message
    assert isinstance(sim_methods, m.GetRPCMethodsResponse)
    assert len(sim_methods.method_list) == 17 and sim_methods.method_list[-1] == "CancelTransfer"
    gpv = _interop("cwmp-sim_GPVResponse_partialpath").message
    assert isinstance(gpv, m.GetParameterValuesResponse)
    values = {p.name: p.value for p in gpv.parameter_list}
    assert len(values) == 12
    assert values["Device.DeviceInfo.UpTime"] == m.ParameterValue("0", "xsd:unsignedInt")
    assert values["Device.DeviceInfo.FirstUseDate"] == m.ParameterValue(UNKNOWN_TIME, "xsd:dateTime")
    assert values["Device.DeviceInfo.ProvisioningCode"] == m.ParameterValue("", "xsd:string")


@pytest.mark.parametrize(
    "name",
    [
        "cwmp-sim_GPVResponse_partialpath",
        "cwmp-sim_GetRPCMethodsResponse",
        "easycwmp_GPAResponse",
        "easycwmp_GetRPCMethodsResponse",
        "easycwmp_SPVFault_9003_9005",
        "easycwmp_emptypost_cookie_digest_nc2",
    ],
)
def test_interop_recorded_acs_requests_parse_and_rebuild_identically(name: str) -> None:
    """The recording ACS's requests (GPV, SPA, SPV, GetRPCMethods) are ACS->CPE messages a
    CPE simulator must parse; rebuilding them gives the same canonical XML."""
    _, _, recorded = _http_capture(name)
    assert recorded is not None
    envelope = parse_envelope(recorded)
    assert envelope.message is not None and envelope.header.id
    assert "acs" in envelope.message.SENDERS  # type: ignore[union-attr]
    rebuilt = build_envelope(envelope.message, cwmp_ns=envelope.cwmp_ns or "", cwmp_id=envelope.header.id)
    assert _c14n(rebuilt) == _c14n(recorded)


def test_interop_easycwmp_empty_post() -> None:
    headers, body, _ = _http_capture("easycwmp_emptypost_cookie_digest_nc2")
    assert headers["content-length"] == "0" and "content-type" in headers  # Q7: typed empty POST
    assert is_empty_body(body)


def test_interop_easycwmp_session_end_to_end() -> None:
    """easycwmp's messages through the session machine: Inform, empty POST, GetRPCMethods,
    then an SPV the CPE faults with 9003/9005, then TransferComplete after a 204 (T10)."""
    session = AcsSession(now=0.0, session_id="easy")
    _, inform_body, _ = _http_capture("easycwmp_inform_0BOOTSTRAP_1BOOT_digest")
    assert isinstance(session.receive_body(inform_body, 'text/xml; charset="utf-8"', now=0.0), InformReceived)
    session.respond(m.InformResponse(), now=0.0)
    assert isinstance(session.receive_body(b"", now=1.0), EmptyPostReceived)
    session.send_request(m.GetRPCMethods(), now=1.0, cwmp_id="acs-grm-1795458856")
    event = session.receive_body((INTEROP_DIR / "easycwmp_GetRPCMethodsResponse.xml").read_bytes(), now=2.0)
    assert isinstance(event, ResponseReceived) and event.request.cwmp_id == "acs-grm-1795458856"
    bad = m.SetParameterValues((m.ParameterValueStruct("Device.No.Such.Param", m.ParameterValue("x")),), "")
    session.send_request(bad, now=2.0, cwmp_id="acs-spvbad-1795458873")
    event = session.receive_body((INTEROP_DIR / "easycwmp_SPVFault_9003_9005.xml").read_bytes(), now=3.0)
    assert isinstance(event, FaultReceived)
    assert event.fault.code == 9003 and event.fault.set_parameter_values_faults[0].fault_code == 9005
    assert event.request.request == bad
    session.end(now=3.0)
    event = session.receive_body((INTEROP_DIR / "easycwmp_TransferComplete.xml").read_bytes(), now=4.0)
    assert isinstance(event, RequestReceived) and event.cwmp_id == "2"
    _, _, recorded = _http_capture("easycwmp_TransferComplete")
    assert recorded is not None
    assert _c14n(session.respond(m.TransferCompleteResponse(), now=4.0).body) == _c14n(recorded)


def test_every_interop_xml_file_is_covered() -> None:
    names = {p.stem for p in Path(INTEROP_DIR).glob("*.xml")}
    covered = set(INFORMS) | {
        "easycwmp_TransferComplete",
        "cwmp-sim_TransferComplete",
        "easycwmp_SPVFault_9003_9005",
        "cwmp-sim_Fault9000",
        "easycwmp_GPAResponse",
        "easycwmp_GetRPCMethodsResponse",
        "cwmp-sim_GetRPCMethodsResponse",
        "cwmp-sim_GPVResponse_partialpath",
    }
    assert names == covered
