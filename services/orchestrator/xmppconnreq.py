"""XMPP connection requests (TR-069 Annex K), the ACS side: one XMPP login per orchestrator
instance, a connectionRequest iq per wake-up.

The client logs in on first use and again after the stream broke, at most once per
``RECONNECT_SECONDS``, so that a down XMPP server costs a wake-up no time beyond its first try;
the caller then falls back to HTTP (services/orchestrator/connreq.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from cwmp import xmpp
from services.common.settings import Settings
from services.common.xmppclient import XmppClient, XmppError
from services.orchestrator.connreq import ConnectionRequestResult

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 5.0


class XmppRequester:
    def __init__(self, server: str, jid: str, password: str, *, register: bool = False,
                 answer_within: float = 5.0) -> None:
        host, _, port = server.rpartition(":")
        self.client = XmppClient(jid, password, host or "127.0.0.1", int(port), resource="acs",
                                 register=register, timeout=answer_within)
        self._lock = asyncio.Lock()
        self._last_try = -float("inf")
        self.last_error = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> XmppRequester | None:
        if not (settings.xmpp_server and settings.xmpp_jid):
            return None
        return cls(settings.xmpp_server, settings.xmpp_jid, settings.xmpp_password, register=settings.xmpp_register)

    async def _ready(self) -> bool:
        if self.client.connected:
            return True
        async with self._lock:
            if self.client.connected:
                return True
            if time.monotonic() - self._last_try < RECONNECT_SECONDS:
                return False
            self._last_try = time.monotonic()
            try:
                await self.client.connect()
                log.info("logged in to the XMPP server", extra={"jid": self.client.full_jid})
                self.last_error = ""
                return True
            except XmppError as exc:
                self.last_error = str(exc)
                log.warning("XMPP login failed", extra={"error": self.last_error})
                return False

    async def request(self, jid: str, username: str, password: str) -> ConnectionRequestResult:
        if not await self._ready():
            return ConnectionRequestResult("unreachable", "xmpp", f"XMPP server unavailable: {self.last_error}")
        iq_id = self.client.new_id()
        try:
            answer = await self.client.request(iq_id, xmpp.build_connection_request(iq_id, jid, username, password))
        except XmppError as exc:
            timeout = "in time" in str(exc)
            return ConnectionRequestResult("timeout" if timeout else "unreachable", "xmpp", str(exc))
        condition = xmpp.read_error_condition(answer)
        if condition is None:
            return ConnectionRequestResult("ok", "xmpp", "the CPE accepted the XMPP connection request")
        outcome = {"not-authorized": "auth_failed", "service-unavailable": "busy"}.get(condition)
        if outcome is None:
            # recipient-unavailable, item-not-found...: the CPE is not online on XMPP.
            return ConnectionRequestResult("unreachable", "xmpp", f"XMPP error: {condition}")
        return ConnectionRequestResult(outcome, "xmpp", f"XMPP error: {condition}")  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.client.close()
