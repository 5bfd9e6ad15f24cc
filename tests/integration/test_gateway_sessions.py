"""Whole CWMP sessions over HTTP against the gateway, with the real broker and MongoDB.

The orchestrator side is scripted on the real ``cwmp.inbound``/``cwmp.replies`` topics so that
each test decides the plan and can check every event the gateway published.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from lxml import etree

from services.bus.events import (
    CpeRequestReceived,
    InboundEvent,
    InformReceived,
    RpcFaultReceived,
    RpcResponseReceived,
    SessionEnded,
    SessionPlan,
)
from services.common.settings import Settings
from tests.integration.gateway_harness import (
    ScriptedOrchestrator,
    TestCpe,
    plan_for,
    plan_on_inform,
    running_gateway,
)

pytestmark = pytest.mark.integration

CWMP10 = "urn:dslforum-org:cwmp-1-0"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


def envelope(body: str, cwmp_id: str | None = "1", ns: str = CWMP10) -> str:
    header = f'<cwmp:ID soap-env:mustUnderstand="1">{cwmp_id}</cwmp:ID>' if cwmp_id is not None else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:soap-enc="http://schemas.xmlsoap.org/soap/encoding/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xmlns:cwmp="{ns}"><soap-env:Header>{header}</soap-env:Header>'
        f"<soap-env:Body>{body}</soap-env:Body></soap-env:Envelope>"
    )


def seed_inform(serial: str = "000000000012", events: tuple[str, ...] = ("0 BOOTSTRAP", "1 BOOT"),
                cwmp_id: str = "1785452630") -> str:
    """The seed's first Inform (Workssys IGD Simulator), with chosen events and serial."""
    event_xml = "".join(f"<EventStruct><EventCode>{code}</EventCode><CommandKey></CommandKey></EventStruct>"
                        for code in events)
    params = [
        ("InternetGatewayDevice.DeviceInfo.SpecVersion", "1.0"),
        ("InternetGatewayDevice.DeviceInfo.HardwareVersion", "3.0"),
        ("InternetGatewayDevice.DeviceInfo.SoftwareVersion", "Rev 1.9.82.342.17"),
        ("InternetGatewayDevice.DeviceInfo.ProvisioningCode", "WKSS"),
        ("InternetGatewayDevice.ManagementServer.ConnectionRequestURL", "http://A:10016/"),
        ("InternetGatewayDevice.ManagementServer.ParameterKey", ""),
    ]
    param_xml = "".join(f"<ParameterValueStruct><Name>{n}</Name><Value xsi:type='xsd:string'>{v}</Value>"
                        "</ParameterValueStruct>" for n, v in params)
    return envelope(
        "<cwmp:Inform><DeviceId><Manufacturer>Workssys</Manufacturer><OUI>09D021</OUI>"
        f"<ProductClass>IGD Simulator</ProductClass><SerialNumber>{serial}</SerialNumber></DeviceId>"
        f"<Event soap-enc:arrayType='cwmp:EventStruct[{len(events)}]'>{event_xml}</Event>"
        "<MaxEnvelopes>1</MaxEnvelopes><CurrentTime>2016-06-01T23:39:09-04:00</CurrentTime>"
        f"<RetryCount>0</RetryCount><ParameterList soap-enc:arrayType='cwmp:ParameterValueStruct[{len(params)}]'>"
        f"{param_xml}</ParameterList></cwmp:Inform>", cwmp_id)


def rpc_of(response_body: bytes) -> tuple[str, str | None, etree._Element]:
    """(method, cwmp:ID, method element) of an envelope the ACS sent."""
    root = etree.fromstring(response_body)
    body = root.find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    method = body[0]
    ids = root.xpath("//*[local-name()='ID']")
    return etree.QName(method).localname, (ids[0].text if ids else None), method


def get_rpc_methods_response(rpc_id: str | None) -> str:
    """The CPE's answer to a GetRPCMethods: it supports Inform."""
    return envelope("<cwmp:GetRPCMethodsResponse><MethodList soap-enc:arrayType='xsd:string[1]'>"
                    "<string>Inform</string></MethodList></cwmp:GetRPCMethodsResponse>", rpc_id)


