"""The ACS-side session state machine, rule by rule (checklist T9-T15, T20, T21, Q1, Q9)."""

from __future__ import annotations

import json

import pytest

from cwmp import (
    ACS_SUPPORTED_METHODS,
    CWMP_NS_1_0,
    CWMP_NS_1_2,
    CWMP_NS_1_4,
    AcsProtocolError,
    AcsSession,
    BooleanLiteral,
    CpeProtocolError,
    CwmpFault,
    EmptyPostReceived,
    FaultReceived,
    Header,
    InformReceived,
    MalformedEnvelope,
    NotXml,
    RequestReceived,
    RequestsHeld,
    ResponseReceived,
    SessionExpired,
    SessionOver,
    State,
    UnknownMethodReceived,
    UnmatchedResponse,
    VersionIncompatible,
    build_envelope,
    default_response,
    negotiate_version,
    parse_envelope,
)
from cwmp import models as m
from cwmp.session import INBOUND, MAX_DEVICE_ID_FIELD, OUTBOUND, InvalidDeviceId

INFORM = m.Inform(m.DeviceId("ACME", "00AABB", "Box", "SN1"), (m.EventStruct("1 BOOT", ""),), 1, "2026-01-01T00:00:00Z")


def cpe(
    message: m.CwmpMessage | CwmpFault, cwmp_id: str | None = "c1", ns: str = CWMP_NS_1_2, **headers: object
) -> bytes:
    """What a CPE would POST (the library builds CPE->ACS envelopes too)."""
    return build_envelope(message, cwmp_ns=ns, cwmp_id=cwmp_id, **headers)  # type: ignore[arg-type]


def started(now: float = 0.0, **inform_headers: object) -> AcsSession:
    """A session whose Inform has been answered: the CPE's turn."""
    session = AcsSession(now=now, session_id="s")
    event = session.receive_body(cpe(INFORM, "inform-1", **inform_headers), "text/xml", now=now)
    assert isinstance(event, InformReceived)
    session.respond(m.InformResponse(), now=now)
    return session


def acs_turn(now: float = 0.0) -> AcsSession:
    session = started(now)
    assert isinstance(session.receive_body(b"", now=now), EmptyPostReceived)
    return session


# ---------------------------------------------------------------------------------------
# Inform first and exactly once (T14, Q9)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        cpe(m.TransferComplete("k")),
        cpe(m.GetParameterValuesResponse(())),
        cpe(CwmpFault.from_code(9002)),
        cpe(m.GetRPCMethods()),
    ],
    ids=["empty-post", "transfer-complete", "response", "fault", "get-rpc-methods"],
)
def test_inform_must_come_first(body: bytes) -> None:
    session = AcsSession(now=0.0)
    with pytest.raises(CpeProtocolError) as info:
        session.receive_body(body, now=0.0)
    assert info.value.http_status == 400
    assert session.state is State.AWAIT_INFORM


@pytest.mark.parametrize(
    ("device_id", "match"),
    [
        (m.DeviceId("ACME", "00AABB", "Box", ""), "SerialNumber is empty"),  # would be "00AABB-Box-"
        (m.DeviceId("ACME", "00AABB", "Box", "   "), "SerialNumber is empty"),
        (m.DeviceId("ACME", "", "Box", "SN1"), "OUI is empty"),
        (m.DeviceId("ACME", "00AABB", "Box", "S" * 900_000), "SerialNumber is 900000 characters"),
        (m.DeviceId("A" * 65, "00AABB", "Box", "SN1"), "Manufacturer is 65 characters"),
        (m.DeviceId("ACME", "00AABB", "P" * 65, "SN1"), "ProductClass is 65 characters"),
    ],
    ids=["empty-serial", "blank-serial", "empty-oui", "huge-serial", "long-manufacturer", "long-product-class"],
)
def test_an_inform_whose_device_id_names_no_device_is_refused(device_id: m.DeviceId, match: str) -> None:
    session = AcsSession(now=0.0, session_id="s")
    inform = m.Inform(device_id, INFORM.event, 1, INFORM.current_time)
    with pytest.raises(InvalidDeviceId, match=match) as info:
        session.receive_body(cpe(inform), "text/xml", now=0.0)
    assert info.value.http_status == 400 and len(str(info.value)) < 200
    assert session.state is State.AWAIT_INFORM  # unchanged: a correct Inform may still come
    limit = m.DeviceId("A" * MAX_DEVICE_ID_FIELD, "00AABB", "P" * MAX_DEVICE_ID_FIELD, "S" * MAX_DEVICE_ID_FIELD)
    assert isinstance(session.receive_body(cpe(m.Inform(limit, INFORM.event, 1, INFORM.current_time)), now=0.0),
                      InformReceived)


