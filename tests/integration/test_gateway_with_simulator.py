"""The project's simulator, taught what real CPE agents do, against the real gateway.

Real Kafka and MongoDB; the orchestrator side is scripted on the real topics (gateway_harness).
The behaviours are simulator options: a Digest client that resends ``nc=00000001``, a CPE that
drops its TCP connection mid-session and comes back with a new Inform (to the same instance or,
through a load balancer, to another), and a plan the broker delivers twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from cwmp.models import AddObject, GetParameterValues, rpc_to_dict
from services.bus.events import InboundEvent, InformReceived, RpcResponseReceived, SessionEnded, SessionPlan
from services.common.settings import Settings
from simulator.config import FleetSettings
from simulator.fleet import Fleet
from simulator.miniacs import eventually
from tests.integration.gateway_harness import ScriptedOrchestrator, plan_for, plan_on_inform, running_gateway

pytestmark = pytest.mark.integration

PASSWORD = "testcpe-password"
IGD = "InternetGatewayDevice."
PORT_MAPPINGS = IGD + "WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.PortMapping."
GPV = rpc_to_dict(GetParameterValues([IGD + "DeviceInfo.SoftwareVersion"]))
DROPPED = "dropped mid-session (drop_mid_session)"  # as the fleet's metrics count it


@pytest.fixture
def gateway_settings(settings: Settings, kafka_bootstrap: str, mongodb_url: str) -> Settings:
    # A single wrong password throttles an address: anything miscounted as one shows at once.
    return settings.model_copy(update={"cpe_auth": "digest", "cpe_username": "testcpe", "cpe_password": PASSWORD,
                                       "session_plan_timeout": 3.0, "shutdown_grace": 1.0,
                                       "auth_failures_before_throttle": 1})


@contextlib.asynccontextmanager
async def simulated(url: str, **options: Any) -> AsyncIterator[Fleet]:
    settings: dict[str, Any] = {"acs_url": url + "/", "devices": 1, "model": "tr098", "acs_username": "testcpe",
                                "acs_password": PASSWORD, "periodic_interval": 3600, "seed": 1}
    fleet = Fleet(FleetSettings(**{**settings, **options}))
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


@contextlib.asynccontextmanager
async def round_robin(*backends: str) -> AsyncIterator[str]:
    """A TCP load balancer without affinity: each new connection goes to the next backend."""
    targets = [urlsplit(b) for b in backends]
    turn = itertools.count()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = targets[next(turn) % len(targets)]
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


def summary(fleet: Fleet) -> dict[str, Any]:
    return fleet.metrics.summary()


def ended(orchestrator: ScriptedOrchestrator, session_id: str) -> Callable[[InboundEvent], bool]:
    return lambda e: isinstance(e, SessionEnded) and e.session_id == session_id


async def test_a_sloppy_digest_client_completes_every_session(gateway_settings: Settings) -> None:
    """nc=00000001 with the same nonce on the empty POST, the answers and the next Informs."""
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([GPV])) as orchestrator, \
            running_gateway(gateway_settings) as url, \
            simulated(url, digest_reuse_nc=True, periodic_interval=1, jitter=0.0) as fleet:
        await eventually(lambda: summary(fleet)["sessions_ok"] >= 3 or summary(fleet)["sessions_failed"] > 0,
                         seconds=30)
        result = summary(fleet)
    assert result["sessions_failed"] == 0, result["failure_reasons"]
    answers = orchestrator.of_type("rpc_response")
    assert len(answers) >= 3
    assert {e.outcome for e in orchestrator.of_type("session_ended")} == {"completed"}


@pytest.mark.parametrize(("ignore_cookies", "digest_reuse_nc"), [(True, False), (False, True), (True, True)],
                         ids=["new-connection", "cookie-and-sloppy-digest", "new-connection-sloppy-digest"])
async def test_a_cpe_that_drops_mid_session_comes_back_at_once(gateway_settings: Settings, ignore_cookies: bool,
                                                               digest_reuse_nc: bool) -> None:
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([GPV])) as orchestrator, \
            running_gateway(gateway_settings) as url, \
            simulated(url, drop_mid_session=1, ignore_cookies=ignore_cookies,
                      digest_reuse_nc=digest_reuse_nc) as fleet:
        await eventually(lambda: summary(fleet)["sessions_ok"] >= 1, seconds=20)
        result = summary(fleet)
    # Only the simulated drop failed: no 503 "already has a session", no wait for the idle timeout.
    assert result["failure_reasons"] == {DROPPED: 1}
    first, second = orchestrator.of_type("inform")[:2]
    assert second.retry_count == 1  # a CPE whose session failed says so
    dropped = await orchestrator.wait_for(ended(orchestrator, first.session_id))
    assert (dropped.outcome, dropped.reason) == ("dropped", "the CPE started a new session")
    assert dropped.unanswered_rpc_ids == [plan_for(first, [GPV]).rpcs[0].rpc_id]
    assert orchestrator.events.index(dropped) < orchestrator.events.index(second)
    [answer] = orchestrator.of_type("rpc_response")
    assert answer.session_id == second.session_id
    assert (await orchestrator.wait_for(ended(orchestrator, second.session_id))).outcome == "completed"


@pytest.mark.parametrize("ignore_cookies", [True, False], ids=["without-cookie", "with-cookie"])
async def test_a_cpe_that_drops_mid_session_comes_back_through_another_instance(
        gateway_settings: Settings, ignore_cookies: bool) -> None:
    """Without its cookie the other instance takes the lock over and the first ends its session at
    its sweep; with it, the other instance forwards the Inform to the one holding the session."""
    async with ScriptedOrchestrator(gateway_settings, plan_on_inform([GPV])) as orchestrator, \
            running_gateway(gateway_settings, gateway_id="gw-a") as url_a, \
            running_gateway(gateway_settings, gateway_id="gw-b") as url_b, \
            round_robin(url_a, url_b) as balanced, \
            simulated(balanced, drop_mid_session=1, ignore_cookies=ignore_cookies) as fleet:
        await eventually(lambda: summary(fleet)["sessions_ok"] >= 1, seconds=20)
        result = summary(fleet)
        first, second = orchestrator.of_type("inform")[:2]
        dropped = await orchestrator.wait_for(ended(orchestrator, first.session_id), within=10)
    assert result["failure_reasons"] == {DROPPED: 1}
    assert first.gateway_id == "gw-a"
    assert second.gateway_id == ("gw-b" if ignore_cookies else "gw-a")
    assert (dropped.outcome, dropped.gateway_id) == ("dropped", "gw-a")
    assert orchestrator.events.index(dropped) < orchestrator.events.index(second)  # settled first
    assert dropped.unanswered_rpc_ids == [plan_for(first, [GPV]).rpcs[0].rpc_id]
    [answer] = orchestrator.of_type("rpc_response")
    assert answer.session_id == second.session_id
    if ignore_cookies:  # gw-a published nothing about the session gw-b took over
        assert {e.session_id for e in orchestrator.events if e.gateway_id == "gw-a"} == {first.session_id}


async def test_a_plan_delivered_twice_runs_its_rpcs_once(gateway_settings: Settings) -> None:
    """Every plan goes onto the gateway's reply partition twice, as a redelivered event's would."""
    add = rpc_to_dict(AddObject(object_name=PORT_MAPPINGS, parameter_key="twice"))

    def planner(event: InboundEvent) -> SessionPlan | None:
        if isinstance(event, InformReceived):
            return plan_for(event, [add], more=True)
        if isinstance(event, RpcResponseReceived) and event.method == "AddObjectResponse":
            plan = plan_for(event, [GPV])
            return plan.model_copy(update={"rpcs": [p.model_copy(update={"rpc_id": "then-gpv"}) for p in plan.rpcs]})
        return None

    async with ScriptedOrchestrator(gateway_settings, planner, repeat=2) as orchestrator, \
            running_gateway(gateway_settings) as url, simulated(url) as fleet:
        await eventually(lambda: summary(fleet)["sessions_ok"] >= 1, seconds=20)
        result = summary(fleet)
        device = fleet.device_by_index(0)
        assert device is not None
        entries = device.values([IGD + "WANDevice.1.WANConnectionDevice.1.WANIPConnection.1."
                                       "PortMappingNumberOfEntries"])
    assert result["rpcs"] == {"AddObject": 1, "GetParameterValues": 1}
    assert entries[0].value.value == "1"  # one port mapping, not two
    assert [e.method for e in orchestrator.of_type("rpc_response")] == ["AddObjectResponse",
                                                                        "GetParameterValuesResponse"]
    [inform] = orchestrator.of_type("inform")
    end = await orchestrator.wait_for(ended(orchestrator, inform.session_id))
    assert (end.outcome, end.unsent_rpc_ids) == ("completed", [])