@pytest.fixture
def gateway_settings(settings: Settings, kafka_bootstrap: str, mongodb_url: str) -> Settings:
    return settings.model_copy(update={"cpe_auth": "digest", "cpe_username": "testcpe",
                                       "cpe_password": "testcpe-password", "session_plan_timeout": 3.0,
                                       "shutdown_grace": 1.0})


async def test_seed_bootstrap_session_with_digest(gateway_settings: Settings) -> None:
    """The seed's bootstrap: 401 Digest challenge, Digest Inform, InformResponse, empty POST,
    the orchestrator's RPCs one per response, their answers on the bus, then 204."""
    plan = [
        {"method": "SetParameterValues", "parameter_list": [
            {"name": "InternetGatewayDevice.ManagementServer.ConnectionRequestUsername",
             "value": {"value": "cr-user", "type": "xsd:string"}},
            {"name": "InternetGatewayDevice.ManagementServer.ConnectionRequestPassword",
             "value": {"value": "cr-pass", "type": "xsd:string"}}], "parameter_key": "bootstrap"},
        {"method": "GetParameterValues",
         "parameter_names": ["InternetGatewayDevice.WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.Name"]},
    ]
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform(plan)) as orchestrator, \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            first = await cpe.post(seed_inform(), authenticate=False)
            assert first.status_code == 401
            challenge = first.headers["www-authenticate"]
            assert challenge.startswith("Digest ") and 'qop="auth"' in challenge

            inform = await cpe.post(seed_inform())
            assert inform.status_code == 200
            method, cwmp_id, element = rpc_of(inform.content)
            assert (method, cwmp_id) == ("InformResponse", "1785452630")
            assert element.findtext("MaxEnvelopes") == "1"
            assert etree.QName(element).namespace == CWMP10
            assert "acs_session=" in inform.headers["set-cookie"] and "Path=/" in inform.headers["set-cookie"]

            spv = await cpe.post(None)
            assert spv.status_code == 200
            method, spv_id, element = rpc_of(spv.content)
            assert method == "SetParameterValues"
            names = [n.text for n in element.iter("Name")]
            assert names == ["InternetGatewayDevice.ManagementServer.ConnectionRequestUsername",
                             "InternetGatewayDevice.ManagementServer.ConnectionRequestPassword"]

            gpv = await cpe.post(envelope("<cwmp:SetParameterValuesResponse><Status>1</Status>"
                                          "</cwmp:SetParameterValuesResponse>", spv_id))
            method, gpv_id, _ = rpc_of(gpv.content)
            assert method == "GetParameterValues" and gpv_id != spv_id

            done = await cpe.post(envelope(
                "<cwmp:GetParameterValuesResponse><ParameterList soap-enc:arrayType="
                "'cwmp:ParameterValueStruct[1]'><ParameterValueStruct><Name>InternetGatewayDevice."
                "WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.Name</Name><Value xsi:type="
                "'xsd:string'>123</Value></ParameterValueStruct></ParameterList>"
                "</cwmp:GetParameterValuesResponse>", gpv_id))
            assert done.status_code == 204
        finally:
            await cpe.aclose()
        ended = await orchestrator.wait_for(lambda e: isinstance(e, SessionEnded))
        assert ended.outcome == "completed"
        informs = orchestrator.of_type("inform")
        assert len(informs) == 1
        inform_event: InformReceived = informs[0]
        assert inform_event.device_id == "09D021-IGD%20Simulator-000000000012"
        assert inform_event.event_codes() == {"0 BOOTSTRAP", "1 BOOT"}
        assert {p.name: p.value for p in inform_event.parameters}[
            "InternetGatewayDevice.DeviceInfo.SoftwareVersion"] == "Rev 1.9.82.342.17"
        responses = orchestrator.of_type("rpc_response")
        assert [r.method for r in responses] == ["SetParameterValuesResponse", "GetParameterValuesResponse"]
        assert [r.rpc_id for r in responses] == [spv_id, gpv_id]
        assert responses[0].rpc["status"] == 1
        assert responses[0].request == plan[0]  # the answer carries the request it answers
        assert responses[1].rpc["parameter_list"][0]["value"]["value"] == "123"


