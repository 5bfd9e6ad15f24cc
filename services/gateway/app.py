"""The gateway process's ASGI application: CWMP on POST, health probes on GET (metrics: admin.py).

Start-up connects the Kafka producer, MongoDB (session locks, per-device credentials) and the
reply channel; shutdown refuses new sessions, lets the ones in progress finish, and flushes the
producer so that nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import zlib
from typing import Any

import httpx
from aiokafka.errors import MessageSizeTooLargeError
from pydantic import BaseModel
from pymongo import AsyncMongoClient

from services.bus.events import TOPIC_INBOUND, TOPIC_REPLIES, encode
from services.bus.kafka import BusCheck, make_producer, topic_name
from services.common import workdue
from services.common.quirks import QuirksCache
from services.common.settings import Settings
from services.common.workdue import DueReader
from services.gateway import metrics
from services.gateway.auth import CpeAuthenticator
from services.gateway.core import EventTooLarge, Gateway, GatewayDeps
from services.gateway.http import (
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    CwmpRequest,
    HttpAnswer,
    Receive,
    Scope,
    Send,
    plain,
    read_body,
    request_headers,
    send_answer,
)
from services.gateway.locks import Holder, SessionLocks
from services.gateway.ownership import FORWARDED_HEADER, TAKEN_OVER_HEADER, taken_over_value
from services.gateway.replies import ReplyChannel

log = logging.getLogger(__name__)

HOP_BY_HOP = {"host", "connection", "keep-alive", "content-length", "transfer-encoding", "te", "upgrade",
              "content-encoding"}  # the body was inflated already
FORWARDED_RESPONSE_HEADERS = {"content-type", "set-cookie", "www-authenticate", "retry-after"}
# A take-over notice waits at most this long: the new Inform waits for it.
TAKE_OVER_NOTICE_TIMEOUT = 2.0
# The largest event the gateway publishes: below the producer's max_request_size and the
# broker's message.max.bytes (both about 1 MiB by default), with room for the record overhead.
MAX_EVENT_BYTES = 1_000_000



def advertise_url(settings: Settings) -> str:
    """How other gateway instances reach this one: the setting, else this host's address."""
    if settings.gateway_advertise_url:
        return settings.gateway_advertise_url.rstrip("/")
    host = settings.bind_host
    if host in {"0.0.0.0", "::", ""}:
        host = socket.gethostbyname(socket.gethostname())
    return f"http://{host}:{settings.gateway_port}"


