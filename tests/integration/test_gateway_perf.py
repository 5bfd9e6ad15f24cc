"""The gateway's per-session costs (issue 21), against the real broker and MongoDB."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.settings import Settings
from services.gateway import core
from tests.integration.gateway_harness import ScriptedOrchestrator, TestCpe, plan_on_inform, running_gateway
from tests.integration.test_gateway_sessions import get_rpc_methods_response, rpc_of, seed_inform

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway_settings(settings: Settings, kafka_bootstrap: str, mongodb_url: str) -> Settings:
    return settings.model_copy(update={"cpe_auth": "digest", "cpe_username": "testcpe",
                                       "cpe_password": "testcpe-password", "session_plan_timeout": 3.0,
                                       "shutdown_grace": 1.0})


async def test_the_session_cookie_hmac_is_checked_once_per_request(gateway_settings: Settings,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    original = core.parse_cookie_value

    def counting(value: str, secret: str) -> Any:
        checked.append(value)
        return original(value, secret)

    monkeypatch.setattr(core, "parse_cookie_value", counting)
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([{"method": "GetRPCMethods"}])), \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            assert (await cpe.post(seed_inform())).status_code == 200
            assert checked == []  # no cookie yet
            answer = await cpe.post(None)  # carries the cookie
            _, rpc_id, _ = rpc_of(answer.content)
            assert len(checked) == 1  # asked for twice (is the session elsewhere? which one?), checked once
            assert (await cpe.post(get_rpc_methods_response(rpc_id))).status_code == 204
            assert 1 <= len(checked) <= 2  # at most once per request (the same value: not even that)
        finally:
            await cpe.aclose()


async def test_a_cpe_reusing_a_valid_nonce_with_the_next_nc_is_served_without_a_challenge(
        gateway_settings: Settings) -> None:
    """The next session's Inform carries the nonce of the last challenge and nc + 1: no 401 leg."""
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([])), \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            first = await cpe.post(seed_inform(), authenticate=False)
            assert first.status_code == 401
            assert (await cpe.post(seed_inform())).status_code == 200  # answers the challenge
            assert (await cpe.post(None)).status_code == 204
            assert cpe.digest is not None
            nonce = cpe.digest.challenge.nonce if cpe.digest.challenge else None
            header = cpe.digest.authorization("POST", "/")
            assert "nc=00000003" in header
            again = await cpe.client.post("/", content=seed_inform(events=("2 PERIODIC",)).encode(),
                                          headers={"content-type": "text/xml; charset=utf-8",
                                                   "authorization": header})
            assert again.status_code == 200 and rpc_of(again.content)[0] == "InformResponse"
            assert (cpe.digest.challenge.nonce if cpe.digest.challenge else None) == nonce
            assert (await cpe.post(None)).status_code == 204
        finally:
            await cpe.aclose()


@pytest.mark.parametrize("keep_nonce", [True, False])
async def test_the_simulator_keeping_its_nonce_skips_the_401_leg_of_later_sessions(
        gateway_settings: Settings, keep_nonce: bool) -> None:
    from simulator.miniacs import eventually
    from tests.integration.test_gateway_with_simulator import simulated, summary

    settings = gateway_settings.model_copy(update={"cpe_password": "testcpe-password"})
    async with ScriptedOrchestrator(settings, plan_on_inform([])), running_gateway(settings) as url, \
            simulated(url, digest_keep_nonce=keep_nonce, periodic_interval=1, jitter=0.0) as fleet:
        await eventually(lambda: summary(fleet)["sessions_ok"] >= 3 or summary(fleet)["sessions_failed"] > 0,
                         seconds=30)
        records = list(fleet.metrics.records)
    assert all(r.ok for r in records), [r.reason for r in records]
    # A routine session: Inform and empty POST, plus the 401 leg when the nonce is not kept.
    assert records[0].http_requests == 3
    assert {r.http_requests for r in records[1:]} == ({2} if keep_nonce else {3})


async def test_slow_sessions_make_the_gateway_refuse_new_ones_and_the_simulator_honours_retry_after(
        gateway_settings: Settings) -> None:
    """Plans that never come: every session takes the plan timeout (0.4 s), past half the bound
    (0.5 s). New sessions then get 503 + Retry-After (1-3 s) and the CPEs wait that long."""
    from simulator.miniacs import eventually
    from tests.integration.test_gateway_with_simulator import simulated

    settings = gateway_settings.model_copy(update={"cpe_auth": "none", "session_plan_timeout": 0.4,
                                                   "admission_latency_bound": 0.5, "admission_retry_after": 2})
    async with ScriptedOrchestrator(settings, lambda event: None), running_gateway(settings) as url, \
            simulated(url, auth="none", devices=40, periodic_interval=1, jitter=0.0, ramp=0.5) as fleet:
        await eventually(lambda: fleet.metrics.failure_reasons.get("HTTP 503", 0) >= 10, seconds=30)
        await eventually(lambda: any(not r.ok and r.reason.startswith("HTTP 503") and any(
            later.device == r.device and later.start > r.end for later in fleet.metrics.records)
            for r in fleet.metrics.records), seconds=30)
        records = list(fleet.metrics.records)
    assert set(fleet.metrics.failure_reasons) == {"HTTP 503"}  # refused, never failed otherwise
    for refused in (r for r in records if not r.ok):
        later = [r.start for r in records if r.device == refused.device and r.start > refused.end]
        if later:
            assert min(later) - refused.end >= 0.9  # Retry-After (at least 1 s) was honoured