def test_unknown_method_first_is_rejected_too() -> None:
    session = AcsSession(now=0.0)
    body = cpe(m.GetRPCMethods()).replace(b"GetRPCMethods", b"X_Vendor_Hello")
    with pytest.raises(CpeProtocolError, match="Inform must be the first"):
        session.receive_body(body, now=0.0)


def test_inform_event_and_response() -> None:
    session = AcsSession(now=0.0, session_id="s")
    event = session.receive_body(cpe(INFORM, "inform-1"), "text/xml; charset=utf-8", now=0.0)
    assert event == InformReceived(INFORM, "inform-1", Header("inform-1"), None)
    assert session.state is State.INFORM_RECEIVED
    assert session.device_id == INFORM.device_id and session.cwmp_ns == CWMP_NS_1_2
    with pytest.raises(AcsProtocolError, match="InformResponse"):
        session.respond(m.TransferCompleteResponse(), now=0.0)
    with pytest.raises(AcsProtocolError, match="MaxEnvelopes MUST be 1"):
        session.respond(m.InformResponse(max_envelopes=2), now=0.0)
    out = session.respond(m.InformResponse(), now=0.0)
    assert out.status == 200 and out.cwmp_id == "inform-1"
    assert parse_envelope(out.body) == parse_envelope(cpe(m.InformResponse(1), "inform-1"))
    assert session.state is State.AWAIT_CPE


@pytest.mark.parametrize("cwmp_id", [None, ""])
def test_inform_without_or_with_empty_id(cwmp_id: str | None) -> None:
    session = AcsSession(now=0.0)
    event = session.receive_body(cpe(INFORM, cwmp_id), now=0.0)
    assert isinstance(event, InformReceived) and event.cwmp_id == cwmp_id
    reply = parse_envelope(session.respond(m.InformResponse(), now=0.0).body)
    assert reply.header.id == cwmp_id  # echoed exactly: absent stays absent, empty stays empty


def test_second_inform_in_a_session_is_rejected() -> None:
    session = started()
    with pytest.raises(CpeProtocolError, match="already in session"):
        session.receive_body(cpe(INFORM), now=1.0)
    assert session.state is State.AWAIT_CPE


def test_inform_after_the_session_ended_asks_for_a_new_session() -> None:
    session = acs_turn()
    session.end(now=1.0)
    with pytest.raises(SessionOver):
        session.receive_body(cpe(INFORM), now=1.0)


# ---------------------------------------------------------------------------------------
# CPE requests, then ACS requests (T14, T15)
# ---------------------------------------------------------------------------------------


def test_cpe_requests_are_answered_until_the_empty_post() -> None:
    session = started()
    tc = m.TransferComplete("dl-1", m.FaultStruct(0, ""), "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z")
    event = session.receive_body(cpe(tc, "tc-1"), now=1.0)
    assert event == RequestReceived(tc, "tc-1")
    with pytest.raises(AcsProtocolError):
        session.send_request(m.Reboot("r"), now=1.0)  # the ACS owes the TransferCompleteResponse
    out = session.respond(default_response(tc), now=1.0)
    assert parse_envelope(out.body).header.id == "tc-1"
    event = session.receive_body(cpe(m.GetRPCMethods(), "grm"), now=2.0)
    assert isinstance(event, RequestReceived)
    methods = parse_envelope(session.respond(default_response(event.request), now=2.0).body).message
    assert isinstance(methods, m.GetRPCMethodsResponse)
    assert {"Inform", "GetRPCMethods", "TransferComplete", "AutonomousTransferComplete"} <= set(methods.method_list)
    assert isinstance(session.receive_body(b"  \r\n", now=3.0), EmptyPostReceived)  # whitespace = empty (Q7)
    assert session.state is State.ACS_TURN