def default_gateway_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class GatewayApp:
    """ASGI entry point; everything stateful is created in the lifespan start-up."""

    def __init__(self, settings: Settings, gateway_id: str | None = None) -> None:
        self.settings = settings
        self.gateway_id = gateway_id or default_gateway_id()
        self.gateway: Gateway | None = None
        self._mongo: AsyncMongoClient | None = None
        self._locks: SessionLocks | None = None
        self._work_due: DueReader | None = None
        self._quirks: QuirksCache | None = None
        self._http_client: httpx.AsyncClient | None = None
        self._producer: Any = None
        self._replies: ReplyChannel | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._bus = BusCheck(settings, [TOPIC_INBOUND, TOPIC_REPLIES])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    # --- lifespan --------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        settings = self.settings
        self._mongo = AsyncMongoClient(settings.mongodb_url, serverSelectionTimeoutMS=5000)
        db = self._mongo[settings.mongodb_database]
        locks = SessionLocks(db["gateway_session_locks"])
        await locks.ensure_indexes()
        self._locks = locks
        self._work_due = DueReader(workdue.collection(db)) if settings.work_due_marker else None
        # The per-vendor quirks, in memory, refreshed when the table changes (docs/quirks.md).
        self._quirks = QuirksCache(db, settings.quirks_refresh_seconds)
        await self._quirks.start()
        self._producer = make_producer(settings)
        await self._producer.start()
        from services.inventory import credentials

        async def ha1_source(username: str, algorithm: str) -> str | None:
            return await credentials.lookup_ha1(db, username, algorithm, settings.cpe_realm)

        async def candidates(username: str, algorithm: str) -> tuple[str | None, list[str]]:
            return await credentials.lookup_candidates(db, username, algorithm, settings.cpe_realm)

        async def has_own(device_id: str) -> bool:
            return await credentials.has_own_credentials(db, device_id)

        authenticator = CpeAuthenticator(settings, ha1_source, candidates=candidates, has_own_credentials=has_own)
        gateway = Gateway(GatewayDeps(
            settings=settings, gateway_id=self.gateway_id, publish=self._publish, locks=locks,
            authenticator=authenticator, reply_to=lambda: replies.reply_to,
            advertise_url=advertise_url(settings), notify_taken_over=self._notify_taken_over,
            work_due=self._work_due, quirks=self._quirks))
        self._http_client = httpx.AsyncClient(timeout=httpx.Timeout(settings.session_plan_timeout + 10))
        replies = ReplyChannel(settings, self.gateway_id, gateway.deliver_plan)
        await replies.start()
        self._replies = replies
        self.gateway = gateway
        self._sweeper = asyncio.create_task(self._sweep(), name="idle-session-sweeper")
        log.info("gateway ready", extra={"gateway_id": self.gateway_id, "reply_to": replies.reply_to})

    async def shutdown(self) -> None:
        if self.gateway is not None:
            await self.gateway.drain(self.settings.shutdown_grace)
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._replies is not None:
            await self._replies.stop()
        if self._producer is not None:
            await self._producer.stop()  # flushes what is still buffered
        if self._locks is not None:
            await self._locks.close()
        if self._work_due is not None:
            await self._work_due.close()
        if self._quirks is not None:
            await self._quirks.close()
        if self._http_client is not None:
            await self._http_client.aclose()
        if self._mongo is not None:
            await self._mongo.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            if self.gateway is not None:
                try:
                    await self.gateway.expire_idle()
                    await self.gateway.end_taken_over()
                except Exception:
                    log.exception("expiring idle sessions failed")

    async def _publish(self, topic: str, key: str, event: BaseModel) -> None:
        data = encode(event)
        if len(data) > MAX_EVENT_BYTES:
            raise EventTooLarge(len(data), MAX_EVENT_BYTES)
        try:
            await self._producer.send_and_wait(topic_name(self.settings, topic), data, key=key.encode())
        except MessageSizeTooLargeError:  # a broker configured with a smaller limit
            raise EventTooLarge(len(data), MAX_EVENT_BYTES) from None

    # --- HTTP ------------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        path = scope["path"]
        if method == "GET":
            await self._get(path, send)
            return
        if method != "POST":
            await send_answer(send, plain(405, "CWMP needs POST", headers=[("allow", "POST")]))
            return
        if self.gateway is None:
            await send_answer(send, plain(503, "starting", headers=[("retry-after", "5")]))
            return
        headers = request_headers(scope)
        try:
            body = await read_body(receive, headers, self.settings.max_body_bytes,
                                   self.settings.request_body_timeout)
        except BodyTooLarge:
            metrics.REJECTED.labels("413", "body too large").inc()
            await send_answer(send, plain(413, f"body larger than {self.settings.max_body_bytes} bytes",
                                          close=True))
            return
        except BodyTimeout:
            metrics.REJECTED.labels("408", "slow body").inc()
            await send_answer(send, plain(408, "request body too slow", close=True))
            return
        except ClientGone:
            return
        except zlib.error:  # a corrupt compressed body
            await send_answer(send, plain(400, "undecodable Content-Encoding", close=True))
            return
        query = scope.get("query_string", b"").decode("latin-1")
        raw_path = scope.get("raw_path") or path.encode()
        target = raw_path.decode("latin-1") + (f"?{query}" if query else "")
        client = scope.get("client") or ("", 0)
        request = CwmpRequest(method, path, target, headers, body, (client[0], client[1]),
                              scope.get("scheme") == "https")
        try:
            if notice := headers.get(TAKEN_OVER_HEADER):
                await send_answer(send, await self.gateway.taken_over(notice))
                return
            owner = self.gateway.owner_elsewhere(request)
            answer = await self._forward(request, *owner) if owner else None
            if answer is None:
                answer = await self.gateway.handle(request)
        except Exception:
            log.exception("unexpected error handling a CWMP request")
            answer = plain(500, "internal error", close=True)
        await send_answer(send, answer)

    async def _forward(self, request: CwmpRequest, owner_url: str, mark: str) -> HttpAnswer | None:
        """Hand a request to the instance holding its session; None when that instance is gone."""
        assert self._http_client is not None
        headers = {k: v for k, v in request.headers.items() if k not in HOP_BY_HOP}
        headers[FORWARDED_HEADER] = mark
        try:
            response = await self._http_client.post(owner_url.rstrip("/") + request.target,
                                                     content=request.body, headers=headers)
        except httpx.HTTPError as exc:
            # Its session died with it; answered here, the CPE learns it must start over.
            log.warning("session owner unreachable", extra={"owner": owner_url, "error": repr(exc)})
            return None
        kept = [(k, v) for k, v in response.headers.items() if k in FORWARDED_RESPONSE_HEADERS]
        return HttpAnswer(response.status_code, response.content, kept,
                          close=response.headers.get("connection", "").lower() == "close")

    async def _notify_taken_over(self, previous: Holder) -> None:
        """Tell the instance holding ``previous`` to end it now (else its sweep does, later)."""
        if not previous.owner_url or self._http_client is None:
            return
        headers = {TAKEN_OVER_HEADER: taken_over_value(previous.session_id, self.settings.secret_key)}
        try:
            response = await self._http_client.post(previous.owner_url.rstrip("/") + "/", headers=headers,
                                                     timeout=TAKE_OVER_NOTICE_TIMEOUT)
            if response.status_code != 204:
                log.warning("take-over notice refused", extra={"owner": previous.owner_url,
                                                               "status": response.status_code})
        except httpx.HTTPError as exc:
            log.warning("take-over notice not delivered; the owner's sweep ends the session",
                        extra={"owner": previous.owner_url, "error": repr(exc)})

    async def _get(self, path: str, send: Send) -> None:
        # The CPE-facing port: CWMP and the two bare probes, nothing else. /metrics is on the
        # admin port only (admin.py).
        if path == "/healthz":
            await send_answer(send, plain(200, "ok"))
        elif path == "/readyz":
            ready = await self.ready()
            await send_answer(send, plain(200 if ready else 503, "ready" if ready else "not ready"))
        else:
            await send_answer(send, plain(405, "CWMP needs POST", headers=[("allow", "POST")]))

    async def ready(self) -> bool:
        return self.gateway is not None and not self.gateway.draining and await self._dependencies_ok()

    async def _dependencies_ok(self) -> bool:
        """MongoDB answers, and the bus path works: the broker answers, the session topics exist
        and the reply channel reads its partitions."""
        assert self._mongo is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._mongo.admin.command("ping"), 2.0)
            return self._replies is not None and self._replies.healthy() and await self._bus()
        return False
