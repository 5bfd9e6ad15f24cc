"""Kicked (TR-069 A.4.2.1) is refused with 8000 Method not supported; the session goes on."""

from __future__ import annotations

import pytest

from services.bus.events import CpeRequestReceived
from services.common.settings import Settings
from tests.integration.gateway_harness import ScriptedOrchestrator, TestCpe, plan_on_inform, running_gateway
from tests.integration.test_gateway_sessions import envelope, gateway_settings, rpc_of, seed_inform

pytestmark = pytest.mark.integration
__all__ = ["gateway_settings"]  # fixture

KICKED = ("<cwmp:Kicked><Command>login</Command><Referer>http://portal.test/</Referer><Arg>x=1</Arg>"
          "<Next>http://portal.test/next</Next></cwmp:Kicked>")


async def test_kicked_gets_8000_and_is_not_published(gateway_settings: Settings) -> None:
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([])) as orchestrator, \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", "testcpe-password")
        try:
            assert (await cpe.post(seed_inform(events=("5 KICKED",)))).status_code == 200
            answer = await cpe.post(envelope(KICKED, "k-1"))
            assert answer.status_code == 200
            method, cwmp_id, element = rpc_of(answer.content)
            assert (method, cwmp_id) == ("Fault", "k-1")
            assert element.xpath("string(//*[local-name()='FaultCode'])") == "8000"
            assert "not supported" in element.xpath("string(//*[local-name()='FaultString'])")
            assert (await cpe.post(None)).status_code == 204
            assert not [e for e in orchestrator.events if isinstance(e, CpeRequestReceived)]
        finally:
            await cpe.aclose()
