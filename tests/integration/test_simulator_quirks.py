"""The simulator's vendor habits (docs/quirks.md) against the real gateway, broker and MongoDB: each
habit fails where no quirk entry covers the device and works where one does."""

from __future__ import annotations

import datetime

import pytest
from pymongo import AsyncMongoClient

from services.bus.events import RpcFaultReceived, RpcResponseReceived
from services.common.quirks import QuirkMatch, Quirks
from services.common.settings import Settings
from services.orchestrator.quirks_store import QuirkStore
from simulator.miniacs import eventually
from tests.integration.gateway_harness import ScriptedOrchestrator, plan_on_inform, running_gateway
from tests.integration.test_gateway_with_simulator import PASSWORD, simulated, summary

pytestmark = pytest.mark.integration

QUIRKY = "Quirky Box"
SPV = {"method": "SetParameterValues", "parameter_key": "k", "parameter_list": [
    {"name": "InternetGatewayDevice.ManagementServer.PeriodicInformEnable",
     "value": {"value": "true", "type": "xsd:boolean"}}]}


@pytest.fixture
def gateway_settings(settings: Settings, kafka_bootstrap: str, mongodb_url: str) -> Settings:
    return settings.model_copy(update={"cpe_auth": "digest", "cpe_credentials": "shared", "cpe_username": "testcpe",
                                       "cpe_password": PASSWORD, "session_plan_timeout": 3.0, "shutdown_grace": 1.0,
                                       "quirks_refresh_seconds": 0.2})


async def _table(settings: Settings, quirks: Quirks) -> AsyncMongoClient:
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    store = QuirkStore(mongo[settings.mongodb_database])
    await store.ensure_indexes()
    await store.insert("q1", "quirky", "", QuirkMatch(product_class=QUIRKY), quirks, "test",
                       datetime.datetime.now(datetime.UTC))
    return mongo


async def test_an_rfc2069_digest_client_is_let_in_only_where_the_quirks_say(gateway_settings: Settings) -> None:
    mongo = await _table(gateway_settings, Quirks(digest_without_qop=True))
    try:
        async with ScriptedOrchestrator(gateway_settings, plan_on_inform([])), \
                running_gateway(gateway_settings) as url:
            async with simulated(url, product_class=QUIRKY, digest_without_qop=True) as fleet:
                await eventually(lambda: summary(fleet)["sessions_ok"] >= 1 or summary(fleet)["sessions_failed"] > 0,
                                 seconds=20)
                assert summary(fleet)["sessions_failed"] == 0, summary(fleet)["failure_reasons"]
            async with simulated(url, product_class="Plain Box", digest_without_qop=True, serial_prefix="PL") \
                    as fleet:
                await eventually(lambda: summary(fleet)["sessions_failed"] > 0 or summary(fleet)["sessions_ok"] > 0,
                                 seconds=20)
                assert summary(fleet)["sessions_ok"] == 0
                assert set(summary(fleet)["failure_reasons"]) == {"auth"}  # credentials refused after the challenge
    finally:
        await mongo.drop_database(gateway_settings.mongodb_database)
        await mongo.close()


async def test_a_cpe_that_takes_only_numeric_booleans(gateway_settings: Settings) -> None:
    mongo = await _table(gateway_settings, Quirks(boolean_style="numeric"))
    try:
        async with ScriptedOrchestrator(gateway_settings, plan_on_inform([SPV])) as orchestrator, \
                running_gateway(gateway_settings) as url:
            async with simulated(url, product_class=QUIRKY, bool_style="numeric") as fleet:
                answer = await orchestrator.wait_for(lambda e: isinstance(e, RpcResponseReceived | RpcFaultReceived))
                assert isinstance(answer, RpcResponseReceived), answer
                assert fleet.device_by_index(0) is not None
            async with simulated(url, product_class="Plain Box", bool_style="numeric", serial_prefix="PL"):
                refused = await orchestrator.wait_for(lambda e: isinstance(e, RpcFaultReceived))
                assert refused.fault_code == 9007 and "Plain" in refused.device_id
    finally:
        await mongo.drop_database(gateway_settings.mongodb_database)
        await mongo.close()