async def test_transfer_complete_is_published_before_it_is_acknowledged(gateway_settings: Settings,
                                                                         shared_dir: Path) -> None:
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([])) as orchestrator, \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            assert (await cpe.post(seed_inform(events=("7 TRANSFER COMPLETE", "M Download")))).status_code == 200
            transfer = (shared_dir / "interop" / "cwmp-sim_TransferComplete.xml").read_bytes()
            answer = await cpe.post(transfer)
            assert answer.status_code == 200
            method, cwmp_id, _ = rpc_of(answer.content)
            assert (method, cwmp_id) == ("TransferCompleteResponse", "z9n5w4yq")
            # Acknowledged to the CPE, so it must already be on the bus.
            published = [e for e in orchestrator.events if isinstance(e, CpeRequestReceived)]
            if not published:
                published = [await orchestrator.wait_for(lambda e: isinstance(e, CpeRequestReceived), 5)]
            assert published[0].rpc["command_key"] == "dl-1"
            assert published[0].rpc["fault_struct"]["fault_code"] == 0
            assert (await cpe.post(None)).status_code == 204
        finally:
            await cpe.aclose()


async def test_cpe_fault_to_a_planned_rpc_is_published(gateway_settings: Settings, shared_dir: Path) -> None:
    plan = [{"method": "SetParameterValues", "parameter_key": "k", "parameter_list": [
        {"name": "Device.No.Such.Param", "value": {"value": "1", "type": "xsd:string"}}]}]
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform(plan)) as orchestrator, \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            await cpe.post(seed_inform())
            _, rpc_id, _ = rpc_of((await cpe.post(None)).content)
            fault = (shared_dir / "interop" / "easycwmp_SPVFault_9003_9005.xml").read_text()
            fault = re.sub(r"<cwmp:ID([^>]*)>[^<]*</cwmp:ID>", rf"<cwmp:ID\1>{rpc_id}</cwmp:ID>", fault)
            assert (await cpe.post(fault)).status_code == 204
        finally:
            await cpe.aclose()
        event = await orchestrator.wait_for(lambda e: isinstance(e, RpcFaultReceived))
        assert (event.fault_code, event.rpc_id, event.method) == (9003, rpc_id, "SetParameterValues")
        assert [(f.parameter_name, f.fault_code) for f in event.parameter_faults] == [("Device.No.Such.Param", 9005)]


async def test_cookieless_cpe_is_followed_by_its_connection(gateway_settings: Settings,
                                                            shared_dir: Path) -> None:
    """cwmp-sim never returns cookies: the TCP connection carries the session."""
    settings = gateway_settings.model_copy(update={"cpe_auth": "none"})
    plan = [{"method": "GetRPCMethods"}]
    async with ScriptedOrchestrator(settings, plan_on_inform(plan)) as orchestrator, \
            running_gateway(settings) as url:
        cpe = TestCpe(url, keep_cookies=False)
        try:
            inform = (shared_dir / "interop" / "cwmp-sim_builtin-Device_inform_1BOOT.xml").read_bytes()
            answer = await cpe.post(inform, headers={"authorization": "Basic Og=="})
            assert rpc_of(answer.content)[:2] == ("InformResponse", "icrm2g3h")
            _, rpc_id, _ = rpc_of((await cpe.post(None)).content)
            grm = (shared_dir / "interop" / "cwmp-sim_GetRPCMethodsResponse.xml").read_text()
            grm = re.sub(r"<cwmp:ID([^>]*)>[^<]*</cwmp:ID>", rf"<cwmp:ID\1>{rpc_id}</cwmp:ID>", grm)
            assert (await cpe.post(grm)).status_code == 204
        finally:
            await cpe.aclose()
        response = await orchestrator.wait_for(lambda e: isinstance(e, RpcResponseReceived))
        assert response.method == "GetRPCMethodsResponse"
        assert "GetParameterValues" in response.rpc["method_list"]
        assert response.device_id == "000000-Simulator-SIM0000"


