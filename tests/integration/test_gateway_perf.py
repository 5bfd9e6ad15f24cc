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
