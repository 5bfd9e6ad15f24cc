"""Sans-I/O state machine for the ACS side of one CWMP session (h11 style).

The gateway feeds it what each CPE POST carried and gets back a small event; it then tells
the machine what it replies, and gets back the bytes and HTTP status to send. No sockets,
clocks or randomness inside: the caller passes ``now`` (any monotonic or wall-clock float,
used consistently) and the session id.

One HTTP exchange = one inbound call + one outbound call::

    event = session.receive_body(body, content_type, now=t)        # or receive(envelope, now=t)
    match event:
        case InformReceived():        out = session.respond(InformResponse(), now=t)
        case RequestReceived():       out = session.respond(default_response(event.request), now=t)
        case UnknownMethodReceived(): out = session.respond_fault(CwmpFault.from_code(8000), now=t)
        case VersionIncompatible():   out = session.respond_fault(CwmpFault.from_code(8006), now=t)
        case ResponseReceived() | FaultReceived() | EmptyPostReceived():
            rpc = next_rpc_from_orchestrator()
            out = session.send_request(rpc, now=t) if rpc else session.end(now=t)
    http_reply(out.status, out.body)

Rules enforced (checklist T9-T15, T20, Q9):

* Inform comes first and exactly once; anything else first, or a second Inform, raises a
  :class:`CpeProtocolError` (HTTP 400, GenieACS "Bad session state"/"already in session").
* After the InformResponse, CPE requests are answered until the CPE sends an empty POST; only
  then does the ACS send its requests, one per HTTP response, each with a unique cwmp:ID.
* CPE responses and faults are matched to outstanding ACS requests by cwmp:ID; a CPE that
  omits the ID is tolerated when exactly one request is outstanding.
* HoldRequests: while the last ACS reply set it, or carried an ACS request, the CPE may not
  send requests. A 204 ends the ACS side but re-enables CPE requests (T10).
* Unknown CPE methods are reported so that the gateway faults them with 8000 and the same ID;
  the session continues.
* Version negotiation (CWMP 1.4): SupportedCWMPVersions -> UseCWMPVersion, or 8006.
* The reply namespace is the one the CPE used in its Inform, for the whole session.
* Idle timeout: the Inform's SessionTimeout header when present, else ``default_timeout``.

The whole state is plain data: :meth:`AcsSession.to_dict` / :meth:`AcsSession.from_dict`
let a gateway persist a session across a dropped TCP connection or hand it to another
instance.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .codec import (
    CWMP_NS_1_0,
    Envelope,
    Header,
    UnknownMethod,
    build_envelope,
    is_cwmp_namespace,
    is_empty_body,
    parse_envelope,
)
from .faults import AcsFault, CwmpFault
from .models import (
    ACS_SUPPORTED_METHODS,
    CPE_REQUEST_METHODS,
    METHODS,
    AutonomousDUStateChangeCompleteResponse,
    AutonomousTransferCompleteResponse,
    CwmpMessage,
    DeviceId,
    DUStateChangeCompleteResponse,
    GetRPCMethodsResponse,
    Inform,
    InformResponse,
    KickedResponse,
    MessageKind,
    RequestDownloadResponse,
    TransferCompleteResponse,
    rpc_from_dict,
    rpc_to_dict,
)
from .values import BooleanLiteral
from .xmlsafe import DEFAULT_LIMITS, XmlLimits

__all__ = [
    "ACS_CWMP_VERSIONS",
    "AcsProtocolError",
    "AcsSession",
    "CpeProtocolError",
    "EmptyPostReceived",
    "Event",
    "FaultReceived",
    "InformReceived",
    "InvalidDeviceId",
    "Outgoing",
    "PendingRequest",
    "RequestReceived",
    "RequestsHeld",
    "ResponseReceived",
    "SessionError",
    "SessionExpired",
    "SessionOver",
    "State",
    "UnknownMethodReceived",
    "UnmatchedResponse",
    "VersionIncompatible",
    "default_response",
    "negotiate_version",
]

ACS_CWMP_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2", "1.3", "1.4")
DEFAULT_TIMEOUT = 30.0  # seconds; GenieACS's default and the CPE's minimum wait (T6, T15)
_SNAPSHOT_VERSION = 1
# DeviceIdStruct fields are string(64) in TR-069 (string(6) for the OUI, which some CPEs write
# longer). OUI, ProductClass and SerialNumber make the device id, a bus key and a log field:
# bounded here, a 900 KB SerialNumber is refused at once instead of failing further on.
MAX_DEVICE_ID_FIELD = 64


# ---------------------------------------------------------------------------------------
# States and the transition tables
# ---------------------------------------------------------------------------------------


class State(StrEnum):
    AWAIT_INFORM = "await_inform"  # nothing received yet
    INFORM_RECEIVED = "inform_received"  # the ACS owes an InformResponse (or a fault)
    CPE_REQUEST_RECEIVED = "cpe_request_received"  # the ACS owes the response to a CPE request
    AWAIT_CPE = "await_cpe"  # the ACS has replied; the CPE's next POST is due
    ACS_TURN = "acs_turn"  # the CPE sent a response, fault or empty POST: ACS sends a request or 204
    ENDED = "ended"  # the ACS sent 204; over, unless the CPE still sends a request (T10)
    CLOSED = "closed"  # terminal: Inform faulted, expired or closed by the gateway


class _In(StrEnum):
    INFORM = "Inform"
    REQUEST = "request"
    UNKNOWN = "unknown method"
    RESPONSE = "response"
    FAULT = "fault"
    EMPTY = "empty POST"


class _Out(StrEnum):
    INFORM_RESPONSE = "InformResponse"
    RESPONSE = "response"
    FAULT = "fault"
    RETRY_FAULT = "fault 8005"
    REQUEST = "request"
    END = "204"


_S = State
# What the CPE may do in each state. Anything else is a CpeProtocolError. CPE requests are
# further gated by HoldRequests (see AcsSession.cpe_may_send_requests).
INBOUND: Mapping[tuple[State, _In], State] = {
    (_S.AWAIT_INFORM, _In.INFORM): _S.INFORM_RECEIVED,
    (_S.AWAIT_CPE, _In.REQUEST): _S.CPE_REQUEST_RECEIVED,
    (_S.AWAIT_CPE, _In.UNKNOWN): _S.CPE_REQUEST_RECEIVED,
    (_S.AWAIT_CPE, _In.RESPONSE): _S.ACS_TURN,
    (_S.AWAIT_CPE, _In.FAULT): _S.ACS_TURN,
    (_S.AWAIT_CPE, _In.EMPTY): _S.ACS_TURN,
    (_S.ENDED, _In.REQUEST): _S.CPE_REQUEST_RECEIVED,  # a 204 re-enables CPE requests (T10)
    (_S.ENDED, _In.UNKNOWN): _S.CPE_REQUEST_RECEIVED,
    (_S.ENDED, _In.EMPTY): _S.ACS_TURN,
}
# What the ACS may send in each state. Anything else is an AcsProtocolError (a gateway bug).
OUTBOUND: Mapping[tuple[State, _Out], State] = {
    (_S.INFORM_RECEIVED, _Out.INFORM_RESPONSE): _S.AWAIT_CPE,
    (_S.INFORM_RECEIVED, _Out.RETRY_FAULT): _S.AWAIT_INFORM,  # 8005: the CPE re-sends the Inform (T21)
    (_S.INFORM_RECEIVED, _Out.FAULT): _S.CLOSED,  # any other fault fails the session for the CPE
    (_S.CPE_REQUEST_RECEIVED, _Out.RESPONSE): _S.AWAIT_CPE,
    (_S.CPE_REQUEST_RECEIVED, _Out.FAULT): _S.AWAIT_CPE,
    (_S.CPE_REQUEST_RECEIVED, _Out.RETRY_FAULT): _S.AWAIT_CPE,
    (_S.ACS_TURN, _Out.REQUEST): _S.AWAIT_CPE,
    (_S.ACS_TURN, _Out.END): _S.ENDED,
}


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


class SessionError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CpeProtocolError(SessionError):
    """The CPE broke the session rules. Reply ``http_status`` and close; state is unchanged."""

    http_status = 400


class SessionOver(CpeProtocolError):
    """An Inform on a session that has ended or closed: the gateway should start a new one."""


class RequestsHeld(CpeProtocolError):
    """A CPE request while HoldRequests was set or an ACS request was outstanding (T10)."""


class UnmatchedResponse(CpeProtocolError):
    """A response or fault that matches no outstanding ACS request."""


class SessionExpired(CpeProtocolError):
    """The session was idle longer than its timeout; it is now CLOSED."""


class InvalidDeviceId(CpeProtocolError):
    """An Inform whose DeviceId cannot name a device: an empty OUI or SerialNumber, or a field
    longer than :data:`MAX_DEVICE_ID_FIELD`."""


class AcsProtocolError(SessionError):
    """The ACS side (the caller) tried something the protocol does not allow now."""


# ---------------------------------------------------------------------------------------
# Events (what the CPE did) and Outgoing (what to send)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InformReceived:
    inform: Inform
    cwmp_id: str | None
    header: Header
    use_cwmp_version: str | None  # sent as UseCWMPVersion in the InformResponse, if not None


@dataclass(frozen=True, slots=True)
class VersionIncompatible:
    """The CPE offered no CWMP version the ACS accepts: fault the Inform with 8006."""

    inform: Inform
    cwmp_id: str | None
    cpe_versions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A CPE request other than Inform (TransferComplete, GetRPCMethods, ...)."""

    request: CwmpMessage
    cwmp_id: str | None