async def test_easycwmp_inform_is_answered_in_its_namespace(gateway_settings: Settings,
                                                            shared_dir: Path) -> None:
    settings = gateway_settings.model_copy(update={"cpe_username": "acsuser", "cpe_password": "acspass"})
    async with ScriptedOrchestrator(settings, plan_on_inform([])), running_gateway(settings) as url:
        cpe = TestCpe(url, "acsuser", "acspass")
        try:
            body = (shared_dir / "interop" / "easycwmp_inform_0BOOTSTRAP_1BOOT_digest.xml").read_bytes()
            answer = await cpe.post(body, headers={"content-type": 'text/xml; charset="utf-8"'})
            method, cwmp_id, element = rpc_of(answer.content)
            assert (method, cwmp_id) == ("InformResponse", "1")
            assert etree.QName(element).namespace == "urn:dslforum-org:cwmp-1-2"
            assert (await cpe.post(None)).status_code == 204
        finally:
            await cpe.aclose()


async def test_plan_that_never_comes_ends_the_session_with_204(gateway_settings: Settings) -> None:
    settings = gateway_settings.model_copy(update={"session_plan_timeout": 0.5})
    async with ScriptedOrchestrator(settings, lambda event: None) as orchestrator, \
            running_gateway(settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            assert (await cpe.post(seed_inform())).status_code == 200
            assert (await cpe.post(None)).status_code == 204
        finally:
            await cpe.aclose()
        ended = await orchestrator.wait_for(lambda e: isinstance(e, SessionEnded))
        assert ended.outcome == "timeout"
        assert ended.unanswered_rpc_ids == []  # nothing was sent, whatever the orchestrator planned


async def test_a_routine_session_with_an_empty_plan_ends_without_an_end_event(gateway_settings: Settings) -> None:
    """Only an end somebody must act on is published: planned RPCs, a timeout, an error."""
    calls: list[InboundEvent] = []

    def planner(event: InboundEvent) -> SessionPlan | None:
        if not isinstance(event, InformReceived):
            return None
        calls.append(event)
        return plan_for(event, [] if len(calls) == 1 else [{"method": "GetRPCMethods"}])

    async with ScriptedOrchestrator(gateway_settings, planner) as orchestrator, \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            assert (await cpe.post(seed_inform())).status_code == 200
            assert (await cpe.post(None)).status_code == 204  # the empty plan: done
            assert (await cpe.post(seed_inform())).status_code == 200
            method, rpc_id, _ = rpc_of((await cpe.post(None)).content)
            assert method == "GetRPCMethods"
            done = await cpe.post(get_rpc_methods_response(rpc_id))
            assert done.status_code == 204
        finally:
            await cpe.aclose()
        ended = await orchestrator.wait_for(lambda e: isinstance(e, SessionEnded))
        # One device, one partition, in order: the first session's end would have come first.
        assert ended.session_id == calls[1].session_id
        assert [e.session_id for e in orchestrator.of_type("session_ended")] == [calls[1].session_id]


async def test_unknown_cpe_method_gets_8000_and_the_session_goes_on(gateway_settings: Settings) -> None:
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([])), running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            await cpe.post(seed_inform())
            answer = await cpe.post(envelope("<cwmp:X_ACME_Hello><A>1</A></cwmp:X_ACME_Hello>", "77"))
            assert answer.status_code == 200
            method, cwmp_id, element = rpc_of(answer.content)
            assert (method, cwmp_id) == ("Fault", "77")
            assert element.xpath("string(//*[local-name()='FaultCode'])") == "8000"
            assert (await cpe.post(None)).status_code == 204
        finally:
            await cpe.aclose()