def test_acs_cannot_send_before_the_cpe_is_done() -> None:
    session = AcsSession(now=0.0)
    session.receive_body(cpe(INFORM), now=0.0)
    with pytest.raises(AcsProtocolError, match="cannot send request in state inform_received"):
        session.send_request(m.GetRPCMethods(), now=0.0)
    session.respond(m.InformResponse(), now=0.0)
    with pytest.raises(AcsProtocolError, match="await_cpe"):
        session.send_request(m.GetRPCMethods(), now=0.0)
    with pytest.raises(AcsProtocolError):
        session.end(now=0.0)


def test_acs_requests_one_per_response_with_unique_ids() -> None:
    session = acs_turn()
    ids = []
    for t in range(1, 4):
        out = session.send_request(m.GetParameterValues(["Device."]), now=float(t))
        assert out.status == 200 and out.cwmp_id
        assert parse_envelope(out.body).header.id == out.cwmp_id
        ids.append(out.cwmp_id)
        with pytest.raises(AcsProtocolError):  # one request per HTTP response
            session.send_request(m.Reboot("x"), now=float(t))
        event = session.receive_body(cpe(m.GetParameterValuesResponse(()), out.cwmp_id), now=float(t))
        assert isinstance(event, ResponseReceived)
    assert len(set(ids)) == 3 and all(i.startswith("s.") for i in ids)
    out = session.end(now=5.0)
    assert (out.status, out.body) == (204, b"")
    assert session.state is State.ENDED


def test_only_acs_requests_can_be_sent() -> None:
    session = acs_turn()
    for wrong in (m.TransferComplete("k"), m.InformResponse(), m.GetParameterValuesResponse(())):
        with pytest.raises(AcsProtocolError, match="not a request the ACS can send"):
            session.send_request(wrong, now=1.0)
    assert session.state is State.ACS_TURN


def test_explicit_request_ids_and_duplicates() -> None:
    session = acs_turn()
    assert session.send_request(m.Reboot("r"), now=1.0, cwmp_id="plan-42").cwmp_id == "plan-42"
    session.receive_body(cpe(m.RebootResponse(), "plan-42"), now=1.0)
    with pytest.raises(AcsProtocolError, match="empty"):
        session.send_request(m.Reboot("r"), now=1.0, cwmp_id="")


# ---------------------------------------------------------------------------------------
# Matching responses and faults by cwmp:ID (T9)
# ---------------------------------------------------------------------------------------


def test_response_and_fault_matching() -> None:
    session = acs_turn()
    spv = m.SetParameterValues([m.ParameterValueStruct("Device.A", m.ParameterValue("1"))], "pk")
    out = session.send_request(spv, now=1.0)
    fault = CwmpFault.from_code(9003, set_parameter_values_faults=[m.SetParameterValuesFault("Device.A", 9008, "")])
    event = session.receive_body(cpe(fault, out.cwmp_id), now=2.0)
    assert isinstance(event, FaultReceived)
    assert (event.fault, event.cwmp_id, event.request.request, event.request.sent_at) == (fault, out.cwmp_id, spv, 1.0)
    assert session.pending == ()


def test_response_without_id_matches_the_single_outstanding_request() -> None:
    session = acs_turn()
    out = session.send_request(m.GetParameterNames("Device.", True), now=1.0)
    event = session.receive_body(cpe(m.GetParameterNamesResponse(()), None), now=1.0)
    assert isinstance(event, ResponseReceived) and event.request.cwmp_id == out.cwmp_id and event.cwmp_id is None


def test_response_with_an_unknown_id_is_rejected() -> None:
    session = acs_turn()
    session.send_request(m.Reboot("r"), now=1.0)
    with pytest.raises(UnmatchedResponse, match="matches no outstanding request"):
        session.receive_body(cpe(m.RebootResponse(), "someone-else"), now=1.0)
    assert session.state is State.AWAIT_CPE and len(session.pending) == 1


def test_response_of_the_wrong_method_is_rejected() -> None:
    session = acs_turn()
    out = session.send_request(m.Reboot("r"), now=1.0)
    with pytest.raises(UnmatchedResponse, match="does not answer Reboot"):
        session.receive_body(cpe(m.FactoryResetResponse(), out.cwmp_id), now=1.0)


