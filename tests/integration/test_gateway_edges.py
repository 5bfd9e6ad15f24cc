"""The CPE-facing edge of the gateway refuses what it must not pass on (issue 15, items 3, 4, 12):
numbers beyond xs:int/xs:unsignedInt, an Inform or answer too large for the bus, two cwmp:ID
headers, and a DeviceId that names no device. Each gets a clear 4xx at once, nothing reaches the
bus, and the logs carry bounded excerpts only. Real broker and MongoDB, scripted orchestrator.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.bus.events import SessionEnded
from services.common.settings import Settings
from tests.integration.gateway_harness import ScriptedOrchestrator, TestCpe, plan_on_inform, running_gateway
from tests.integration.test_gateway_sessions import envelope, rpc_of, seed_inform

pytestmark = pytest.mark.integration

GPV = {"method": "GetParameterValues", "parameter_names": ["InternetGatewayDevice.DeviceInfo.UpTime"]}


@pytest.fixture
def gateway_settings(settings: Settings, kafka_bootstrap: str, mongodb_url: str) -> Settings:
    return settings.model_copy(update={"cpe_auth": "digest", "cpe_username": "testcpe",
                                       "cpe_password": "testcpe-password", "session_plan_timeout": 3.0,
                                       "shutdown_grace": 1.0})


def two_ids(inform: str) -> str:
    one = '<cwmp:ID soap-env:mustUnderstand="1">1785452630</cwmp:ID>'
    assert one in inform
    return inform.replace(one, one + '<cwmp:ID soap-env:mustUnderstand="1">2</cwmp:ID>')


def longest_log_line(caplog: pytest.LogCaptureFixture) -> int:
    return max((len(r.getMessage()) + sum(len(str(v)) for v in r.__dict__.values()) for r in caplog.records),
               default=0)


async def test_informs_that_name_no_single_device_are_refused_with_400(gateway_settings: Settings) -> None:
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([])) as orchestrator, \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            doubled = await cpe.post(two_ids(seed_inform(serial="TWOIDS")))
            assert doubled.status_code == 400 and "two cwmp:ID headers" in doubled.text
            empty = await cpe.post(seed_inform(serial=""))
            assert empty.status_code == 400 and "SerialNumber is empty" in empty.text
            blank = await cpe.post(seed_inform(serial="  "))
            assert blank.status_code == 400
            # The same CPE with a sane Inform is served as ever.
            assert (await cpe.post(seed_inform(serial="FINE1"))).status_code == 200
            assert (await cpe.post(None)).status_code == 204
        finally:
            await cpe.aclose()
        await orchestrator.wait_for(lambda e: e.type == "inform")
        await asyncio.sleep(0.5)
        assert [e.device_id for e in orchestrator.of_type("inform")] == ["09D021-IGD%20Simulator-FINE1"]


async def test_an_inform_too_large_for_the_bus_is_refused_once_with_a_clear_4xx(
        gateway_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([])) as orchestrator, \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            # A 900 KB SerialNumber: within the body limit, far beyond TR-069's string(64).
            huge_serial = await cpe.post(seed_inform(serial="S" * 900_000))
            assert huge_serial.status_code == 400, huge_serial.text
            assert "SerialNumber is 900000 characters long" in huge_serial.text
            assert "retry-after" not in huge_serial.headers and len(huge_serial.text) < 200
            # A body of 600 KB whose JSON event is twice as large (every '"' is escaped): 413.
            bloated = seed_inform(serial="BLOAT1").replace("WKSS", '"' * 600_000)
            assert len(bloated) < gateway_settings.max_body_bytes
            too_large = await cpe.post(bloated)
            assert too_large.status_code == 413 and "too large for the message bus" in too_large.text
            assert "retry-after" not in too_large.headers
            # Refused for what it is, not for a sick bus: the next Inform goes through at once.
            assert (await cpe.post(seed_inform(serial="AFTER1"))).status_code == 200
            assert (await cpe.post(None)).status_code == 204
        finally:
            await cpe.aclose()
        await orchestrator.wait_for(lambda e: e.type == "inform")
        await asyncio.sleep(0.5)
        assert [e.device_id for e in orchestrator.of_type("inform")] == ["09D021-IGD%20Simulator-AFTER1"]
    assert any("too large for the bus" in r.getMessage() for r in caplog.records)
    assert longest_log_line(caplog) < 5000  # bounded excerpts, never the 900,000 characters


async def test_a_fault_code_beyond_64_bits_ends_the_session_with_400_and_nothing_downstream(
        gateway_settings: Settings) -> None:
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([GPV])) as orchestrator, \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            assert (await cpe.post(seed_inform(serial="BIGFAULT"))).status_code == 200
            gpv = await cpe.post(None)
            method, rpc_id, _ = rpc_of(gpv.content)
            assert method == "GetParameterValues"
            fault = envelope("<soap-env:Fault><faultcode>Client</faultcode><faultstring>CWMP fault</faultstring>"
                             "<detail><cwmp:Fault><FaultCode>18446744073709551616</FaultCode>"
                             "<FaultString>x</FaultString></cwmp:Fault></detail></soap-env:Fault>", rpc_id)
            answer = await cpe.post(fault)
            assert answer.status_code == 400 and "Fault/FaultCode" in answer.text
        finally:
            await cpe.aclose()
        ended = await orchestrator.wait_for(lambda e: isinstance(e, SessionEnded))
        assert ended.outcome == "error" and "FaultCode" in ended.reason
        assert orchestrator.of_type("rpc_fault") == []