async def test_bad_input_answers(gateway_settings: Settings) -> None:
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([])) as orchestrator, \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            # A first message that is not an Inform.
            bad_first = await cpe.post(envelope("<cwmp:GetRPCMethods/>"))
            assert bad_first.status_code == 400 and "Inform" in bad_first.text
            # Garbage instead of XML, inside a session: 400 and the session is over.
            assert (await cpe.post(seed_inform(serial="BAD1"))).status_code == 200
            garbage = await cpe.post(b"<soap-env:Envelope><not-closed>")
            assert garbage.status_code == 400
            ended = await orchestrator.wait_for(lambda e: isinstance(e, SessionEnded) and e.outcome == "error")
            assert "malformed" in ended.reason
            # GET on the CWMP endpoint.
            assert (await cpe.client.get("/")).status_code == 405
        finally:
            await cpe.aclose()


async def test_oversized_body_is_refused_before_it_is_read(gateway_settings: Settings) -> None:
    settings = gateway_settings.model_copy(update={"max_body_bytes": 4096})
    async with running_gateway(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            # Claims 100 MB and sends nothing: the answer must come without waiting for the body.
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                         b"Content-Length: 100000000\r\n\r\n")
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
            assert status_line.startswith(b"HTTP/1.1 413")
        finally:
            writer.close()
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            big = seed_inform().replace("WKSS", "W" * 8192)
            assert (await cpe.post(big, authenticate=False)).status_code == 413
        finally:
            await cpe.aclose()


async def test_wrong_credentials_get_401_and_repeated_failures_are_throttled(gateway_settings: Settings) -> None:
    settings = gateway_settings.model_copy(update={"auth_failures_before_throttle": 3})
    async with ScriptedOrchestrator(settings, plan_on_inform([])) as orchestrator, running_gateway(settings) as url:
        cpe = TestCpe(url, "testcpe", "wrong-password")
        try:
            challenge = (await cpe.post(seed_inform(), authenticate=False)).headers["www-authenticate"]
            assert cpe.digest is not None
            for _ in range(3):  # the challenge above was no failure; these three are
                wrong = {"authorization": cpe.digest.authorization("POST", "/", challenge)}
                assert (await cpe.post(seed_inform(), headers=wrong, authenticate=False)).status_code == 401
            # A fourth guess for the same username from the same address waits.
            fourth = {"authorization": cpe.digest.authorization("POST", "/", challenge)}
            throttled = await cpe.post(seed_inform(), headers=fourth, authenticate=False)
            assert throttled.status_code == 503 and int(throttled.headers["retry-after"]) > 0
        finally:
            await cpe.aclose()
        await asyncio.sleep(0.5)
        assert orchestrator.of_type("inform") == []  # nothing from an unauthenticated CPE


async def test_kafka_down_new_sessions_get_503_and_nothing_is_acknowledged(
        gateway_settings: Settings, tmp_path: Path) -> None:
    """A broker of its own, stopped under a running gateway: the Inform must not be answered 200."""
    from acs.infra import LocalKafka

    broker = LocalKafka(tmp_path / "kafka")
    broker.start()
    settings = gateway_settings.model_copy(update={"kafka_bootstrap": broker.bootstrap,
                                                   "kafka_publish_timeout": 1.0})
    try:
        async with running_gateway(settings) as url:
            broker.stop()
            cpe = TestCpe(url, "testcpe", "testcpe-password")
            try:
                answer = await cpe.post(seed_inform(serial="KAFKADOWN"))
                assert answer.status_code == 503
                assert "message bus" in answer.text and int(answer.headers["retry-after"]) > 0
                # The device is not left locked: the same CPE can start over once the bus is back.
                assert "acs_session" not in answer.headers.get("set-cookie", "")
            finally:
                await cpe.aclose()
    finally:
        broker.stop()