def test_response_with_nothing_outstanding_is_rejected() -> None:
    session = started()
    with pytest.raises(UnmatchedResponse):
        session.receive_body(cpe(m.RebootResponse(), None), now=1.0)
    with pytest.raises(UnmatchedResponse):
        session.receive_body(cpe(CwmpFault.from_code(9000), "x"), now=1.0)


def test_unknown_response_method_is_rejected() -> None:
    session = acs_turn()
    session.send_request(m.Reboot("r"), now=1.0)
    body = cpe(m.RebootResponse(), "s.1").replace(b"RebootResponse", b"X_Vendor_RebootResponse")
    with pytest.raises(UnmatchedResponse):
        session.receive_body(body, now=1.0)


def test_empty_post_instead_of_a_response_reports_the_abandoned_request() -> None:
    session = acs_turn()
    out = session.send_request(m.Download(url="http://fs/fw"), now=1.0)
    event = session.receive_body(b"", now=2.0)
    assert isinstance(event, EmptyPostReceived)
    assert [(p.cwmp_id, p.request.METHOD) for p in event.abandoned] == [(out.cwmp_id, "Download")]
    assert session.pending == () and session.state is State.ACS_TURN


def test_no_pipelining() -> None:
    session = AcsSession(now=0.0)
    session.receive_body(cpe(INFORM), now=0.0)
    with pytest.raises(CpeProtocolError, match="owes a reply"):
        session.receive_body(b"", now=0.0)
    session.respond(m.InformResponse(), now=0.0)
    session.receive_body(b"", now=0.0)
    with pytest.raises(CpeProtocolError, match="owes a reply"):
        session.receive_body(b"", now=0.0)


# ---------------------------------------------------------------------------------------
# HoldRequests and 204 (T10)
# ---------------------------------------------------------------------------------------


def test_hold_requests_blocks_cpe_requests() -> None:
    session = AcsSession(now=0.0)
    session.receive_body(cpe(INFORM), now=0.0)
    out = session.respond(m.InformResponse(), now=0.0, hold_requests=True)
    assert parse_envelope(out.body).header.hold_requests is True
    assert not session.cpe_may_send_requests
    with pytest.raises(RequestsHeld):
        session.receive_body(cpe(m.TransferComplete("k")), now=1.0)
    assert session.state is State.AWAIT_CPE
    assert isinstance(session.receive_body(b"", now=1.0), EmptyPostReceived)  # allowed: drain the ACS queue


def test_no_cpe_request_in_reply_to_an_acs_request() -> None:
    session = acs_turn()
    out = session.send_request(m.GetRPCMethods(), now=1.0)
    assert not session.cpe_may_send_requests
    with pytest.raises(RequestsHeld):
        session.receive_body(cpe(m.TransferComplete("k")), now=1.0)
    assert isinstance(session.receive_body(cpe(m.GetRPCMethodsResponse(()), out.cwmp_id), now=1.0), ResponseReceived)


def test_204_re_enables_cpe_requests() -> None:
    session = acs_turn()
    session.end(now=1.0)
    assert session.cpe_may_send_requests
    event = session.receive_body(cpe(m.TransferComplete("late"), "tc-9"), now=2.0)
    assert isinstance(event, RequestReceived)
    assert parse_envelope(session.respond(m.TransferCompleteResponse(), now=2.0).body).header.id == "tc-9"
    assert isinstance(session.receive_body(b"", now=3.0), EmptyPostReceived)
    assert session.send_request(m.Reboot("r"), now=3.0).status == 200  # and the ACS may speak again


def test_hold_requests_released_by_a_reply_without_it() -> None:
    session = AcsSession(now=0.0)
    session.receive_body(cpe(INFORM), now=0.0)
    session.respond(m.InformResponse(), now=0.0, hold_requests=True)
    session.receive_body(b"", now=1.0)
    session.end(now=1.0)
    assert isinstance(
        session.receive_body(cpe(m.RequestDownload("1 Firmware Upgrade Image")), now=2.0), RequestReceived
    )


# ---------------------------------------------------------------------------------------
# Unknown methods (T20)
# ---------------------------------------------------------------------------------------


