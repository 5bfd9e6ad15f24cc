"""A small XMPP client (RFC 6120 c2s) for connection requests (TR-069 Annex K), on asyncio.

Enough XMPP for Annex K and no more: open a stream, optionally register the account in-band
(XEP-0077, for the local server of ``acs up``), authenticate with SASL PLAIN, bind a resource,
send presence, then exchange ``iq`` stanzas: :meth:`XmppClient.request` sends one and waits for
the answer with the same id; ``on_iq`` handles the ones that come in. Used by the orchestrator
(the ACS side) and by the simulator's XMPP mode (the CPE side). No TLS: meant for a server on a
trusted network (docs/deploy.md). Passwords never reach a log line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

log = logging.getLogger(__name__)

STREAM_NS = "http://etherx.jabber.org/streams"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
REGISTER_NS = "jabber:iq:register"
CLIENT_NS = "jabber:client"

IqHandler = Callable[["XmppClient", ET.Element], Awaitable[None]]


class XmppError(Exception):
    """The server refused us, the stream broke, or an answer did not come in time."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class XmppClient:
    def __init__(self, jid: str, password: str, host: str, port: int, *, resource: str = "acs",
                 register: bool = False, on_iq: IqHandler | None = None, timeout: float = 5.0) -> None:
        self.local, _, self.domain = jid.partition("@")
        self.domain = self.domain.split("/", 1)[0]
        if not self.local or not self.domain:
            raise ValueError(f"{jid!r} is not a bare JID (user@domain)")
        self.password, self.host, self.port = password, host, port
        self.resource, self.register, self.on_iq, self.timeout = resource, register, on_iq, timeout
        self.full_jid = ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser: ET.XMLPullParser | None = None
        self._depth = 0
        self._stanzas: asyncio.Queue[ET.Element | None] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[ET.Element]] = {}
        self._ids = itertools.count(1)
        self._pump: asyncio.Task[None] | None = None
        self._dispatch: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self._dispatch is not None and not self._dispatch.done() and bool(self.full_jid)

    # --- connection ----------------------------------------------------------------------------

    async def connect(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                self._pump = asyncio.create_task(self._read_loop())
                features = await self._open_stream()
                if self.register:
                    await self._register()
                await self._authenticate(features)
                features = await self._open_stream()
                await self._bind(features)
        except (OSError, TimeoutError) as exc:
            await self.close()
            raise XmppError(f"cannot reach the XMPP server {self.host}:{self.port} ({type(exc).__name__})") from None
        except XmppError:
            await self.close()
            raise
        self._dispatch = asyncio.create_task(self._dispatch_loop())
        self._write(b"<presence/>")

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.write(b"</stream:stream>")
                self._writer.close()
        for task in (self._pump, self._dispatch, *self._handlers):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(XmppError("the XMPP stream closed"))
        self._pending.clear()
        self.full_jid = ""
        self._writer = self._reader = None

    def _write(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise XmppError("not connected to the XMPP server")
        self._writer.write(data)

    async def _open_stream(self) -> ET.Element:
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._write(f"<?xml version='1.0'?><stream:stream to={quoteattr(self.domain)} version='1.0' "
                    f"xmlns='{CLIENT_NS}' xmlns:stream='{STREAM_NS}'>".encode())
        features = await self._next()
        if _local(features.tag) != "features":
            raise XmppError(f"expected stream features, got {_local(features.tag)}")
        return features

    async def _next(self) -> ET.Element:
        stanza = await self._stanzas.get()
        if stanza is None:
            raise XmppError("the XMPP server closed the stream")
        if _local(stanza.tag) == "error" and stanza.tag.startswith(f"{{{STREAM_NS}}}"):
            condition = _local(stanza[0].tag) if len(stanza) else "undefined"
            raise XmppError(f"stream error: {condition}")
        return stanza

    async def _register(self) -> None:
        self._write(f"<iq type='set' id='reg1'><query xmlns='{REGISTER_NS}'><username>{escape(self.local)}"
                    f"</username><password>{escape(self.password)}</password></query></iq>".encode())
        answer = await self._next()
        if answer.get("type") == "error":
            error = next((e for e in answer if _local(e.tag) == "error"), None)
            condition = _local(error[0].tag) if error is not None and len(error) else "undefined"
            if condition != "conflict":  # conflict: the account exists already
                raise XmppError(f"in-band registration refused: {condition}")

    async def _authenticate(self, features: ET.Element) -> None:
        mechanisms = features.find(f"{{{SASL_NS}}}mechanisms")
        offered = {m.text for m in mechanisms} if mechanisms is not None else set()
        if "PLAIN" not in offered:
            raise XmppError(f"the server offers no SASL PLAIN (offers {sorted(m for m in offered if m)})")
        token = base64.b64encode(f"\0{self.local}\0{self.password}".encode()).decode()
        self._write(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{token}</auth>".encode())
        answer = await self._next()
        if _local(answer.tag) != "success":
            condition = _local(answer[0].tag) if len(answer) else "failure"
            raise XmppError(f"XMPP authentication failed: {condition}")

    async def _bind(self, features: ET.Element) -> None:
        if features.find(f"{{{BIND_NS}}}bind") is None:
            raise XmppError("the server offers no resource binding")
        self._write(f"<iq type='set' id='bind1'><bind xmlns='{BIND_NS}'><resource>{escape(self.resource)}"
                    "</resource></bind></iq>".encode())
        answer = await self._next()
        jid = answer.find(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid")
        if answer.get("type") != "result" or jid is None or not jid.text:
            raise XmppError("resource binding failed")
        self.full_jid = jid.text

    # --- reading -------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while data := await self._reader.read(65536):
                assert self._parser is not None
                self._parser.feed(data)
                for event, element in self._parser.read_events():
                    if event == "start":
                        self._depth += 1
                    else:
                        self._depth -= 1
                        if self._depth == 1:  # a whole stanza or top-level element
                            await self._stanzas.put(element)
        except (OSError, ET.ParseError) as exc:
            log.warning("XMPP stream broken", extra={"error": type(exc).__name__, "jid": self.local})
        finally:
            await self._stanzas.put(None)

    async def _dispatch_loop(self) -> None:
        while (stanza := await self._stanzas.get()) is not None:
            if _local(stanza.tag) != "iq":
                continue
            kind, iq_id = stanza.get("type"), stanza.get("id", "")
            if kind in ("result", "error"):
                future = self._pending.pop(iq_id, None)
                if future is not None and not future.done():
                    future.set_result(stanza)
            elif self.on_iq is not None:
                task = asyncio.create_task(self.on_iq(self, stanza))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
        self.full_jid = ""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(XmppError("the XMPP stream closed"))
        self._pending.clear()

    # --- iq ------------------------------------------------------------------------------------

    def new_id(self) -> str:
        return f"{self.resource}-{next(self._ids)}"

    async def request(self, iq_id: str, stanza: bytes) -> ET.Element:
        """Send an iq (built with ``iq_id``) and wait up to ``self.timeout`` for its result or error."""
        if not self.connected:
            raise XmppError("not connected to the XMPP server")
        future: asyncio.Future[ET.Element] = asyncio.get_running_loop().create_future()
        self._pending[iq_id] = future
        try:
            self._write(stanza)
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            raise XmppError("no answer to the iq in time") from None
        finally:
            self._pending.pop(iq_id, None)

    def send(self, stanza: bytes) -> None:
        self._write(stanza)