async def test_session_survives_a_dropped_connection_when_the_cpe_returns_with_its_cookie(
        gateway_settings: Settings) -> None:
    plan = [{"method": "GetRPCMethods"}]
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform(plan)) as orchestrator, \
            running_gateway(gateway_settings) as url:
        first = TestCpe(url, "testcpe", "testcpe-password")
        assert (await first.post(seed_inform(serial="RESUME"))).status_code == 200
        cookie = first.client.cookies.get("acs_session")
        await first.aclose()  # the TCP connection drops mid-session
        second = TestCpe(url)  # a new connection, no credentials: the cookie carries the session
        try:
            second.client.cookies.set("acs_session", cookie)
            method, rpc_id, _ = rpc_of((await second.post(None)).content)
            assert method == "GetRPCMethods"
            done = await second.post(get_rpc_methods_response(rpc_id))
            assert done.status_code == 204
        finally:
            await second.aclose()
        ended = await orchestrator.wait_for(lambda e: isinstance(e, SessionEnded))
        assert ended.outcome == "completed"
        assert len(orchestrator.of_type("rpc_response")) == 1


async def test_per_device_credentials_must_name_the_informing_device(gateway_settings: Settings) -> None:
    """Per-device mode: HA1s imported through inventory; a CPE may only speak for itself."""
    from pymongo import AsyncMongoClient

    from services.inventory.credentials import Row, import_rows

    settings = gateway_settings.model_copy(update={"cpe_credentials": "per-device"})
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
    try:
        await import_rows(client[settings.mongodb_database], [
            Row("09D021-IGD%20Simulator-OWN1", "own-password", None),
            Row("09D021-OTHER2", "other-password", None)], settings.cpe_realm)
    finally:
        await client.close()
    async with ScriptedOrchestrator(settings, plan_on_inform([])), running_gateway(settings) as url:
        own = TestCpe(url, "09D021-IGD%20Simulator-OWN1", "own-password")
        impostor = TestCpe(url, "09D021-OTHER2", "other-password")
        wrong = TestCpe(url, "09D021-IGD%20Simulator-OWN1", "guess")
        try:
            assert (await own.post(seed_inform(serial="OWN1"))).status_code == 200
            assert (await own.post(None)).status_code == 204
            refused = await impostor.post(seed_inform(serial="OWN1"))
            assert refused.status_code == 403 and "does not belong" in refused.text
            assert (await wrong.post(seed_inform(serial="OWN1"))).status_code == 401
        finally:
            for cpe in (own, impostor, wrong):
                await cpe.aclose()


async def test_the_shared_pair_is_for_first_contacts_and_own_credentials_for_their_device_only(
        gateway_settings: Settings) -> None:
    """Provisioned mode (the default): a DeviceId with its own credentials cannot be taken with the
    shared pair; until the bootstrap's SPV is confirmed both its pending pair and the shared one work."""
    from prometheus_client import REGISTRY
    from pymongo import AsyncMongoClient

    from services.inventory import credentials

    assert gateway_settings.cpe_credentials == "provisioned"
    own_id, other_id = "09D021-IGD%20Simulator-OWN1", "09D021-IGD%20Simulator-OTHER2"

    def refusals() -> float:
        return REGISTRY.get_sample_value("acs_gateway_auth_failures_total", {"scheme": "shared-refused"}) or 0.0

    client: AsyncMongoClient = AsyncMongoClient(gateway_settings.mongodb_url)
    db = client[gateway_settings.mongodb_database]
    realm = gateway_settings.cpe_realm
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([])), running_gateway(gateway_settings) as url:
        shared = TestCpe(url, "testcpe", "testcpe-password")
        own = TestCpe(url, own_id, "own-password")
        other = TestCpe(url, other_id, "other-password")
        try:
            async def session(cpe: TestCpe, serial: str) -> int:
                status = (await cpe.post(seed_inform(serial=serial))).status_code
                if status == 200:
                    assert (await cpe.post(None)).status_code == 204
                return status

            # First contact: the shared pair; the device's own pair is unknown yet.
            assert await session(shared, "OWN1") == 200
            assert await session(own, "OWN1") == 401
            # The bootstrap is setting its own pair: both work until the CPE's answer confirms it.
            await credentials.store_pending(db, own_id, own_id, realm, "own-password")
            assert await session(own, "OWN1") == 200
            assert await session(shared, "OWN1") == 200
            await credentials.confirm(db, own_id, own_id, realm, "own-password")
            await credentials.confirm(db, other_id, other_id, realm, "other-password")
            # From now on only its own: the shared pair is a wrong password for it (401, counted).
            before = refusals()
            assert await session(shared, "OWN1") == 401
            assert refusals() == before + 2  # the CPE tried twice: its last nonce, then a fresh one
            assert await session(own, "OWN1") == 200
            # Another device's own credentials cannot speak for it either.
            refused = await other.post(seed_inform(serial="OWN1"))
            assert refused.status_code == 403 and "does not belong" in refused.text
            # A device never seen before still makes its first contact with the shared pair.
            assert await session(shared, "NEW3") == 200
        finally:
            for cpe in (shared, own, other):
                await cpe.aclose()
            await client.drop_database(gateway_settings.mongodb_database)
            await client.close()


