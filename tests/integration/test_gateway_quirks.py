"""The gateway's per-vendor quirks on the real broker and MongoDB: each quirk changes what a matching
device gets, and nothing for a device the entry does not match.

The table is written with the orchestrator's store (as /api/v1/quirks does); the gateway reads it
at start and whenever its generation moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from services.bus.events import InformReceived, RpcResponseReceived
from services.common.quirks import QuirkMatch, Quirks
from services.common.settings import Settings
from services.orchestrator.quirks_store import QuirkStore
from tests.integration.gateway_harness import ScriptedOrchestrator, TestCpe, plan_on_inform, running_gateway
from tests.integration.test_gateway_sessions import envelope, rpc_of

pytestmark = pytest.mark.integration

QUIRKY = "Quirky Box"  # the ProductClass the entries match
PLAIN = "Plain Box"  # another product of the same vendor: no entry matches it
LAN_CPE = "InternetGatewayDevice.Lanhostconfigmanagement."  # as the quirky CPE spells it
LAN = "InternetGatewayDevice.LANHostConfigManagement."  # as the data model spells it


def inform(product_class: str, serial: str, extra: tuple[tuple[str, str], ...] = ()) -> str:
    params = [("InternetGatewayDevice.DeviceInfo.SoftwareVersion", "1.4.2"),
              ("InternetGatewayDevice.ManagementServer.ConnectionRequestURL", "http://A:10016/"), *extra]
    param_xml = "".join(f"<ParameterValueStruct><Name>{n}</Name><Value xsi:type='xsd:string'>{v}</Value>"
                        "</ParameterValueStruct>" for n, v in params)
    return envelope(
        "<cwmp:Inform><DeviceId><Manufacturer>Acme</Manufacturer><OUI>00D09E</OUI>"
        f"<ProductClass>{product_class}</ProductClass><SerialNumber>{serial}</SerialNumber></DeviceId>"
        "<Event soap-enc:arrayType='cwmp:EventStruct[1]'><EventStruct><EventCode>1 BOOT</EventCode>"
        "<CommandKey></CommandKey></EventStruct></Event>"
        "<MaxEnvelopes>1</MaxEnvelopes><CurrentTime>2016-06-01T23:39:09-04:00</CurrentTime>"
        f"<RetryCount>0</RetryCount><ParameterList soap-enc:arrayType='cwmp:ParameterValueStruct[{len(params)}]'>"
        f"{param_xml}</ParameterList></cwmp:Inform>", "1")


@pytest.fixture
def gateway_settings(settings: Settings, kafka_bootstrap: str, mongodb_url: str) -> Settings:
    return settings.model_copy(update={"cpe_auth": "digest", "cpe_credentials": "shared", "cpe_username": "testcpe",
                                       "cpe_password": "testcpe-password", "session_plan_timeout": 3.0,
                                       "shutdown_grace": 1.0, "quirks_refresh_seconds": 0.2})


@asynccontextmanager
async def quirk_table(settings: Settings, **quirks: Any) -> AsyncIterator[QuirkStore]:
    """An entry for OUI 00D09E, ProductClass QUIRKY, firmware 1.x, with ``quirks``."""
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    store = QuirkStore(mongo[settings.mongodb_database])
    await store.ensure_indexes()
    if quirks:
        await store.insert("q1", "quirky", "", QuirkMatch(oui="00D09E", product_class=QUIRKY,
                                                          software_version={"$prefix": "1."}),
                           Quirks.model_validate(quirks), "test", datetime.now(UTC))
    try:
        yield store
    finally:
        await mongo.drop_database(settings.mongodb_database)
        await mongo.close()


async def _values_sent(url: str, product_class: str, serial: str) -> list[str]:
    cpe = TestCpe(url, "testcpe", "testcpe-password")
    try:
        assert (await cpe.post(inform(product_class, serial))).status_code == 200
        spv = await cpe.post(None)
        method, spv_id, element = rpc_of(spv.content)
        assert method == "SetParameterValues"
        values = [v.text or "" for v in element.iter("Value")]
        await cpe.post(envelope("<cwmp:SetParameterValuesResponse><Status>0</Status>"
                                "</cwmp:SetParameterValuesResponse>", spv_id))
        return values
    finally:
        await cpe.aclose()


async def test_boolean_literals_follow_the_device_style(gateway_settings: Settings) -> None:
    plan = [{"method": "SetParameterValues", "parameter_key": "k", "parameter_list": [
        {"name": "InternetGatewayDevice.ManagementServer.PeriodicInformEnable",
         "value": {"value": "true", "type": "xsd:boolean"}},
        {"name": "InternetGatewayDevice.ManagementServer.Username", "value": {"value": "true", "type": "xsd:string"}},
    ]}]
    async with quirk_table(gateway_settings, boolean_style="numeric"), \
            ScriptedOrchestrator(gateway_settings, plan_on_inform(plan)) as orchestrator, \
            running_gateway(gateway_settings) as url:
        assert await _values_sent(url, QUIRKY, "B1") == ["1", "true"]  # the string stays a string
        assert await _values_sent(url, PLAIN, "B2") == ["true", "true"]
        # The orchestrator is told of the request as it planned it.
        await orchestrator.wait_for(lambda e: isinstance(e, RpcResponseReceived) and e.device_id.endswith("B2"))
        answers = orchestrator.of_type("rpc_response")
        assert all(a.request == plan[0] for a in answers)


async def test_max_envelopes_and_the_end_of_a_session(gateway_settings: Settings) -> None:
    async with quirk_table(gateway_settings, max_envelopes=3, end_session="200"), \
            ScriptedOrchestrator(gateway_settings, plan_on_inform([])), running_gateway(gateway_settings) as url:
        for product_class, envelopes, end in ((QUIRKY, "3", 200), (PLAIN, "1", 204)):
            cpe = TestCpe(url, "testcpe", "testcpe-password")
            try:
                answer = await cpe.post(inform(product_class, f"E-{end}"))
                method, _, element = rpc_of(answer.content)
                assert (method, element.findtext("MaxEnvelopes")) == ("InformResponse", envelopes)
                last = await cpe.post(None)
                assert (last.status_code, last.content) == (end, b"")
            finally:
                await cpe.aclose()


async def test_a_change_of_the_table_reaches_a_running_gateway(gateway_settings: Settings) -> None:
    async with quirk_table(gateway_settings) as store, \
            ScriptedOrchestrator(gateway_settings, plan_on_inform([])), running_gateway(gateway_settings) as url:

        async def end_status(serial: str) -> int:
            cpe = TestCpe(url, "testcpe", "testcpe-password")
            try:
                assert (await cpe.post(inform(QUIRKY, serial))).status_code == 200
                return (await cpe.post(None)).status_code
            finally:
                await cpe.aclose()

        assert await end_status("C1") == 204
        await store.insert("q2", "later", "", QuirkMatch(oui="00D09E", product_class=QUIRKY), Quirks(end_session="200"),
                           "test", datetime.now(UTC))
        async with asyncio.timeout(5):
            serial = 2
            while await end_status(f"C{serial}") != 200:
                serial += 1
                await asyncio.sleep(0.1)


async def test_parameter_names_are_fixed_to_the_data_model_case(gateway_settings: Settings) -> None:
    plan = [{"method": "GetParameterValues", "parameter_names": [f"{LAN}DHCPServerEnable"]}]
    async with quirk_table(gateway_settings, parameter_case={"Lanhostconfigmanagement": "LANHostConfigManagement"}), \
            ScriptedOrchestrator(gateway_settings, plan_on_inform(plan)) as orchestrator, \
            running_gateway(gateway_settings) as url:
        for product_class, serial, cpe_name in ((QUIRKY, "N1", f"{LAN_CPE}DHCPServerEnable"),
                                                (PLAIN, "N2", f"{LAN}DHCPServerEnable")):
            cpe = TestCpe(url, "testcpe", "testcpe-password")
            try:
                assert (await cpe.post(inform(product_class, serial, ((f"{LAN_CPE}DHCPServerEnable", "1"),)))
                        ).status_code == 200
                gpv = await cpe.post(None)
                method, gpv_id, element = rpc_of(gpv.content)
                assert method == "GetParameterValues"
                assert [n.text for n in element.iter("string")] == [cpe_name]  # spelled the CPE's way
                done = await cpe.post(envelope(
                    "<cwmp:GetParameterValuesResponse><ParameterList soap-enc:arrayType='cwmp:ParameterValueStruct[1]'>"
                    f"<ParameterValueStruct><Name>{LAN_CPE}DHCPServerEnable</Name><Value xsi:type='xsd:boolean'>1"
                    "</Value></ParameterValueStruct></ParameterList></cwmp:GetParameterValuesResponse>", gpv_id))
                assert done.status_code == 204
            finally:
                await cpe.aclose()
        quirky_answer = await orchestrator.wait_for(
            lambda e: isinstance(e, RpcResponseReceived) and e.device_id.endswith("N1"))
        plain_answer = await orchestrator.wait_for(
            lambda e: isinstance(e, RpcResponseReceived) and e.device_id.endswith("N2"))
    informs: dict[str, InformReceived] = {e.device_id[-2:]: e for e in orchestrator.of_type("inform")}
    assert f"{LAN}DHCPServerEnable" in {p.name for p in informs["N1"].parameters}
    assert f"{LAN_CPE}DHCPServerEnable" in {p.name for p in informs["N2"].parameters}  # not this device's quirk
    assert quirky_answer.rpc["parameter_list"][0]["name"] == f"{LAN}DHCPServerEnable"
    assert quirky_answer.request == plan[0]
    assert plain_answer.rpc["parameter_list"][0]["name"] == f"{LAN_CPE}DHCPServerEnable"


async def test_a_cpe_without_cookies_or_kept_connections_is_bound_by_address(gateway_settings: Settings) -> None:
    plan = [{"method": "GetParameterValues", "parameter_names": ["InternetGatewayDevice.DeviceInfo.UpTime"]}]
    async with quirk_table(gateway_settings, session_binding="address"), \
            ScriptedOrchestrator(gateway_settings, plan_on_inform(plan)), running_gateway(gateway_settings) as url:
        for product_class, continued in ((QUIRKY, True), (PLAIN, False)):
            cpe = TestCpe(url, "testcpe", "testcpe-password")
            try:
                assert (await cpe.post(inform(product_class, f"A-{continued}"))).status_code == 200
                # A new connection, no cookie: as a CPE that forgets both between requests.
                async with httpx.AsyncClient(base_url=url, timeout=30) as fresh:
                    empty = await fresh.post("/", content=b"")
                if continued:
                    method, gpv_id, _ = rpc_of(empty.content)
                    assert (empty.status_code, method) == (200, "GetParameterValues")
                    async with httpx.AsyncClient(base_url=url, timeout=30) as fresh:
                        done = await fresh.post("/", headers={"content-type": "text/xml"}, content=envelope(
                            "<cwmp:GetParameterValuesResponse><ParameterList soap-enc:arrayType="
                            "'cwmp:ParameterValueStruct[1]'><ParameterValueStruct><Name>InternetGatewayDevice."
                            "DeviceInfo.UpTime</Name><Value xsi:type='xsd:unsignedInt'>5</Value>"
                            "</ParameterValueStruct></ParameterList></cwmp:GetParameterValuesResponse>", gpv_id))
                    assert done.status_code == 204  # the session ended, and with it the address binding
                else:
                    assert empty.status_code == 400  # no session to continue
            finally:
                await cpe.aclose()


def _without_qop(challenge: str) -> str:
    """The challenge as an RFC 2069 client reads it (it ignores qop)."""
    return challenge.replace('qop="auth", ', "")


async def test_digest_without_qop_only_for_devices_allowed_it(gateway_settings: Settings) -> None:
    from cwmp.digest import DigestClient

    async with quirk_table(gateway_settings, digest_without_qop=True), \
            ScriptedOrchestrator(gateway_settings, plan_on_inform([])), running_gateway(gateway_settings) as url:
        for product_class, allowed in ((QUIRKY, True), (PLAIN, False)):
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                body = inform(product_class, f"D-{allowed}")
                headers = {"content-type": "text/xml; charset=utf-8"}
                first = await client.post("/", content=body, headers=headers)
                assert first.status_code == 401
                digest = DigestClient("testcpe", "testcpe-password")
                authorization = digest.authorization("POST", "/", _without_qop(first.headers["www-authenticate"]))
                assert "qop=" not in authorization and "nc=" not in authorization
                answer = await client.post("/", content=body, headers={**headers, "authorization": authorization})
                if allowed:
                    assert answer.status_code == 200 and rpc_of(answer.content)[0] == "InformResponse"
                    assert (await client.post("/", content=b"")).status_code == 204
                else:
                    assert answer.status_code == 401
                    assert 'qop="auth"' in answer.headers["www-authenticate"]


async def test_real_agents_informs_an_entry_for_easycwmp_only(gateway_settings: Settings, shared_dir: Path) -> None:
    """Real agents' first messages (interop/): an entry for easycwmp's OUI, ProductClass and firmware
    changes its session; cwmp-sim's TP-Link device, on the same gateway, gets the standard one."""
    settings = gateway_settings.model_copy(update={"cpe_auth": "none"})
    interop = shared_dir / "interop"
    async with quirk_table(settings) as store, \
            ScriptedOrchestrator(settings, plan_on_inform([])), running_gateway(settings) as url:
        await store.insert("q-easy", "easycwmp", "", QuirkMatch(oui="FFFFFF", product_class="easycwmp",
                                                                software_version={"$prefix": "example_"}),
                           Quirks(max_envelopes=2, end_session="200"), "test",
                           datetime.now(UTC))
        await asyncio.sleep(0.5)  # the gateway's refresh period is 0.2 s here
        for name, envelopes, end in (("easycwmp_inform_0BOOTSTRAP_1BOOT_unauthenticated.xml", "2", 200),
                                     ("cwmp-sim_tr181-ex220csv_inform_1BOOT.xml", "1", 204)):
            cpe = TestCpe(url)
            try:
                answer = await cpe.post((interop / name).read_bytes())
                assert answer.status_code == 200, name
                method, _, element = rpc_of(answer.content)
                assert (method, element.findtext("MaxEnvelopes")) == ("InformResponse", envelopes), name
                last = await cpe.post(None)
                assert (last.status_code, last.content) == (end, b""), name
            finally:
                await cpe.aclose()