@dataclass(frozen=True, slots=True)
class UnknownMethodReceived:
    """A CPE request the ACS does not implement: fault it with 8000 and the same ID (T20)."""

    method: str
    cwmp_id: str | None


@dataclass(frozen=True, slots=True)
class PendingRequest:
    cwmp_id: str
    request: CwmpMessage
    sent_at: float


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    response: CwmpMessage
    cwmp_id: str | None
    request: PendingRequest


@dataclass(frozen=True, slots=True)
class FaultReceived:
    fault: CwmpFault
    cwmp_id: str | None
    request: PendingRequest


@dataclass(frozen=True, slots=True)
class EmptyPostReceived:
    """The CPE has nothing (more) to say. ``abandoned``: ACS requests it never answered."""

    abandoned: tuple[PendingRequest, ...] = ()


Event = (
    InformReceived
    | VersionIncompatible
    | RequestReceived
    | UnknownMethodReceived
    | ResponseReceived
    | FaultReceived
    | EmptyPostReceived
)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One HTTP response: 200 with an envelope, or 204 with an empty body."""

    status: int
    body: bytes
    cwmp_id: str | None = None
    message: CwmpMessage | CwmpFault | None = None


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _split_versions(text: str) -> tuple[str, ...]:
    return tuple(v for v in (part.strip() for part in text.split(",")) if v)


def negotiate_version(cpe_versions: str, acs_versions: Iterable[str] = ACS_CWMP_VERSIONS) -> str | None:
    """The highest version both sides support, or None. Malformed entries are ignored."""
    offered = set()
    for version in _split_versions(cpe_versions):
        try:
            offered.add((_version_key(version), version))
        except ValueError:
            continue
    accepted = {_version_key(v) for v in acs_versions}
    common = [entry for entry in offered if entry[0] in accepted]
    return max(common)[1] if common else None


_DEFAULT_RESPONSES: dict[str, type[CwmpMessage]] = {
    "Inform": InformResponse,
    "TransferComplete": TransferCompleteResponse,
    "AutonomousTransferComplete": AutonomousTransferCompleteResponse,
    "RequestDownload": RequestDownloadResponse,
    "DUStateChangeComplete": DUStateChangeCompleteResponse,
    "AutonomousDUStateChangeComplete": AutonomousDUStateChangeCompleteResponse,
    "Kicked": KickedResponse,
}


def default_response(request: CwmpMessage, *, acs_methods: Iterable[str] = ACS_SUPPORTED_METHODS) -> CwmpMessage:
    """The standard ACS answer to a CPE request (GetRPCMethods lists ``acs_methods``)."""
    if request.METHOD == "GetRPCMethods":
        return GetRPCMethodsResponse(method_list=tuple(acs_methods))
    cls = _DEFAULT_RESPONSES.get(request.METHOD)
    if cls is None:
        raise ValueError(f"{request.METHOD} is not a request a CPE sends to an ACS")
    return cls()


# ---------------------------------------------------------------------------------------
# The session
# ---------------------------------------------------------------------------------------


class AcsSession:
    """One CWMP session as seen by the ACS. See the module docstring for the protocol."""

    def __init__(
        self,
        *,
        now: float,
        session_id: str | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
        acs_versions: Iterable[str] = ACS_CWMP_VERSIONS,
        boolean_literal: BooleanLiteral = BooleanLiteral.TRUE_FALSE,
    ) -> None:
        self.session_id = session_id or secrets.token_hex(8)
        self.default_timeout = float(default_timeout)
        self.acs_versions = tuple(acs_versions)
        self.boolean_literal = BooleanLiteral(boolean_literal)
        self.created_at = now
        self.last_activity = now
        self._state = State.AWAIT_INFORM
        self.cwmp_ns: str | None = None  # the CPE's namespace, echoed in every reply
        self.use_cwmp_version: str | None = None
        self.session_timeout: int | None = None  # from the Inform header (CWMP 1.3+)
        self.device_id: DeviceId | None = None
        self._counter = 0
        self._pending: dict[str, PendingRequest] = {}
        # The CPE request the ACS owes an answer to: (cwmp:ID, method, expected response).
        self._owed: tuple[str | None, str, str | None] | None = None
        self._version_incompatible = False
        # T10 (a)/(b): what the last ACS HTTP response carried.
        self._last_reply_hold = False
        self._last_reply_had_request = False

    # -- read-only views ----------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def pending(self) -> tuple[PendingRequest, ...]:
        """ACS requests sent and not yet answered, oldest first."""
        return tuple(self._pending.values())

    @property
    def cpe_may_send_requests(self) -> bool:
        """T10: the last ACS reply carried no request and did not set HoldRequests."""
        if self._state is State.ENDED:
            return True
        return not self._last_reply_hold and not self._last_reply_had_request

    @property
    def timeout(self) -> float:
        return float(self.session_timeout) if self.session_timeout else self.default_timeout

    @property
    def deadline(self) -> float:
        return self.last_activity + self.timeout

    def expired(self, now: float) -> bool:
        return now > self.deadline

    def close(self) -> None:
        """Terminal: the gateway gave up on the session (timeout, dropped CPE, shutdown)."""
        self._state = State.CLOSED

    # -- inbound --------------------------------------------------------------------------

    def receive_body(
        self, body: bytes, content_type: str | None = None, *, now: float, limits: XmlLimits = DEFAULT_LIMITS
    ) -> Event:
        """Parse a POST body and feed it in. Empty/whitespace bodies are empty POSTs (Q7).

        Raises :class:`cwmp.codec.MalformedEnvelope` (other than unknown methods, which become an
        :class:`UnknownMethodReceived` event) and :class:`CpeProtocolError`; on either the
        session state is unchanged.
        """
        if is_empty_body(body):
            return self.receive(None, now=now)
        try:
            envelope = parse_envelope(body, content_type, limits)
        except UnknownMethod as exc:
            return self.receive_unknown_method(exc.method, exc.cwmp_id, exc.cwmp_ns, now=now)
        return self.receive(envelope, now=now)

    def receive(self, envelope: Envelope | None, *, now: float) -> Event:
        """Feed a parsed envelope, or None for an empty POST."""
        self._check_alive(now)
        if envelope is None or envelope.message is None:
            return self._receive_empty(now)
        message = envelope.message
        cwmp_id = envelope.header.id
        if isinstance(message, CwmpFault):
            return self._receive_fault(message, cwmp_id, now)
        if isinstance(message, Inform):
            return self._receive_inform(envelope, message, now)
        if message.KIND is MessageKind.REQUEST:
            if message.METHOD not in CPE_REQUEST_METHODS:
                # An ACS-only method (Reboot, ...) sent to the ACS: not something it supports.
                return self.receive_unknown_method(message.METHOD, cwmp_id, envelope.cwmp_ns, now=now)
            self._inbound(_In.REQUEST)
            self._owed = (cwmp_id, message.METHOD, message.RESPONSE)
            return self._commit(_In.REQUEST, RequestReceived(message, cwmp_id), now)
        return self._receive_response(message, cwmp_id, now)

    def receive_unknown_method(
        self, method: str, cwmp_id: str | None, cwmp_ns: str | None = None, *, now: float
    ) -> Event:
        """A CPE message naming a method the codec does not know (codec.UnknownMethod)."""
        self._check_alive(now)
        if method.endswith("Response") and self._state is not State.AWAIT_INFORM:
            raise UnmatchedResponse(f"{method} answers no request the ACS sent")
        self._inbound(_In.UNKNOWN)
        self._owed = (cwmp_id, method, None)
        return self._commit(_In.UNKNOWN, UnknownMethodReceived(method, cwmp_id), now)

    def _receive_inform(self, envelope: Envelope, inform: Inform, now: float) -> Event:
        if self._state in (State.ENDED, State.CLOSED):
            raise SessionOver("Inform on a finished session: start a new session")
        if self._state is not State.AWAIT_INFORM:
            raise CpeProtocolError("CPE already in session: Inform occurs once per session")
        _check_device_id(inform)
        header = envelope.header
        cpe_versions = header.supported_cwmp_versions
        use_version = None
        incompatible = False
        if cpe_versions:
            use_version = negotiate_version(cpe_versions, self.acs_versions)
            incompatible = use_version is None
        self._state = INBOUND[(State.AWAIT_INFORM, _In.INFORM)]
        self.cwmp_ns = envelope.cwmp_ns if is_cwmp_namespace(envelope.cwmp_ns) else CWMP_NS_1_0
        self.session_timeout = header.session_timeout or None
        self.device_id = inform.device_id
        self.use_cwmp_version = use_version
        self._version_incompatible = incompatible
        self._owed = (header.id, "Inform", "InformResponse")
        self.last_activity = now
        if incompatible:
            return VersionIncompatible(inform, header.id, _split_versions(cpe_versions or ""))
        return InformReceived(inform, header.id, header, use_version)

    def _receive_response(self, message: CwmpMessage, cwmp_id: str | None, now: float) -> Event:
        self._inbound(_In.RESPONSE)
        pending = self._match(cwmp_id, message.METHOD)
        if pending.request.RESPONSE != message.METHOD:
            raise UnmatchedResponse(
                f"{message.METHOD} does not answer {pending.request.METHOD} (cwmp:ID {pending.cwmp_id!r})"
            )
        del self._pending[pending.cwmp_id]
        return self._commit(_In.RESPONSE, ResponseReceived(message, cwmp_id, pending), now)

    def _receive_fault(self, fault: CwmpFault, cwmp_id: str | None, now: float) -> Event:
        self._inbound(_In.FAULT)
        pending = self._match(cwmp_id, "Fault")
        del self._pending[pending.cwmp_id]
        return self._commit(_In.FAULT, FaultReceived(fault, cwmp_id, pending), now)

    def _receive_empty(self, now: float) -> Event:
        self._inbound(_In.EMPTY)
        abandoned = tuple(self._pending.values())
        self._pending.clear()
        return self._commit(_In.EMPTY, EmptyPostReceived(abandoned), now)

    def _match(self, cwmp_id: str | None, what: str) -> PendingRequest:
        if cwmp_id:
            pending = self._pending.get(cwmp_id)
            if pending is None:
                raise UnmatchedResponse(f"{what} with cwmp:ID {cwmp_id!r} matches no outstanding request")
            return pending
        if len(self._pending) == 1:  # the CPE dropped the ID; unambiguous anyway
            return next(iter(self._pending.values()))
        raise UnmatchedResponse(f"{what} without cwmp:ID and {len(self._pending)} requests outstanding")

    def _inbound(self, kind: _In) -> None:
        """Check that ``kind`` is allowed now; raise without changing anything if not."""
        if (self._state, kind) not in INBOUND:
            if self._state is State.AWAIT_INFORM:
                raise CpeProtocolError(f"{kind} before Inform: Inform must be the first request")
            if self._state in (State.INFORM_RECEIVED, State.CPE_REQUEST_RECEIVED, State.ACS_TURN):
                raise CpeProtocolError(f"{kind} while the ACS owes a reply: no pipelining (T2)")
            raise CpeProtocolError(f"{kind} not allowed in state {self._state}")
        if kind in (_In.REQUEST, _In.UNKNOWN) and not self.cpe_may_send_requests:
            raise RequestsHeld("CPE request while HoldRequests is set or an ACS request is outstanding")

    def _commit(self, kind: _In, event: Event, now: float) -> Event:
        self._state = INBOUND[(self._state, kind)]
        self.last_activity = now
        return event

    def _check_alive(self, now: float) -> None:
        if self._state is State.CLOSED:
            raise SessionOver("session is closed")
        if self.expired(now):
            self._state = State.CLOSED
            raise SessionExpired(f"session idle for more than {self.timeout:g} s")

    # -- outbound -------------------------------------------------------------------------

    def respond(self, message: CwmpMessage, *, now: float, hold_requests: bool | None = None,
                any_max_envelopes: bool = False) -> Outgoing:
        """Answer the CPE request just received (InformResponse, TransferCompleteResponse, ...).

        ``hold_requests=True`` stops the CPE from sending requests until the ACS sends a
        reply without it or a 204 (T10): use it to drain the ACS's own queue first.
        ``any_max_envelopes``: an InformResponse MaxEnvelopes other than 1 is sent as given (a
        per-vendor quirk for CPEs that want one).
        """
        if self._owed is None:
            raise AcsProtocolError(f"no CPE request to answer in state {self._state}")
        cwmp_id, method, expected = self._owed
        if expected is None:
            raise AcsProtocolError(f"{method} is unknown to the ACS: answer it with fault 8000")
        if message.METHOD != expected:
            raise AcsProtocolError(f"{method} must be answered with {expected}, not {message.METHOD}")
        kind = _Out.INFORM_RESPONSE if method == "Inform" else _Out.RESPONSE
        if kind is _Out.INFORM_RESPONSE:
            if self._version_incompatible:
                raise AcsProtocolError("no common CWMP version: fault the Inform with 8006")
            if getattr(message, "max_envelopes", 1) != 1 and not any_max_envelopes:
                raise AcsProtocolError("InformResponse MaxEnvelopes MUST be 1 (A.3.3.1)")
        use_version = self.use_cwmp_version if kind is _Out.INFORM_RESPONSE else None
        self._outbound(kind)
        body = self._build(message, cwmp_id, hold_requests=hold_requests, use_cwmp_version=use_version)
        self._replied(kind, now, hold=bool(hold_requests), had_request=False)
        return Outgoing(200, body, cwmp_id, message)

    def respond_fault(self, fault: CwmpFault, *, now: float, hold_requests: bool | None = None) -> Outgoing:
        """Fault the CPE request just received, with its cwmp:ID (8000 unknown method, 8005 retry, ...)."""
        if self._owed is None:
            raise AcsProtocolError(f"no CPE request to fault in state {self._state}")
        cwmp_id = self._owed[0]
        kind = _Out.RETRY_FAULT if fault.code == AcsFault.RETRY_REQUEST else _Out.FAULT
        self._outbound(kind)
        body = self._build(fault, cwmp_id, hold_requests=hold_requests)
        self._replied(kind, now, hold=bool(hold_requests), had_request=False)
        return Outgoing(200, body, cwmp_id, fault)

    def send_request(
        self,
        request: CwmpMessage,
        *,
        now: float,
        hold_requests: bool | None = None,
        cwmp_id: str | None = None,
    ) -> Outgoing:
        """Send the next ACS request (allowed only after a CPE response, fault or empty POST)."""
        if request.KIND is not MessageKind.REQUEST or "acs" not in request.SENDERS:
            raise AcsProtocolError(f"{request.METHOD} is not a request the ACS can send")
        self._outbound(_Out.REQUEST)
        if cwmp_id is None:
            self._counter += 1
            cwmp_id = f"{self.session_id}.{self._counter}"
        if not cwmp_id or cwmp_id in self._pending:
            raise AcsProtocolError(f"cwmp:ID {cwmp_id!r} is empty or already outstanding")
        body = self._build(request, cwmp_id, hold_requests=hold_requests)
        self._pending[cwmp_id] = PendingRequest(cwmp_id, request, now)
        self._replied(_Out.REQUEST, now, hold=bool(hold_requests), had_request=True)
        return Outgoing(200, body, cwmp_id, request)

    def end(self, *, now: float) -> Outgoing:
        """No more ACS requests: an empty 204 (T2). Re-enables CPE requests (T10)."""
        self._outbound(_Out.END)
        self._replied(_Out.END, now, hold=False, had_request=False)
        return Outgoing(204, b"")

    def _outbound(self, kind: _Out) -> None:
        if self._state is State.CLOSED:
            raise AcsProtocolError("session is closed")
        if (self._state, kind) not in OUTBOUND:
            raise AcsProtocolError(f"cannot send {kind} in state {self._state}")

    def _replied(self, kind: _Out, now: float, *, hold: bool, had_request: bool) -> None:
        self._state = OUTBOUND[(self._state, kind)]
        self._owed = None
        self._last_reply_hold = hold
        self._last_reply_had_request = had_request
        self.last_activity = now
        if self._state is State.AWAIT_INFORM:  # 8005 to the Inform: it will come again
            self._version_incompatible = False

    def _build(
        self,
        message: CwmpMessage | CwmpFault,
        cwmp_id: str | None,
        *,
        hold_requests: bool | None = None,
        use_cwmp_version: str | None = None,
    ) -> bytes:
        return build_envelope(
            message,
            cwmp_ns=self.cwmp_ns or CWMP_NS_1_0,
            cwmp_id=cwmp_id,
            hold_requests=hold_requests,
            use_cwmp_version=use_cwmp_version,
            boolean_literal=self.boolean_literal,
        )

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able snapshot of the whole session state."""
        owed = None
        if self._owed is not None:
            owed = {"cwmp_id": self._owed[0], "method": self._owed[1], "response": self._owed[2]}
        device_id = None
        if self.device_id is not None:
            d = self.device_id
            device_id = {
                "manufacturer": d.manufacturer,
                "oui": d.oui,
                "product_class": d.product_class,
                "serial_number": d.serial_number,
            }
        return {
            "snapshot_version": _SNAPSHOT_VERSION,
            "session_id": self.session_id,
            "state": self._state.value,
            "cwmp_ns": self.cwmp_ns,
            "use_cwmp_version": self.use_cwmp_version,
            "session_timeout": self.session_timeout,
            "default_timeout": self.default_timeout,
            "acs_versions": list(self.acs_versions),
            "boolean_literal": self.boolean_literal.value,
            "created_at": self.created_at,
            "last_activity": self.last_activity,
            "device_id": device_id,
            "counter": self._counter,
            "pending": [
                {"cwmp_id": p.cwmp_id, "request": rpc_to_dict(p.request), "sent_at": p.sent_at}
                for p in self._pending.values()
            ],
            "owed": owed,
            "version_incompatible": self._version_incompatible,
            "last_reply_hold": self._last_reply_hold,
            "last_reply_had_request": self._last_reply_had_request,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AcsSession:
        """Restore a snapshot made by :meth:`to_dict`. Raises ValueError if it is not one."""
        try:
            if data["snapshot_version"] != _SNAPSHOT_VERSION:
                raise ValueError(f"unsupported session snapshot version {data['snapshot_version']!r}")
            session = cls(
                now=float(data["created_at"]),
                session_id=str(data["session_id"]),
                default_timeout=float(data["default_timeout"]),
                acs_versions=[str(v) for v in data["acs_versions"]],
                boolean_literal=BooleanLiteral(data["boolean_literal"]),
            )
            session._state = State(data["state"])
            session.cwmp_ns = data["cwmp_ns"]
            session.use_cwmp_version = data["use_cwmp_version"]
            session.session_timeout = data["session_timeout"]
            session.last_activity = float(data["last_activity"])
            session.device_id = DeviceId(**data["device_id"]) if data["device_id"] is not None else None
            session._counter = int(data["counter"])
            for entry in data["pending"]:
                request = rpc_from_dict(entry["request"])
                if not isinstance(request, CwmpMessage) or request.METHOD not in METHODS:
                    raise ValueError(f"pending entry is not an ACS request: {entry!r}")
                cwmp_id = str(entry["cwmp_id"])
                session._pending[cwmp_id] = PendingRequest(cwmp_id, request, float(entry["sent_at"]))
            owed = data["owed"]
            if owed is not None:
                session._owed = (owed["cwmp_id"], str(owed["method"]), owed["response"])
            session._version_incompatible = bool(data["version_incompatible"])
            session._last_reply_hold = bool(data["last_reply_hold"])
            session._last_reply_had_request = bool(data["last_reply_had_request"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a session snapshot: {exc!r}") from exc
        return session


def _check_device_id(inform: Inform) -> None:
    """Refuse a DeviceId that cannot name a device (``OUI-PC-`` would be shared by every CPE
    with an empty serial) or whose fields exceed TR-069's sizes."""
    identity = inform.device_id
    for label, value in (("Manufacturer", identity.manufacturer), ("OUI", identity.oui),
                         ("ProductClass", identity.product_class), ("SerialNumber", identity.serial_number)):
        if len(value) > MAX_DEVICE_ID_FIELD:
            raise InvalidDeviceId(f"Inform DeviceId/{label} is {len(value)} characters long "
                                  f"(at most {MAX_DEVICE_ID_FIELD})")
    if not identity.oui.strip():
        raise InvalidDeviceId("Inform DeviceId/OUI is empty")
    if not identity.serial_number.strip():
        raise InvalidDeviceId("Inform DeviceId/SerialNumber is empty")
