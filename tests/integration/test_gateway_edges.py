"""The CPE-facing edge of the gateway (issue 15): it refuses what it must not pass on (numbers
beyond xs:int/xs:unsignedInt, an Inform or answer too large for the bus, two cwmp:ID headers, a
DeviceId that names no device), each with a clear 4xx at once, nothing on the bus, bounded log
excerpts; it throttles password guessing per (username, address) and believes forwarding headers
only from trusted proxies; and it exposes CWMP only, metrics being on the admin port. Real broker
and MongoDB, scripted orchestrator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from acs.infra import free_port
from services.bus.events import SessionEnded
from services.bus.kafka import ensure_topics
from services.common.settings import Settings
from services.gateway.admin import GatewayAdminApp
from services.gateway.app import GatewayApp
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


# --- the brute-force throttle (issue 15 item 7) -----------------------------------------------


async def wrong_guesses(url: str, username: str, count: int, headers: dict[str, str] | None = None,
                        serial: str = "GUESS") -> list[int]:
    """``count`` Digest Informs with a wrong password, as a guesser sends them: their statuses."""
    guesser = TestCpe(url, username, "not-the-password")
    try:
        challenge = (await guesser.post(seed_inform(serial=serial), headers=headers, authenticate=False)
                     ).headers["www-authenticate"]
        assert guesser.digest is not None
        statuses = []
        for _ in range(count):
            wrong = {**(headers or {}), "authorization": guesser.digest.authorization("POST", "/", challenge)}
            statuses.append((await guesser.post(seed_inform(serial=serial), headers=wrong,
                                                authenticate=False)).status_code)
        return statuses
    finally:
        await guesser.aclose()


async def login(url: str, serial: str, headers: dict[str, str] | None = None) -> int:
    cpe = TestCpe(url, "testcpe", "testcpe-password")
    try:
        status = (await cpe.post(seed_inform(serial=serial), headers=headers)).status_code
        if status == 200:
            assert (await cpe.post(None, headers=headers)).status_code == 204
        return status
    finally:
        await cpe.aclose()


async def test_forwarding_headers_from_an_untrusted_peer_do_not_reset_the_throttle(
        gateway_settings: Settings) -> None:
    """No ACS_TRUSTED_PROXIES (the default): a guesser rotating X-Forwarded-For / Forwarded is
    still one address, and the Inform's remote address is the TCP peer's."""
    settings = gateway_settings.model_copy(update={"auth_failures_before_throttle": 3})
    async with ScriptedOrchestrator(settings, plan_on_inform([])) as orchestrator, running_gateway(settings) as url:
        statuses = []
        for i in range(5):
            spoof = {"x-forwarded-for": f"198.51.100.{i}", "forwarded": f"for=198.51.100.{i}"}
            statuses += await wrong_guesses(url, "testcpe", 1, headers=spoof)
        assert statuses == [401, 401, 401, 503, 503]
        assert await login(url, "SPOOF1", headers={"x-forwarded-for": "198.51.100.77"}) == 503  # same pair
        assert await login(url, "SPOOF2", headers={"x-forwarded-for": "198.51.100.78"}) == 503
    assert orchestrator.of_type("inform") == []


async def test_a_correct_login_behind_a_guessers_address_is_never_refused(gateway_settings: Settings) -> None:
    settings = gateway_settings.model_copy(update={"auth_failures_before_throttle": 3,
                                                   "auth_failures_per_address": 4})
    async with ScriptedOrchestrator(settings, plan_on_inform([])) as orchestrator, running_gateway(settings) as url:
        # One guesser, one username: throttled after three.
        assert await wrong_guesses(url, "admin", 4) == [401, 401, 401, 503]
        # The CPEs behind the same address log in as ever: their pair never failed.
        assert await login(url, "NAT1") == 200
        # ... and that good login reset nothing of the guesser's.
        assert await wrong_guesses(url, "admin", 1) == [503]
        # Rotating usernames meets the per-address ceiling (4 failures): one guess per username.
        assert await wrong_guesses(url, "root", 2) == [401, 503]
        assert await wrong_guesses(url, "support", 2) == [401, 503]
        # Still: a correct login is never refused. Its X-Forwarded-For is ignored (no trusted proxy).
        assert await login(url, "NAT2", headers={"x-forwarded-for": "198.51.100.50"}) == 200
    informs = {e.device_id: e for e in orchestrator.of_type("inform")}
    assert set(informs) == {"09D021-IGD%20Simulator-NAT1", "09D021-IGD%20Simulator-NAT2"}
    assert informs["09D021-IGD%20Simulator-NAT2"].remote_address == "127.0.0.1"


async def test_forwarding_headers_from_a_trusted_proxy_name_the_client(gateway_settings: Settings) -> None:
    settings = gateway_settings.model_copy(update={"auth_failures_before_throttle": 2,
                                                   "trusted_proxies": "127.0.0.1/32"})
    async with ScriptedOrchestrator(settings, plan_on_inform([])) as orchestrator, running_gateway(settings) as url:
        attacker = {"x-forwarded-for": "203.0.113.9"}
        assert await wrong_guesses(url, "testcpe", 3, headers=attacker) == [401, 401, 503]
        # Another client of the proxy with the same (shared) username is another pair.
        assert await login(url, "PROXIED1", headers={"x-forwarded-for": "6.6.6.6, 198.51.100.7"}) == 200
        inform = await orchestrator.wait_for(lambda e: e.type == "inform")
    assert inform.remote_address == "198.51.100.7"  # the proxy's word, not the spoofed head


# --- what the CPE-facing port exposes (issue 15 item 11) -------------------------------------


@contextlib.asynccontextmanager
async def gateway_and_admin(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """The gateway's two listeners as `acs gateway` runs them: CWMP, and the admin port."""
    await ensure_topics(settings)
    port, admin_port = free_port(), free_port()
    settings = settings.model_copy(update={"gateway_port": port, "gateway_admin_port": admin_port})
    gateway = GatewayApp(settings, gateway_id="gw-admin-test")
    servers = [uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=p, log_config=None, lifespan="on",
                                             proxy_headers=False))
               for app, p in ((gateway, port), (GatewayAdminApp(gateway), admin_port))]
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        async with asyncio.timeout(30):
            while not all(server.started for server in servers):
                for task in tasks:
                    if task.done():
                        task.result()
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.wait_for(asyncio.gather(*tasks), 40)


async def test_metrics_are_on_the_admin_port_and_the_cwmp_port_exposes_nothing_else(
        gateway_settings: Settings) -> None:
    async with gateway_and_admin(gateway_settings) as (cwmp, admin), httpx.AsyncClient(timeout=10) as client:
        for path in ("/metrics", "/docs", "/openapi.json", "/redoc", "/anything"):
            answer = await client.get(cwmp + path)
            assert answer.status_code == 405 and "acs_gateway" not in answer.text, path
        metrics = await client.get(admin + "/metrics")
        assert metrics.status_code == 200 and "acs_gateway_sessions_started_total" in metrics.text
        for base in (cwmp, admin):  # the bare probes, for load balancers on either port
            assert (await client.get(base + "/healthz")).text.strip() == "ok"
            assert (await client.get(base + "/readyz")).status_code == 200
        assert (await client.get(admin + "/docs")).status_code == 404
        assert (await client.post(admin + "/", content=seed_inform())).status_code == 405  # no CWMP there
