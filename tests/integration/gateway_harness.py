"""A gateway process-in-the-test, a scripted orchestrator on the real broker, and a test CPE.

The gateway runs under uvicorn on a free loopback port exactly as `acs gateway` runs it. The
scripted orchestrator consumes the real ``cwmp.inbound`` topic, records every event (so tests
can prove nothing accepted was lost) and answers Informs with the plan a test gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from acs.infra import free_port
from cwmp.digest import DigestClient
from services.bus.events import (
    TOPIC_INBOUND,
    TOPIC_REPLIES,
    InboundEvent,
    InformReceived,
    PlannedRpc,
    RpcFaultReceived,
    RpcResponseReceived,
    SessionPlan,
    decode_inbound,
    encode,
)
from services.bus.kafka import ensure_topics, make_consumer, make_producer, topic_name
from services.common.service import with_trusted_proxies
from services.common.settings import Settings
from services.gateway.app import GatewayApp
from services.gateway.protocol import with_header_timeout

Planner = Callable[[InboundEvent], SessionPlan | None]



@contextlib.asynccontextmanager
async def running_gateway(settings: Settings, gateway_id: str = "gw-test") -> AsyncIterator[str]:
    await ensure_topics(settings)
    port = free_port()
    # The instance advertises its own address to the others (session forwarding).
    settings = settings.model_copy(update={"gateway_port": port})
    app = GatewayApp(settings, gateway_id=gateway_id)
    protocol = with_header_timeout(settings.request_header_timeout)
    # As serve() runs it: uvicorn's proxy handling off, ACS_TRUSTED_PROXIES applied.
    server = uvicorn.Server(uvicorn.Config(with_trusted_proxies(app, settings), host="127.0.0.1", port=port,
                                           log_config=None, lifespan="on", timeout_keep_alive=30, http=protocol,
                                           proxy_headers=False))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("gateway did not start")
            await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 40)


@dataclass
class ScriptedOrchestrator:
    """Answers every Inform (and every last response of a ``more`` plan) with ``planner``."""

    settings: Settings
    planner: Planner
    # Publish every plan this many times, as a redelivered event answered again would.
    repeat: int = 1
    events: list[InboundEvent] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ScriptedOrchestrator:
        await ensure_topics(self.settings)
        self.consumer = make_consumer(self.settings, TOPIC_INBOUND, group_id=f"{self.settings.kafka_topic_prefix}o",
                                      session_timeout_ms=2000, heartbeat_interval_ms=500)
        self.producer = make_producer(self.settings)
        await self.consumer.start()
        await self.producer.start()
        # Wait until the group has assigned us the partitions, so no Inform is missed.
        async with asyncio.timeout(30):
            while not self.consumer.assignment():
                await self.consumer.getmany(timeout_ms=100)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()
        await self.producer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    event = decode_inbound(record.value)
                    self.events.append(event)
                    plan = self.planner(event)
                    if plan is not None:
                        _, partition = event.reply_to.rsplit(":", 1)
                        for _ in range(self.repeat):
                            await self.producer.send_and_wait(topic_name(self.settings, TOPIC_REPLIES),
                                                              encode(plan), partition=int(partition))

    async def wait_for(self, predicate: Callable[[InboundEvent], bool], within: float = 15) -> InboundEvent:
        async with asyncio.timeout(within):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                await asyncio.sleep(0.02)

    def of_type(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.type == kind]


def plan_for(event: InboundEvent, rpcs: list[dict[str, Any]], more: bool = False) -> SessionPlan:
    return SessionPlan(device_id=event.device_id, session_id=event.session_id, gateway_id=event.gateway_id,
                       in_reply_to=event.event_id, more=more,
                       rpcs=[PlannedRpc(rpc_id=f"{event.session_id[:8]}-{i}", rpc=rpc)
                             for i, rpc in enumerate(rpcs)])


def plan_on_inform(rpcs: list[dict[str, Any]]) -> Planner:
    def planner(event: InboundEvent) -> SessionPlan | None:
        if isinstance(event, InformReceived):
            return plan_for(event, rpcs)
        return None

    return planner


def is_answer(event: InboundEvent) -> bool:
    return isinstance(event, RpcResponseReceived | RpcFaultReceived)


class TestCpe:
    """Just enough of a CPE's HTTP behaviour: one keep-alive connection, Digest on demand."""

    __test__ = False  # not a pytest test class

    def __init__(self, base_url: str, username: str = "", password: str = "",
                 keep_cookies: bool = True) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=30,
                                        limits=httpx.Limits(max_connections=1))
        self.digest = DigestClient(username, password) if username else None
        self.keep_cookies = keep_cookies

    async def post(self, body: bytes | str | None, *, headers: dict[str, str] | None = None,
                   authenticate: bool = True) -> httpx.Response:
        content = body.encode() if isinstance(body, str) else (body or b"")
        sent_headers = {"content-type": "text/xml; charset=utf-8"} if content else {}
        sent_headers.update(headers or {})
        if not self.keep_cookies:
            self.client.cookies.clear()
        if self.digest is not None and self.digest.challenge is not None and authenticate:
            sent_headers["authorization"] = self.digest.authorization("POST", "/")
        response = await self.client.post("/", content=content, headers=sent_headers)
        if response.status_code == 401 and self.digest is not None and authenticate:
            sent_headers["authorization"] = self.digest.authorization(
                "POST", "/", response.headers.get("www-authenticate"))
            if not self.keep_cookies:
                self.client.cookies.clear()
            response = await self.client.post("/", content=content, headers=sent_headers)
        return response

    async def aclose(self) -> None:
        await self.client.aclose()
