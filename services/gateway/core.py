"""The gateway's request handling: one CWMP HTTP request in, one HTTP answer out.

Every message from a CPE is published to ``cwmp.inbound`` and acknowledged by the broker
(acks=all) before the CPE gets the answer that lets it forget the message: an acknowledged
Inform or TransferComplete is never lost. What to send next comes from the orchestrator's plan
(``cwmp.replies``); when it does not come in time the session ends cleanly with 204 and the work
waits for the next session.

Authentication happens once per session, on its Inform. Later requests belong to the session by
its cookie (or, for CPEs that ignore cookies, its TCP connection), which already proves who they
are: an ``Authorization`` header on them is checked, and a wrong password ends the session, but a
stale nonce or a reused nonce count is accepted (sloppy Digest clients re-send ``nc=00000001``).

A new authenticated Inform of a device takes over the device's session wherever it lives: the old
one ends as ``dropped`` and its end is published before the new Inform, so the orchestrator
settles it exactly as any drop. Held by another instance, that instance is told (a signed notice)
and ends it before this one goes on; should the notice fail, that instance finds at its next sweep
that the lock is no longer its session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel
from pymongo.errors import PyMongoError

from cwmp.codec import MalformedEnvelope, UnknownMethod, parse_envelope
from cwmp.faults import AcsFault, CwmpFault
from cwmp.httputil import (
    format_set_cookie,
    is_empty_body,
    make_device_id,
    parse_cookie_header,
)
from cwmp.models import Inform, InformResponse, rpc_from_dict, rpc_to_dict
from cwmp.session import (
    AcsSession,
    CpeProtocolError,
    EmptyPostReceived,
    FaultReceived,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    SessionError,
    UnknownMethodReceived,
    VersionIncompatible,
    default_response,
)
from cwmp.session import InformReceived as InformArrived
from cwmp.values import BooleanLiteral
from services.bus.events import (
    TOPIC_INBOUND,
    CpeRequestReceived,
    DeviceIdentity,
    InformEventCode,
    InformReceived,
    ParameterValue,
    RpcFaultReceived,
    RpcResponseReceived,
    SessionEnded,
    SessionPlan,
    SetParameterValuesFaultEntry,
)
from services.common.quirks import NO_QUIRKS, NameCase, Quirks, QuirksCache, software_version_of
from services.common.settings import Settings
from services.common.workdue import ROUTINE_EVENTS, DueReader, DueState, inform_fingerprint
from services.gateway import metrics
from services.gateway.admission import Admission
from services.gateway.auth import CpeAuthenticator
from services.gateway.http import CwmpRequest, HttpAnswer, plain
from services.gateway.locks import Holder, SessionLocks
from services.gateway.ownership import (
    FORWARDED_HEADER,
    SessionCookie,
    forward_mark,
    is_forwarded,
    make_cookie_value,
    parse_cookie_value,
    parse_taken_over,
)
from services.gateway.sessions import GatewaySession, new_session_id
from services.gateway.throttle import AuthThrottle

log = logging.getLogger(__name__)

COOKIE_NAME = "acs_session"
XML_CONTENT_TYPE = "text/xml; charset=utf-8"

Publish = Callable[[str, str, BaseModel], Awaitable[None]]


class PublishFailed(Exception):
    """The broker did not acknowledge in time: the CPE must not be told its message was taken."""


class EventTooLarge(Exception):
    """The event would exceed what the bus takes in one message: no retry can succeed, so the
    CPE gets a 413 at once (not 503 + Retry-After, which it would obey forever)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"event of {size} bytes exceeds the bus limit of {limit} bytes")
        self.size = size
        self.limit = limit


# The longest excerpt of a CPE-chosen text (a device id) put in a log line.
LOG_EXCERPT = 128


def excerpt(text: str) -> str:
    return text if len(text) <= LOG_EXCERPT else f"{text[:LOG_EXCERPT]}... ({len(text)} characters)"