async def test_a_session_goes_on_with_the_pair_it_started_with_when_a_bootstrap_replaces_it(
        gateway_settings: Settings) -> None:
    """A device with its own pair bootstraps again: the ACS sets a new pair and confirms it while the
    CPE, in the same session, still authenticates its requests with the old one."""
    from pymongo import AsyncMongoClient

    from services.inventory import credentials

    own_id = "09D021-IGD%20Simulator-ROT1"
    client: AsyncMongoClient = AsyncMongoClient(gateway_settings.mongodb_url)
    db = client[gateway_settings.mongodb_database]
    await credentials.confirm(db, own_id, own_id, gateway_settings.cpe_realm, "old-pair")
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([{"method": "GetRPCMethods"}])), \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, own_id, "old-pair")
        try:
            assert (await cpe.post(seed_inform(serial="ROT1"))).status_code == 200
            # The bootstrap's SPV was answered: the new pair is the device's now.
            await credentials.confirm(db, own_id, own_id, gateway_settings.cpe_realm, "new-pair")
            request = await cpe.post(None)  # still signed with the old pair
            assert request.status_code == 200, request.text
            method, rpc_id, _ = rpc_of(request.content)
            assert method == "GetRPCMethods"
            assert (await cpe.post(get_rpc_methods_response(rpc_id))).status_code == 204
            # A new session needs the new pair.
            assert (await cpe.post(seed_inform(serial="ROT1"))).status_code == 401
        finally:
            await cpe.aclose()
            await client.drop_database(gateway_settings.mongodb_database)
            await client.close()