def test_unknown_cpe_method_gets_8000_with_its_id_and_the_session_goes_on() -> None:
    session = started()
    body = cpe(m.GetRPCMethods(), "vendor-1").replace(b"GetRPCMethods", b"X_ACME_Hello")
    event = session.receive_body(body, now=1.0)
    assert event == UnknownMethodReceived("X_ACME_Hello", "vendor-1")
    with pytest.raises(AcsProtocolError, match="fault 8000"):
        session.respond(m.GetRPCMethodsResponse(()), now=1.0)
    out = session.respond_fault(CwmpFault.from_code(8000), now=1.0)
    reply = parse_envelope(out.body)
    assert reply.header.id == "vendor-1" and reply.message == CwmpFault.from_code(8000)
    assert reply.cwmp_ns == CWMP_NS_1_2
    assert isinstance(session.receive_body(b"", now=2.0), EmptyPostReceived)


def test_acs_only_method_sent_by_the_cpe_is_unsupported() -> None:
    session = started()
    event = session.receive_body(cpe(m.Reboot("x"), "r1"), now=1.0)
    assert event == UnknownMethodReceived("Reboot", "r1")


def test_faulting_a_cpe_request_and_retry_8005() -> None:
    session = started()
    session.receive_body(cpe(m.TransferComplete("k"), "t1"), now=1.0)
    session.respond_fault(CwmpFault.from_code(8005), now=1.0)
    # T21: the CPE sends the same request again
    assert isinstance(session.receive_body(cpe(m.TransferComplete("k"), "t1"), now=2.0), RequestReceived)


def test_fault_only_in_reply_to_a_request() -> None:
    session = acs_turn()
    with pytest.raises(AcsProtocolError, match="no CPE request to fault"):
        session.respond_fault(CwmpFault.from_code(8002), now=1.0)
    with pytest.raises(AcsProtocolError, match="no CPE request to answer"):
        session.respond(m.InformResponse(), now=1.0)


# ---------------------------------------------------------------------------------------
# Faults to the Inform (T21)
# ---------------------------------------------------------------------------------------


def test_8005_to_the_inform_lets_the_cpe_inform_again() -> None:
    session = AcsSession(now=0.0)
    session.receive_body(cpe(INFORM, "i1"), now=0.0)
    out = session.respond_fault(CwmpFault.from_code(8005), now=0.0)
    assert parse_envelope(out.body).header.id == "i1"
    assert session.state is State.AWAIT_INFORM
    assert isinstance(session.receive_body(cpe(INFORM, "i2"), now=1.0), InformReceived)


def test_other_fault_to_the_inform_closes_the_session() -> None:
    session = AcsSession(now=0.0)
    session.receive_body(cpe(INFORM), now=0.0)
    session.respond_fault(CwmpFault.from_code(8001), now=0.0)
    assert session.state is State.CLOSED
    with pytest.raises(SessionOver):
        session.receive_body(cpe(INFORM), now=1.0)
    with pytest.raises(AcsProtocolError):
        session.end(now=1.0)


# ---------------------------------------------------------------------------------------
# Versions and namespaces (T13, Q1)
# ---------------------------------------------------------------------------------------


def test_version_negotiation_sends_use_cwmp_version() -> None:
    session = AcsSession(now=0.0)
    event = session.receive_body(cpe(INFORM, "i", supported_cwmp_versions="1.0,1.1,1.2,1.3,1.4"), now=0.0)
    assert isinstance(event, InformReceived) and event.use_cwmp_version == "1.4"
    reply = parse_envelope(session.respond(m.InformResponse(), now=0.0).body)
    assert reply.header.use_cwmp_version == "1.4"
    session.receive_body(b"", now=1.0)
    request = parse_envelope(session.send_request(m.Reboot("r"), now=1.0).body)
    assert request.header.use_cwmp_version is None  # only in the InformResponse


def test_no_negotiation_without_the_header() -> None:
    session = AcsSession(now=0.0)
    session.receive_body(cpe(INFORM), now=0.0)
    assert parse_envelope(session.respond(m.InformResponse(), now=0.0).body).header.use_cwmp_version is None


def test_incompatible_versions_fault_8006() -> None:
    session = AcsSession(now=0.0, acs_versions=("1.0", "1.1"))
    event = session.receive_body(cpe(INFORM, "i", supported_cwmp_versions="1.3, 1.4"), now=0.0)
    assert event == VersionIncompatible(INFORM, "i", ("1.3", "1.4"))
    with pytest.raises(AcsProtocolError, match="8006"):
        session.respond(m.InformResponse(), now=0.0)
    fault = parse_envelope(session.respond_fault(CwmpFault.from_code(8006), now=0.0).body)
    assert fault.message == CwmpFault(8006, "ACS version incompatible with CPE", (), "Client", "CWMP fault")
    assert session.state is State.CLOSED