@dataclass
class GatewayDeps:
    settings: Settings
    gateway_id: str
    publish: Publish
    locks: SessionLocks
    authenticator: CpeAuthenticator
    reply_to: Callable[[], str]
    # Where other gateway instances reach this one (carried, signed, in the session cookie).
    advertise_url: str
    # Tells the instance holding a session that a newer one took it over (best effort, bounded).
    notify_taken_over: Callable[[Holder], Awaitable[None]] | None = None
    # The orchestrator's per-device "work due" marker (services/common/workdue.py); None: off.
    work_due: DueReader | None = None
    # The per-vendor quirks table (services/common/quirks.py, docs/quirks.md); None: no quirks.
    quirks: QuirksCache | None = None


class Gateway:
    def __init__(self, deps: GatewayDeps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.throttle = AuthThrottle(self.settings.auth_failures_before_throttle,
                                     self.settings.auth_throttle_seconds,
                                     max_per_address=self.settings.auth_failures_per_address)
        self.sessions: dict[str, GatewaySession] = {}
        self.by_connection: dict[str, str] = {}
        # Sessions of CPEs with the quirk session_binding=address: remote address -> session id.
        self.by_address: dict[str, str] = {}
        self.draining = False
        self._background: set[asyncio.Task[None]] = set()
        # The last cookie value checked and what it gave: a request asks for its cookie twice (is
        # its session elsewhere? which session is it?), and the HMAC is checked once. The same
        # value always gives the same answer, so one entry is enough and never stale.
        self._last_cookie: tuple[str, SessionCookie] | None = None
        bound = self.settings.admission_latency_bound
        retry = self.settings.admission_retry_after
        self.admission = Admission(bound, retry_after=(max(1, retry // 2), retry + retry // 2)) if bound > 0 else None
        self._lag_watch: asyncio.Task[None] | None = None
        self._in_progress: dict[int, float] = {}  # requests being handled: id -> when they arrived

    # --- entry point ---------------------------------------------------------------------------

    async def handle(self, request: CwmpRequest) -> HttpAnswer:
        if self.admission is None:
            return await self._handle(request)
        started = time.monotonic()
        key = id(request)
        self._in_progress[key] = started
        try:
            answer = await self._handle(request)
        finally:
            del self._in_progress[key]
        if answer.status != 503:  # a refusal is no sample of what an admitted session meets
            now = time.monotonic()
            self.admission.answered(now, now - started)
        return answer

    async def _handle(self, request: CwmpRequest) -> HttpAnswer:
        session = self._find_session(request)
        if session is None:
            return await self._start_session(request)
        async with session.lock:
            if session.session_id not in self.sessions:  # ended while we waited for the lock
                return await self._start_session(request)
            return await self._continue_session(session, request)

    def deliver_plan(self, plan: SessionPlan) -> None:
        session = self.sessions.get(plan.session_id)
        if session is None:
            log.debug("plan for a session that is gone", extra={"session_id": plan.session_id})
            return
        if not session.receive_plan(plan):
            log.info("duplicate plan ignored", extra={"session_id": plan.session_id,
                                                      "in_reply_to": plan.in_reply_to})

    def _find_session(self, request: CwmpRequest) -> GatewaySession | None:
        if cookie := self._cookie(request):
            if session := self.sessions.get(cookie.session_id):
                return session
        # CPEs that ignore cookies (genieacs#82, cwmp-sim) stay on their TCP connection.
        if session_id := self.by_connection.get(request.connection_key):
            return self.sessions.get(session_id)
        # CPEs that also open a new connection per request (quirk session_binding=address).
        if session_id := self.by_address.get(request.client[0]):
            return self.sessions.get(session_id)
        return None

    def owner_elsewhere(self, request: CwmpRequest) -> tuple[str, str] | None:
        """(owner URL, forward mark) when the request belongs to a session another instance holds."""
        cookie = self._cookie(request)
        if (cookie is None or cookie.owner_url is None or cookie.owner_url == self.deps.advertise_url
                or cookie.session_id in self.sessions):
            return None
        secret = self.settings.secret_key
        if is_forwarded(request.headers.get(FORWARDED_HEADER), cookie.session_id, secret):
            return None  # forwarded to us already: answer here, never bounce it on
        return cookie.owner_url, forward_mark(cookie.session_id, secret)

    def _cookie(self, request: CwmpRequest) -> SessionCookie | None:
        header = request.headers.get("cookie")
        if not header:
            return None
        value = parse_cookie_header(header).get(COOKIE_NAME)
        if not value:
            return None
        if self._last_cookie is not None and self._last_cookie[0] == value:
            return self._last_cookie[1]
        cookie = parse_cookie_value(value, self.settings.secret_key)
        self._last_cookie = (value, cookie)
        return cookie

    # --- a new session: the Inform ---------------------------------------------------------------

    async def _start_session(self, request: CwmpRequest) -> HttpAnswer:
        address = request.client[0]
        if self.draining:
            return self._reject(503, "shutting down", retry_after=10)
        if self.admission is not None:
            if self._lag_watch is None or self._lag_watch.done():
                self._lag_watch = asyncio.create_task(self._watch_loop_lag(), name="loop-lag")
            if not self.admission.admit(time.monotonic(), self._in_progress.values):
                return self._reject(503, "gateway overloaded", retry_after=self.admission.retry_after())
        authorization = request.headers.get("authorization")
        claimed = self.deps.authenticator.claimed_username(authorization)
        if wait := self.throttle.retry_after(claimed, address):
            return self._reject(503, "too many authentication failures", retry_after=wait)
        if is_empty_body(request.body):
            return self._reject(400, "no session: the first message must be an Inform", close=True)
        try:
            auth = await self.deps.authenticator.authenticate("POST", request.target,
                                                              authorization, request.tls)
        except PyMongoError as exc:
            log.warning("CPE credential store unavailable", extra={"remote": address, "error": repr(exc)})
            return self._reject(503, "credential store unavailable", retry_after=30)
        if not auth.ok:
            if auth.wrong_credentials:
                self.throttle.failed(auth.username or claimed, address)
                metrics.AUTH_FAILURES.labels(self.settings.cpe_auth).inc()
                log.info("CPE authentication failed", extra={"remote": address, "reason": excerpt(auth.reason),
                                                             "username": excerpt(auth.username or "")})
            metrics.REJECTED.labels("401", "auth").inc()
            return HttpAnswer(401, b"", [("www-authenticate", auth.challenge or "")])
        now = time.monotonic()
        machine = AcsSession(now=now, session_id=new_session_id(),
                             default_timeout=self.settings.session_idle_timeout)
        try:
            event = machine.receive_body(request.body, request.headers.get("content-type"), now=now)
        except MalformedEnvelope as exc:
            return self._reject(400, f"malformed CWMP message: {exc}", close=True)
        except CpeProtocolError as exc:
            return self._reject(400, f"no session: {exc}", close=True)
        if isinstance(event, VersionIncompatible):
            # No CWMP version both sides speak: fault 8006, and no session.
            out = machine.respond_fault(CwmpFault.from_code(AcsFault.VERSION_INCOMPATIBLE), now=now)
            return self._send(out, close=True)
        assert isinstance(event, InformArrived)
        identity = event.inform.device_id
        device_id = make_device_id(identity.oui, identity.product_class, identity.serial_number)
        try:
            refusal = await self.deps.authenticator.admits(auth, device_id, identity.oui, identity.product_class,
                                                           identity.serial_number)
        except PyMongoError as exc:
            log.warning("CPE credential store unavailable", extra={"device_id": device_id, "error": repr(exc)})
            return self._reject(503, "credential store unavailable", retry_after=30)
        if refusal is not None:
            self.throttle.failed(auth.username, address)
            if refusal.status == 401:
                # The shared pair for a device that has its own: a wrong password, to the CPE too.
                metrics.AUTH_FAILURES.labels("shared-refused").inc()
                log.info("CPE authentication failed", extra={"remote": address, "device_id": device_id,
                                                             "reason": refusal.reason})
                metrics.REJECTED.labels("401", "auth").inc()
                challenge = self.deps.authenticator.challenge()
                return HttpAnswer(401, b"", [("www-authenticate", challenge)])
            metrics.AUTH_FAILURES.labels("device-mismatch").inc()
            return self._reject(refusal.status, refusal.reason, close=True)
        quirks = self._quirks_of(event.inform)
        if auth.without_qop and not quirks.digest_without_qop:
            # RFC 2069 Digest (no qop, no nonce count: replayable) only for devices the quirks
            # table names; for any other it is refused like a malformed answer, not a wrong password.
            log.info("Digest without qop refused", extra={"remote": address, "device_id": device_id})
            metrics.REJECTED.labels("401", "auth").inc()
            return HttpAnswer(401, b"", [("www-authenticate", self.deps.authenticator.challenge())])
        self.throttle.succeeded(auth.username, address)
        if len(self.sessions) >= self.settings.max_sessions:
            return self._reject(503, "gateway saturated", retry_after=30)

        session = GatewaySession(machine.session_id, device_id, machine.cwmp_ns or "",
                                 request.connection_key, address, machine, username=auth.username,
                                 auth_ha1=auth.matched_ha1, quirks=quirks,
                                 name_case=NameCase(quirks.parameter_case) if quirks.parameter_case else None)
        if quirks.boolean_style is not None:
            machine.boolean_literal = BooleanLiteral.ONE_ZERO if quirks.boolean_style == "numeric" \
                else BooleanLiteral.TRUE_FALSE
        inform = event.inform
        due_read = self._read_work_due(device_id, inform)
        try:
            # An authenticated Inform of this device: it takes the lock whoever held it (and the
            # work-due marker is read meanwhile, in the same round trip of latency).
            previous = await self.deps.locks.acquire(device_id, session.session_id, self.deps.gateway_id,
                                                     self.settings.session_idle_timeout, self.deps.advertise_url)
        except PyMongoError as exc:
            if due_read is not None:
                due_read.cancel()
            log.warning("session lock store unavailable", extra={"device_id": device_id, "error": repr(exc)})
            return self._reject(503, "session store unavailable", retry_after=30)
        due = await self._work_due(due_read, device_id)
        if previous is not None:
            await self._take_over(previous, session)
        self.sessions[session.session_id] = session
        self.by_connection[request.connection_key] = session.session_id
        if quirks.session_binding == "address":
            self.by_address[address] = session.session_id
        # RetryCount may be above 0 (a refused or failed attempt): with nothing open for the
        # device as of the token, no task can have been cut short by that failure.
        routine = due is not None and due.idle and {e.event_code for e in inform.event} == ROUTINE_EVENTS
        if routine:
            session.plan_owed = False  # nothing is due: the session ends at the empty POST, with 204
        published = InformReceived(
            device_id=device_id, session_id=session.session_id, reply_to=self.deps.reply_to(),
            gateway_id=self.deps.gateway_id,
            device=DeviceIdentity(manufacturer=identity.manufacturer, oui=identity.oui,
                                  product_class=identity.product_class,
                                  serial_number=identity.serial_number),
            events=[InformEventCode(code=e.event_code, command_key=e.command_key) for e in inform.event],
            parameters=[ParameterValue(name=session.model_name(p.name), value=p.value.value, type=p.value.type)
                        for p in inform.parameter_list],
            retry_count=inform.retry_count, current_time=inform.current_time,
            cwmp_namespace=session.cwmp_ns, cwmp_version=machine.use_cwmp_version,
            remote_address=address, plan_needed=not routine, work_due_token=due.token if due else None)
        try:
            await self._publish(published)
        except (PublishFailed, EventTooLarge) as exc:
            self._forget(session)
            with contextlib.suppress(Exception):  # it expires on its own otherwise
                await self.deps.locks.release(device_id, session.session_id)
            if isinstance(exc, EventTooLarge):
                return self._reject(413, f"Inform too large for the message bus: {exc}", close=True)
            return self._reject(503, "message bus unavailable", retry_after=30)
        metrics.SESSIONS_STARTED.inc()
        metrics.SESSIONS_ACTIVE.set(len(self.sessions))
        if routine:
            metrics.ROUTINE_SESSIONS.inc()
        log.info("session started", extra={"device_id": device_id, "session_id": session.session_id,
                                           "events": sorted(published.event_codes()), "routine": routine})
        value = make_cookie_value(session.session_id, self.deps.advertise_url, self.settings.secret_key)
        cookie = format_set_cookie(COOKIE_NAME, value, path="/", http_only=True, secure=request.tls)
        response = InformResponse(max_envelopes=quirks.max_envelopes or 1)
        return self._send(machine.respond(response, now=time.monotonic(),
                                             any_max_envelopes=quirks.max_envelopes is not None),
                          headers=[("set-cookie", cookie)])

    def _quirks_of(self, inform: Inform) -> Quirks:
        """The device's entry of the quirks table (in memory: no round trip)."""
        if self.deps.quirks is None:
            return NO_QUIRKS
        identity = inform.device_id
        version = software_version_of((p.name, p.value.value) for p in inform.parameter_list)
        return self.deps.quirks.lookup(identity.oui, identity.product_class, version)

    def _read_work_due(self, device_id: str, inform: Inform) -> asyncio.Task[DueState] | None:
        """Start reading the device's work-due marker (None: the marker is off)."""
        reader = self.deps.work_due
        if reader is None:
            return None
        fingerprint = inform_fingerprint((p.name, p.value.value) for p in inform.parameter_list)
        return asyncio.ensure_future(reader.state(device_id, fingerprint))

    async def _work_due(self, read: asyncio.Task[DueState] | None, device_id: str) -> DueState | None:
        """The marker's state, routine only for an Inform that may skip the orchestrator.

        Unreadable, the orchestrator decides as if there were no marker (None).
        """
        if read is None:
            return None
        try:
            state = await read
        except PyMongoError as exc:
            log.warning("work-due marker unavailable", extra={"device_id": device_id, "error": repr(exc)})
            return None
        return state

    async def _take_over(self, previous: Holder, session: GatewaySession) -> None:
        """End the session whose lock ``session`` took, before the new Inform is published.

        So its end reaches the bus first and the orchestrator settles it from the gateway's own
        account of it (what was sent and never answered), as for any dropped session.
        """
        if (old := self.sessions.get(previous.session_id)) is not None:
            await self._end(old, "dropped", "the CPE started a new session", taken_over=True)
        elif previous.live and previous.gateway_id != self.deps.gateway_id:
            log.info("session taken over from another gateway", extra={
                "device_id": session.device_id, "session_id": session.session_id,
                "previous_session_id": previous.session_id, "previous_gateway_id": previous.gateway_id})
            if self.deps.notify_taken_over is not None:
                await self.deps.notify_taken_over(previous)

    async def taken_over(self, notice: str) -> HttpAnswer:
        """Another instance took over one of our sessions (``TAKEN_OVER_HEADER``): end it now."""
        session_id = parse_taken_over(notice, self.settings.secret_key)
        if session_id is None:
            return self._reject(403, "take-over notice not signed by this deployment")
        if (session := self.sessions.get(session_id)) is not None:
            await self._end(session, "dropped", "the CPE started a new session", taken_over=True)
        return HttpAnswer(204)

    # --- the rest of a session -------------------------------------------------------------------

    async def _continue_session(self, session: GatewaySession, request: CwmpRequest) -> HttpAnswer:
        session.touch()
        if not await self._refresh_lock(session):
            # A newer session of the device took the lock (on another instance): this one is over.
            await self._end(session, "dropped", "the CPE started a new session", taken_over=True)
            return await self._start_session(request)
        machine = session.machine
        now = time.monotonic()
        try:
            envelope = None if is_empty_body(request.body) else parse_envelope(
                request.body, request.headers.get("content-type"))
        except UnknownMethod as exc:
            envelope = exc
        except MalformedEnvelope as exc:
            await self._end(session, "error", f"malformed message: {exc}")
            return self._reject(400, f"malformed CWMP message: {exc}", close=True)
        if envelope is not None and not isinstance(envelope, UnknownMethod) \
                and isinstance(envelope.message, Inform):
            # A new session where an old one was: the CPE gave up on its session (same device),
            # or a proxy reuses one connection for several CPEs (genieacs#281). It authenticates
            # as every Inform does, once, and only then takes over its device's session.
            return await self._start_session(request)
        if request.headers.get("authorization"):
            # The cookie (or connection) already proves the session; a CPE may still send
            # credentials on any request. A wrong password ends the session; a stale nonce or a
            # reused nonce count (sloppy Digest clients resend nc=00000001) is no reason to.
            try:
                auth = await self.deps.authenticator.authenticate(
                    "POST", request.target, request.headers["authorization"], request.tls,
                    session_ha1=session.auth_ha1)
            except PyMongoError:
                auth = None  # the cookie proves the session; the store being down ends nothing
            if auth is not None and not auth.ok and auth.wrong_credentials:
                self.throttle.failed(auth.username or session.username, request.client[0])
                metrics.AUTH_FAILURES.labels(self.settings.cpe_auth).inc()
                await self._end(session, "error", "wrong credentials inside a session")
                return HttpAnswer(401, b"", [("www-authenticate", auth.challenge or "")], close=True)
        try:
            if isinstance(envelope, UnknownMethod):
                event = machine.receive_unknown_method(envelope.method, envelope.cwmp_id, envelope.cwmp_ns, now=now)
            else:
                event = machine.receive(envelope, now=now)
        except SessionError as exc:
            await self._end(session, "error", str(exc))
            return self._reject(400, f"session rule broken: {exc}", close=True)
        if isinstance(event, RequestReceived):
            return await self._cpe_request(session, event)
        if isinstance(event, UnknownMethodReceived):
            # An unsupported CPE method: fault 8000 with the request's ID, and the session goes on.
            metrics.CPE_REQUESTS.labels("unknown").inc()
            return self._send(machine.respond_fault(CwmpFault.from_code(AcsFault.METHOD_NOT_SUPPORTED),
                                                    now=now))
        if isinstance(event, ResponseReceived | FaultReceived):
            session.outstanding = None
            try:
                await self._publish_answer(session, event)
            except PublishFailed:
                await self._end(session, "error", "message bus unavailable")
                return self._reject(503, "message bus unavailable", retry_after=30, close=True)
            except EventTooLarge as exc:
                await self._end(session, "error", f"answer too large for the message bus: {exc}")
                return self._reject(413, f"answer too large for the message bus: {exc}", close=True)
        elif isinstance(event, EmptyPostReceived) and event.abandoned:
            log.info("CPE sent an empty POST with requests outstanding",
                     extra={"session_id": session.session_id, "abandoned": len(event.abandoned)})
        return await self._next_rpc_or_end(session)

    async def _publish_answer(self, session: GatewaySession, event: ResponseReceived | FaultReceived) -> None:
        rpc_id = event.request.cwmp_id
        method = event.request.request.METHOD
        common = {"device_id": session.device_id, "session_id": session.session_id,
                  "reply_to": self.deps.reply_to(), "gateway_id": self.deps.gateway_id, "rpc_id": rpc_id,
                  "request": session.model_names(rpc_to_dict(event.request.request))}
        if isinstance(event, FaultReceived):
            metrics.RPCS.labels(method, "fault").inc()
            fault = event.fault
            await self._publish(RpcFaultReceived(
                **common, method=method, fault_code=fault.code, fault_string=fault.string,
                parameter_faults=[SetParameterValuesFaultEntry(
                    parameter_name=session.model_name(f.parameter_name), fault_code=f.fault_code,
                    fault_string=f.fault_string or "") for f in fault.set_parameter_values_faults]))
        else:
            metrics.RPCS.labels(method, "ok").inc()
            await self._publish(RpcResponseReceived(**common, method=event.response.METHOD,
                                                    rpc=session.model_names(rpc_to_dict(event.response))))

    async def _cpe_request(self, session: GatewaySession, event: RequestReceived) -> HttpAnswer:
        machine = session.machine
        method = event.request.METHOD
        metrics.CPE_REQUESTS.labels(method).inc()
        if method == "Kicked":
            # Kicked (A.4.2.1, deprecated) is optional for an ACS and this one has no web-portal
            # flow to send a NextURL from: 8000 Method not supported, as for any method not in
            # its GetRPCMethods list. The session goes on.
            return self._send(machine.respond_fault(CwmpFault.from_code(AcsFault.METHOD_NOT_SUPPORTED),
                                                    now=time.monotonic()))
        if method != "GetRPCMethods":
            try:
                await self._publish(CpeRequestReceived(
                    device_id=session.device_id, session_id=session.session_id, reply_to=self.deps.reply_to(),
                    gateway_id=self.deps.gateway_id, method=method, rpc=rpc_to_dict(event.request)))
            except PublishFailed:
                # 8005: the CPE sends the same request again (TR-069 3.7.1.6); nothing is lost.
                return self._send(machine.respond_fault(CwmpFault.from_code(AcsFault.RETRY_REQUEST),
                                                        now=time.monotonic()))
            except EventTooLarge as exc:
                # Asking for it again (8005) would loop: the same request is as large next time.
                await self._end(session, "error", f"{method} too large for the message bus: {exc}")
                return self._reject(413, f"{method} too large for the message bus: {exc}", close=True)
        return self._send(machine.respond(default_response(event.request), now=time.monotonic()))

    async def _next_rpc_or_end(self, session: GatewaySession) -> HttpAnswer:
        machine = session.machine
        while True:
            started = time.monotonic()
            planned = await session.next_rpc(self.settings.session_plan_timeout)
            metrics.PLAN_WAIT.observe(time.monotonic() - started)
            if planned is None:
                out = machine.end(now=time.monotonic())
                outcome = "timeout" if session.plan_timed_out else "completed"
                await self._end(session, outcome,
                                "no plan from the orchestrator in time" if session.plan_timed_out else "")
                if session.quirks.end_session == "200":
                    return HttpAnswer(200, b"")  # the quirk: an empty 200 instead of 204
                return self._send(out)
            try:
                rpc = rpc_from_dict(session.cpe_rpc(planned.rpc))
                return self._send(machine.send_request(rpc, now=time.monotonic(), cwmp_id=planned.rpc_id))
            except (ValueError, SessionError) as exc:
                # A bad plan entry must not kill the session: skip it, say so, send the next.
                log.error("orchestrator planned an unsendable RPC",
                          extra={"session_id": session.session_id, "rpc_id": planned.rpc_id, "error": str(exc)})
                metrics.RPCS.labels(str(planned.rpc.get("method")), "invalid").inc()

    # --- ending ----------------------------------------------------------------------------------

    async def _end(self, session: GatewaySession, outcome: str, reason: str, *,
                   taken_over: bool = False) -> None:
        """End a session: forget it, free its lock, tell the orchestrator what became of its RPCs.

        ``taken_over``: a newer session of the device holds the lock now; nothing to release, and
        the end is published before this returns, so it reaches the bus before the new Inform.
        """
        if not self._forget(session):
            return
        session.close()
        metrics.SESSIONS_ENDED.labels(outcome).inc()
        metrics.SESSION_DURATION.observe(time.monotonic() - session.started)
        metrics.SESSIONS_ACTIVE.set(len(self.sessions))
        log.info("session ended", extra={"device_id": session.device_id, "session_id": session.session_id,
                                         "outcome": outcome, "reason": reason})
        if not taken_over:
            # Released before the CPE gets its 204: a CPE that starts its next session at once
            # (a Reboot, a connection request) must find its device free.
            try:
                await self.deps.locks.release(session.device_id, session.session_id)
            except Exception:
                # The lock expires on its own; the device waits at most the idle timeout.
                log.warning("could not release a session lock", exc_info=True)
        if outcome == "completed" and session.rpcs_planned == 0:
            # The Inform's plan was empty: the orchestrator stored nothing to close and no other
            # consumer acts on the end, so the bus is spared a third message per routine session.
            return
        ended = SessionEnded(device_id=session.device_id, session_id=session.session_id,
                             reply_to=self.deps.reply_to(), gateway_id=self.deps.gateway_id,
                             outcome=outcome, unsent_rpc_ids=session.unsent_rpc_ids(),  # type: ignore[arg-type]
                             unanswered_rpc_ids=[session.outstanding.rpc_id] if session.outstanding else [],
                             reason=reason)
        if taken_over:
            await self._publish_quietly(ended)
            return
        # Off the response path: the CPE need not wait for the bookkeeping event.
        task = asyncio.create_task(self._publish_quietly(ended))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish_quietly(self, ended: SessionEnded) -> None:
        try:
            await self._publish(ended)
        except (PublishFailed, EventTooLarge):
            log.warning("could not publish the end of a session", extra={"session_id": ended.session_id})

    def _forget(self, session: GatewaySession) -> bool:
        if self.sessions.pop(session.session_id, None) is None:
            return False
        if self.by_connection.get(session.connection_key) == session.session_id:
            del self.by_connection[session.connection_key]
        if self.by_address.get(session.remote_address) == session.session_id:
            del self.by_address[session.remote_address]
        return True

    async def expire_idle(self) -> None:
        """End sessions whose CPE went quiet (called periodically)."""
        now = time.monotonic()
        for session in list(self.sessions.values()):
            if now - session.last_activity > self.settings.session_idle_timeout and not session.lock.locked():
                await self._end(session, "dropped", "CPE idle past ACS_SESSION_IDLE_TIMEOUT")

    async def end_taken_over(self) -> None:
        """End the sessions that lost their lock to a newer session of their device (periodic).

        The fallback for a take-over notice that did not arrive: one query for all of this
        instance's sessions. A lock held by another session, or gone although it cannot have
        expired yet (a newer session took it and has released it since), means the device moved on.
        A lock that may simply have expired is left alone: its session's next request takes it back.
        """
        sessions = list(self.sessions.values())
        if not sessions:
            return
        holders = await self.deps.locks.holders([s.device_id for s in sessions])
        fresh_after = time.monotonic() - self.settings.session_idle_timeout / 2
        for session in sessions:
            holder = holders.get(session.device_id)
            if holder == session.session_id or (holder is None and session.last_lock_refresh < fresh_after):
                continue
            await self._end(session, "dropped", "the CPE started a new session", taken_over=True)

    async def _watch_loop_lag(self, period: float = 0.05) -> None:
        """How late the event loop wakes: time a request waits before it is even read."""
        assert self.admission is not None
        while not self.draining:
            started = time.monotonic()
            await asyncio.sleep(period)
            self.admission.observe_loop_lag(time.monotonic() - started - period)

    async def drain(self, grace: float) -> None:
        """Refuse new sessions, give the current ones ``grace`` seconds, then end them."""
        self.draining = True
        if self._lag_watch is not None:
            self._lag_watch.cancel()
        deadline = time.monotonic() + grace
        # Polling is fine here: it runs once, at shutdown, for a few seconds at most.
        while self.sessions and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        for session in list(self.sessions.values()):
            await self._end(session, "dropped", "gateway shutting down")
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _refresh_lock(self, session: GatewaySession) -> bool:
        """Extend the session's lock now and then; False when a newer session took it."""
        now = time.monotonic()
        if now - session.last_lock_refresh > self.settings.session_idle_timeout / 3:
            session.last_lock_refresh = now
            try:
                return await self.deps.locks.refresh(session.device_id, session.session_id,
                                                     self.settings.session_idle_timeout, self.deps.gateway_id)
            except PyMongoError as exc:
                # The session goes on; at worst its lock expires and another Inform may start.
                log.warning("could not refresh a session lock", extra={"session_id": session.session_id,
                                                                        "error": repr(exc)})
        return True

    # --- helpers ---------------------------------------------------------------------------------

    async def _publish(self, event: InformReceived | CpeRequestReceived | RpcResponseReceived |
                       RpcFaultReceived | SessionEnded) -> None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(self.deps.publish(TOPIC_INBOUND, event.device_id, event),
                                   self.settings.kafka_publish_timeout)
        except EventTooLarge as exc:
            log.warning("event too large for the bus, refused", extra={
                "device_id": excerpt(event.device_id), "event_type": event.type, "size": exc.size,
                "limit": exc.limit})
            raise
        except Exception as exc:
            log.warning("publishing to Kafka failed", extra={"device_id": excerpt(event.device_id),
                                                             "error": repr(exc)[:500]})
            raise PublishFailed from exc
        metrics.PUBLISH_LATENCY.observe(time.monotonic() - started)

    def _send(self, out: Outgoing, *, headers: list[tuple[str, str]] | None = None,
              close: bool = False) -> HttpAnswer:
        content = [("content-type", XML_CONTENT_TYPE)] if out.body else []
        return HttpAnswer(out.status, out.body, [*content, *(headers or [])], close)

    def _reject(self, status: int, reason: str, *, retry_after: int | None = None,
                close: bool = False) -> HttpAnswer:
        # The label is the reason's kind (before any ":"), so details from the CPE cannot grow
        # the number of time series.
        metrics.REJECTED.labels(str(status), reason.split(":", 1)[0][:40]).inc()
        headers = [("retry-after", str(retry_after))] if retry_after else []
        return plain(status, reason, close=close, headers=headers)
