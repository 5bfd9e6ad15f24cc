"""Digest quirks and session take-over against the real gateway, broker and MongoDB.

What real CPE agents did to the gateway: a Digest client that resends ``nc=00000001``, a CPE
that restarts its session mid-session, and one that drops its TCP connection and comes back with
a new Inform on a new connection (possibly reaching another gateway instance).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from pymongo import AsyncMongoClient

from cwmp.digest import DigestClient
from services.bus.events import InboundEvent, SessionEnded
from services.common.settings import Settings
from tests.integration.gateway_harness import ScriptedOrchestrator, TestCpe, plan_on_inform, running_gateway
from tests.integration.test_gateway_sessions import get_rpc_methods_response, rpc_of, seed_inform

pytestmark = pytest.mark.integration

PASSWORD = "testcpe-password"
PLAN = [{"method": "GetRPCMethods"}]


@pytest.fixture
def gateway_settings(settings: Settings, kafka_bootstrap: str, mongodb_url: str) -> Settings:
    # One wrong password is enough to be throttled: anything else counted as one shows at once.
    return settings.model_copy(update={"cpe_auth": "digest", "cpe_username": "testcpe", "cpe_password": PASSWORD,
                                       "session_plan_timeout": 3.0, "shutdown_grace": 1.0,
                                       "auth_failures_before_throttle": 1})


def ended(session_id: str) -> Callable[[InboundEvent], bool]:
    return lambda e: isinstance(e, SessionEnded) and e.session_id == session_id


async def test_a_reused_nonce_count_neither_ends_the_session_nor_counts_as_a_wrong_password(
        gateway_settings: Settings) -> None:
    """The sloppy client: one Authorization (nc=00000001) on every request, and on its next Inform."""
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform(PLAN)) as orchestrator, \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url)
        client = DigestClient("testcpe", PASSWORD)
        try:
            challenge = (await cpe.post(seed_inform(serial="SLOPPY"))).headers["www-authenticate"]
            sloppy = {"authorization": client.authorization("POST", "/", challenge)}
            assert "nc=00000001" in sloppy["authorization"]
            assert (await cpe.post(seed_inform(serial="SLOPPY"), headers=sloppy)).status_code == 200
            # The same header on the empty POST and on the answer: accepted, the cookie proves the session.
            method, rpc_id, _ = rpc_of((await cpe.post(None, headers=sloppy)).content)
            assert method == "GetRPCMethods"
            assert (await cpe.post(get_rpc_methods_response(rpc_id), headers=sloppy)).status_code == 204
            # A new session may not start on a used nonce count: 401 with stale=true, and no
            # failure counted (one would throttle this address: auth_failures_before_throttle=1).
            replayed = await cpe.post(seed_inform(serial="SLOPPY", cwmp_id="2"), headers=sloppy)
            assert replayed.status_code == 401
            fresh_challenge = replayed.headers["www-authenticate"]
            assert "stale=true" in fresh_challenge
            fresh = {"authorization": DigestClient("testcpe", PASSWORD).authorization("POST", "/", fresh_challenge)}
            assert (await cpe.post(seed_inform(serial="SLOPPY", cwmp_id="3"), headers=fresh)).status_code == 200
        finally:
            await cpe.aclose()
        first = orchestrator.of_type("inform")[0]
        assert (await orchestrator.wait_for(ended(first.session_id))).outcome == "completed"
        assert len(orchestrator.of_type("rpc_response")) == 1


async def test_a_new_inform_inside_a_live_session_is_verified_once(gateway_settings: Settings) -> None:
    """A CPE that restarts its session on the same connection, credentials sent pre-emptively."""
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([])) as orchestrator, \
            running_gateway(gateway_settings) as url:
        cpe = TestCpe(url, "testcpe", PASSWORD)
        try:
            assert (await cpe.post(seed_inform(serial="RESTART"))).status_code == 200
            assert cpe.digest is not None
            again = await cpe.post(seed_inform(serial="RESTART", cwmp_id="2"), authenticate=False,
                                   headers={"authorization": cpe.digest.authorization("POST", "/")})
            assert again.status_code == 200, again.text  # not 401 "nonce count replayed"
            assert rpc_of(again.content)[:2] == ("InformResponse", "2")
            assert (await cpe.post(None)).status_code == 204
        finally:
            await cpe.aclose()
        first, second = orchestrator.of_type("inform")
        dropped = await orchestrator.wait_for(ended(first.session_id))
        assert (dropped.outcome, dropped.reason) == ("dropped", "the CPE started a new session")
        assert second.session_id != first.session_id


async def test_a_new_inform_of_a_device_takes_its_abandoned_session_over(gateway_settings: Settings) -> None:
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform(PLAN)) as orchestrator, \
            running_gateway(gateway_settings) as url:
        old, new = TestCpe(url, "testcpe", PASSWORD), TestCpe(url, "testcpe", PASSWORD)
        try:
            assert (await old.post(seed_inform(serial="TAKEN"))).status_code == 200
            _, sent, _ = rpc_of((await old.post(None)).content)  # and the CPE vanishes with it
            answer = await new.post(seed_inform(serial="TAKEN"))  # a new connection, no cookie
            assert rpc_of(answer.content)[0] == "InformResponse", answer.text
            # The old session is over: its cookie names no session any more.
            assert (await old.post(get_rpc_methods_response(sent))).status_code == 400
            _, again, _ = rpc_of((await new.post(None)).content)
            assert (await new.post(get_rpc_methods_response(again))).status_code == 204
        finally:
            await old.aclose()
            await new.aclose()
        await orchestrator.wait_for(lambda _e: len(orchestrator.of_type("inform")) == 2)
        first, second = orchestrator.of_type("inform")
        dropped = await orchestrator.wait_for(ended(first.session_id))
        assert (dropped.outcome, dropped.reason) == ("dropped", "the CPE started a new session")
        assert (dropped.unanswered_rpc_ids, dropped.unsent_rpc_ids) == ([sent], [])
        # On the bus before the new Inform: the orchestrator settles the old session from the
        # gateway's account of it, as it does for any dropped session.
        assert orchestrator.events.index(dropped) < orchestrator.events.index(second)
        assert (await orchestrator.wait_for(ended(second.session_id))).outcome == "completed"


async def test_an_inform_that_fails_authentication_takes_nothing_over(gateway_settings: Settings) -> None:
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform(PLAN)) as orchestrator, \
            running_gateway(gateway_settings) as url:
        owner = TestCpe(url, "testcpe", PASSWORD)
        anonymous = TestCpe(url)  # with the owner's cookie, but no credentials
        guesser = TestCpe(url, "testcpe", "guess")
        try:
            assert (await owner.post(seed_inform(serial="MINE"))).status_code == 200
            anonymous.client.cookies.set("acs_session", owner.client.cookies.get("acs_session"))
            assert (await anonymous.post(seed_inform(serial="MINE"))).status_code == 401
            assert (await guesser.post(seed_inform(serial="MINE"))).status_code == 401
            method, rpc_id, _ = rpc_of((await owner.post(None)).content)  # the session goes on
            assert method == "GetRPCMethods"
            assert (await owner.post(get_rpc_methods_response(rpc_id))).status_code == 204
        finally:
            for cpe in (owner, anonymous, guesser):
                await cpe.aclose()
        [inform] = orchestrator.of_type("inform")
        assert (await orchestrator.wait_for(ended(inform.session_id))).outcome == "completed"


@pytest.mark.parametrize("notice", ["delivered", "lost"])
async def test_another_instance_takes_the_session_over_and_the_old_one_ends_cleanly(
        gateway_settings: Settings, notice: str) -> None:
    """The CPE comes back through a load balancer to another instance, without its cookie.

    gw-b tells gw-a, which ends its session before gw-b publishes the new Inform; when that
    notice cannot reach gw-a (its advertised address is wrong here), gw-a's sweep ends it.
    """
    settings_a = gateway_settings if notice == "delivered" else \
        gateway_settings.model_copy(update={"gateway_advertise_url": "http://127.0.0.1:9"})
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform(PLAN)) as orchestrator, \
            running_gateway(settings_a, gateway_id="gw-a") as url_a, \
            running_gateway(gateway_settings, gateway_id="gw-b") as url_b:
        old, new = TestCpe(url_a, "testcpe", PASSWORD), TestCpe(url_b, "testcpe", PASSWORD)
        mongo: AsyncMongoClient = AsyncMongoClient(gateway_settings.mongodb_url)
        locks = mongo[gateway_settings.mongodb_database]["gateway_session_locks"]
        try:
            assert (await old.post(seed_inform(serial="MOVED"))).status_code == 200
            _, sent, _ = rpc_of((await old.post(None)).content)
            answer = await new.post(seed_inform(serial="MOVED"))
            assert rpc_of(answer.content)[0] == "InformResponse", answer.text
            await orchestrator.wait_for(lambda _e: len(orchestrator.of_type("inform")) == 2)
            first, second = orchestrator.of_type("inform")
            dropped = await orchestrator.wait_for(ended(first.session_id), within=10)
            assert (dropped.gateway_id, dropped.outcome) == ("gw-a", "dropped")
            assert dropped.unanswered_rpc_ids == [sent]
            if notice == "delivered":  # settled before the new session began, as any drop
                assert orchestrator.events.index(dropped) < orchestrator.events.index(second)
            lock = await locks.find_one({"_id": second.device_id})
            assert lock is not None and (lock["session_id"], lock["gateway_id"]) == (second.session_id, "gw-b")
            # The old CPE connection finds no session on gw-a any more, and nothing is published for it.
            assert (await old.post(get_rpc_methods_response(sent))).status_code == 400
            _, again, _ = rpc_of((await new.post(None)).content)
            assert (await new.post(get_rpc_methods_response(again))).status_code == 204
            assert (await orchestrator.wait_for(ended(second.session_id))).outcome == "completed"
        finally:
            await old.aclose()
            await new.aclose()
            await mongo.close()
        await asyncio.sleep(0.5)
        # Nothing gw-a published names the new session; nothing about the old one but its end.
        from_a = [e for e in orchestrator.events if e.gateway_id == "gw-a"]
        assert {e.session_id for e in from_a} == {first.session_id}
        assert [e.type for e in from_a] == ["inform", "session_ended"]
        assert len(orchestrator.of_type("rpc_response")) == 1  # the new session's answer only