async def test_slow_headers_and_slow_bodies_do_not_hold_a_connection(gateway_settings: Settings) -> None:
    settings = gateway_settings.model_copy(update={"request_header_timeout": 0.5, "request_body_timeout": 0.5})
    async with running_gateway(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\n")  # and never the rest of the headers
            await writer.drain()
            assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed by the gateway
        finally:
            writer.close()
        # Headers complete, but a body that never comes: 408 after the body deadline.
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n<soap")
            await writer.drain()
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 408")
        finally:
            writer.close()


async def test_saturated_gateway_refuses_new_sessions_and_finishes_current_ones(gateway_settings: Settings) -> None:
    settings = gateway_settings.model_copy(update={"max_sessions": 1})
    async with ScriptedOrchestrator(settings, plan_on_inform([{"method": "GetRPCMethods"}])), \
            running_gateway(settings) as url:
        busy, late = TestCpe(url, "testcpe", "testcpe-password"), TestCpe(url, "testcpe", "testcpe-password")
        try:
            assert (await busy.post(seed_inform(serial="FIRST"))).status_code == 200
            refused = await late.post(seed_inform(serial="SECOND"))
            assert refused.status_code == 503 and "saturated" in refused.text
            assert int(refused.headers["retry-after"]) > 0
            _, rpc_id, _ = rpc_of((await busy.post(None)).content)  # the session in progress goes on
            done = await busy.post(envelope("<cwmp:GetRPCMethodsResponse><MethodList soap-enc:arrayType="
                                            "'xsd:string[0]'/></cwmp:GetRPCMethodsResponse>", rpc_id))
            assert done.status_code == 204
            assert (await late.post(seed_inform(serial="SECOND"))).status_code == 200  # room again
        finally:
            await busy.aclose()
            await late.aclose()


async def test_any_instance_serves_a_session_the_cookie_names_its_owner(gateway_settings: Settings) -> None:
    """Two gateway instances behind no affinity: the CPE's later requests land on the other one."""
    plan = [{"method": "GetRPCMethods"}]
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform(plan)) as orchestrator, \
            running_gateway(gateway_settings, gateway_id="gw-a") as url_a, \
            running_gateway(gateway_settings, gateway_id="gw-b") as url_b:
        on_a = TestCpe(url_a, "testcpe", "testcpe-password")
        on_b = TestCpe(url_b)
        try:
            assert (await on_a.post(seed_inform(serial="MOVES"))).status_code == 200
            cookie = on_a.client.cookies.get("acs_session")
            on_b.client.cookies.set("acs_session", cookie)
            method, rpc_id, _ = rpc_of((await on_b.post(None)).content)  # forwarded to gw-a
            assert method == "GetRPCMethods"
            done = await on_b.post(get_rpc_methods_response(rpc_id))
            assert done.status_code == 204
            # A forged owner in the cookie is ignored: gw-b does not forward it anywhere.
            session_id = cookie.split(".", 1)[0]
            on_b.client.cookies.set("acs_session", f"{session_id}.aHR0cDovLzEyNy4wLjAuMTox.forged")
            assert (await on_b.post(None)).status_code == 400
        finally:
            await on_a.aclose()
            await on_b.aclose()
        ended = await orchestrator.wait_for(lambda e: isinstance(e, SessionEnded))
        assert (ended.outcome, ended.gateway_id) == ("completed", "gw-a")


async def test_an_inform_on_a_connection_another_device_used_starts_its_own_session(
        gateway_settings: Settings) -> None:
    """A reverse proxy reuses one keep-alive connection for several CPEs (genieacs#281)."""
    settings = gateway_settings.model_copy(update={"cpe_auth": "none"})
    async with ScriptedOrchestrator(settings, plan_on_inform([{"method": "GetRPCMethods"}])) as orchestrator, \
            running_gateway(settings) as url:
        proxy = TestCpe(url, keep_cookies=False)  # one connection, no cookies: as a proxy would
        try:
            assert rpc_of((await proxy.post(seed_inform(serial="PROXIED-A"))).content)[0] == "InformResponse"
            second = await proxy.post(seed_inform(serial="PROXIED-B"))
            assert rpc_of(second.content)[0] == "InformResponse"  # a session of its own, not a 400
        finally:
            await proxy.aclose()
        informs = await orchestrator.wait_for(lambda e: len(orchestrator.of_type("inform")) == 2)
        assert informs is not None
        assert {e.device.serial_number for e in orchestrator.of_type("inform")} == {"PROXIED-A", "PROXIED-B"}
        assert not [e for e in orchestrator.of_type("session_ended") if e.outcome == "error"]


async def test_a_cpe_that_informs_again_mid_session_gets_a_new_session(gateway_settings: Settings) -> None:
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([])) as orchestrator, \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            assert (await cpe.post(seed_inform(serial="AGAIN"))).status_code == 200
            again = await cpe.post(seed_inform(serial="AGAIN", cwmp_id="2"))
            assert rpc_of(again.content)[:2] == ("InformResponse", "2")
            assert (await cpe.post(None)).status_code == 204
        finally:
            await cpe.aclose()
        dropped = await orchestrator.wait_for(lambda e: isinstance(e, SessionEnded) and e.outcome == "dropped")
        assert dropped.reason == "the CPE started a new session"