@pytest.mark.parametrize(
    ("offered", "acs", "expected"),
    [
        ("1.0,1.1,1.2,1.3,1.4", ("1.0", "1.1", "1.2", "1.3", "1.4"), "1.4"),
        ("1.0, 1.2", ("1.0", "1.1", "1.2", "1.3", "1.4"), "1.2"),
        ("1.4,1.10", ("1.4", "1.10"), "1.10"),  # numeric, not lexicographic
        ("x.y,,1.1", ("1.1",), "1.1"),
        ("2.0", ("1.4",), None),
        ("", ("1.4",), None),
    ],
)
def test_negotiate_version(offered: str, acs: tuple[str, ...], expected: str | None) -> None:
    assert negotiate_version(offered, acs) == expected


@pytest.mark.parametrize("ns", [CWMP_NS_1_0, CWMP_NS_1_2, CWMP_NS_1_4])
def test_replies_use_the_informs_namespace_all_session(ns: str) -> None:
    session = AcsSession(now=0.0)
    session.receive_body(cpe(INFORM, ns=ns), now=0.0)
    assert parse_envelope(session.respond(m.InformResponse(), now=0.0).body).cwmp_ns == ns
    session.receive_body(cpe(m.TransferComplete("k"), ns=CWMP_NS_1_0), now=1.0)  # the CPE wavers
    assert parse_envelope(session.respond(m.TransferCompleteResponse(), now=1.0).body).cwmp_ns == ns
    session.receive_body(b"", now=2.0)
    assert parse_envelope(session.send_request(m.Reboot("r"), now=2.0).body).cwmp_ns == ns


def test_boolean_literal_of_the_session() -> None:
    session = AcsSession(now=0.0, boolean_literal=BooleanLiteral.ONE_ZERO)
    session.receive_body(cpe(INFORM), now=0.0)
    session.respond(m.InformResponse(), now=0.0, hold_requests=False)
    session.receive_body(b"", now=0.0)
    body = session.send_request(m.GetParameterNames("Device.", True), now=0.0).body
    assert b"<NextLevel>1</NextLevel>" in body


# ---------------------------------------------------------------------------------------
# Timeouts
# ---------------------------------------------------------------------------------------


def test_default_idle_timeout() -> None:
    session = started(now=100.0)
    assert session.timeout == 30.0 and session.deadline == 130.0
    assert not session.expired(130.0) and session.expired(130.5)
    session.receive_body(b"", now=120.0)
    session.send_request(m.Reboot("r"), now=125.0)  # sending counts as activity too
    assert session.deadline == 155.0


def test_session_timeout_header_is_honoured() -> None:
    session = started(now=0.0, session_timeout=90)
    assert session.session_timeout == 90 and session.timeout == 90.0
    assert not session.expired(60.0)


def test_expired_session_refuses_input() -> None:
    session = started(now=0.0)
    with pytest.raises(SessionExpired):
        session.receive_body(b"", now=31.0)
    assert session.state is State.CLOSED
    with pytest.raises(SessionOver):
        session.receive_body(b"", now=31.0)


def test_close() -> None:
    session = started()
    session.close()
    assert session.state is State.CLOSED
    with pytest.raises(SessionOver):
        session.receive_body(b"", now=1.0)
    with pytest.raises(AcsProtocolError):
        session.respond(m.InformResponse(), now=1.0)


# ---------------------------------------------------------------------------------------
# Malformed input leaves the state alone
# ---------------------------------------------------------------------------------------


def test_malformed_bodies_raise_and_change_nothing() -> None:
    session = started()
    before = session.to_dict()
    with pytest.raises(NotXml):
        session.receive_body(b"<not xml", now=1.0)
    with pytest.raises(MalformedEnvelope):
        session.receive_body(
            cpe(m.AddObjectResponse(1, 0)).replace(b"<InstanceNumber>1</InstanceNumber>", b""), now=1.0
        )
    assert session.to_dict() == before


def test_build_errors_leave_the_state_alone() -> None:
    session = acs_turn()
    with pytest.raises(ValueError, match="cannot represent"):
        session.send_request(m.Reboot("\x01"), now=1.0)
    assert session.state is State.ACS_TURN and session.pending == ()
    assert session.send_request(m.Reboot("ok"), now=1.0).status == 200


# ---------------------------------------------------------------------------------------
# Snapshots (a session survives a dropped TCP connection or moves to another instance)
# ---------------------------------------------------------------------------------------


def test_snapshot_round_trip_mid_session() -> None:
    session = AcsSession(now=10.0, session_id="snap", default_timeout=45, boolean_literal=BooleanLiteral.ONE_ZERO)
    session.receive_body(cpe(INFORM, "i", session_timeout=60, supported_cwmp_versions="1.2,1.4"), now=10.0)
    session.respond(m.InformResponse(), now=10.0, hold_requests=True)
    session.receive_body(b"", now=11.0)
    sent = session.send_request(
        m.SetParameterValues([m.ParameterValueStruct("A", m.ParameterValue.boolean(True))]), now=12.0
    )
    snapshot = json.loads(json.dumps(session.to_dict()))
    restored = AcsSession.from_dict(snapshot)
    assert restored.to_dict() == session.to_dict()
    assert (restored.state, restored.cwmp_ns, restored.use_cwmp_version, restored.timeout) == (
        State.AWAIT_CPE, CWMP_NS_1_2, "1.4", 60.0,
    )  # fmt: skip
    assert restored.device_id == INFORM.device_id
    event = restored.receive_body(cpe(m.SetParameterValuesResponse(0), sent.cwmp_id), now=13.0)
    assert isinstance(event, ResponseReceived) and event.request.request == sent.message
    assert restored.send_request(m.Reboot("r"), now=13.0).cwmp_id == "snap.2"  # the counter survived


def test_snapshot_while_a_cpe_request_is_owed() -> None:
    session = started()
    session.receive_body(cpe(m.TransferComplete("k"), "t7"), now=1.0)
    restored = AcsSession.from_dict(json.loads(json.dumps(session.to_dict())))
    with pytest.raises(AcsProtocolError):
        restored.respond(m.InformResponse(), now=1.0)
    assert parse_envelope(restored.respond(m.TransferCompleteResponse(), now=1.0).body).header.id == "t7"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("state"),
        lambda d: d.update(state="dancing"),
        lambda d: d.update(snapshot_version=99),
        lambda d: d.update(pending=[{"cwmp_id": "x", "request": {"method": "Nope"}, "sent_at": 0}]),
        lambda d: d.update(boolean_literal="yes/no"),
    ],
)
def test_snapshot_rejects_garbage(mutate: object) -> None:
    data = started().to_dict()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ValueError):
        AcsSession.from_dict(data)


# ---------------------------------------------------------------------------------------
# Helpers and the tables themselves
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "response"),
    [
        (m.Inform(), m.InformResponse(1)),
        (m.TransferComplete(), m.TransferCompleteResponse()),
        (m.AutonomousTransferComplete(), m.AutonomousTransferCompleteResponse()),
        (m.RequestDownload(), m.RequestDownloadResponse()),
        (m.DUStateChangeComplete(), m.DUStateChangeCompleteResponse()),
        (m.AutonomousDUStateChangeComplete(), m.AutonomousDUStateChangeCompleteResponse()),
        (m.Kicked(), m.KickedResponse("")),
        (m.GetRPCMethods(), m.GetRPCMethodsResponse(ACS_SUPPORTED_METHODS)),
    ],
)
def test_default_responses(request_: m.CwmpMessage, response: m.CwmpMessage) -> None:
    assert default_response(request_) == response


def test_default_response_refuses_acs_requests() -> None:
    with pytest.raises(ValueError, match="not a request a CPE sends"):
        default_response(m.Reboot())


def test_transition_tables_only_name_real_states() -> None:
    assert all(isinstance(s, State) and isinstance(t, State) for (s, _), t in {**INBOUND, **OUTBOUND}.items())
    # every state but CLOSED can be left, and CLOSED can be reached
    sources = {s for s, _ in INBOUND} | {s for s, _ in OUTBOUND}
    assert sources == set(State) - {State.CLOSED}
    assert State.CLOSED in OUTBOUND.values()
