"""Sans-I/O state machine for the CPE side of one CWMP session (h11 style).

The runner sends what :meth:`CpeSession.start` returns, then feeds every ACS HTTP reply to
:meth:`CpeSession.receive` and sends what it returns, until it returns None (the session
ended well) or raises :class:`SessionFailed`. HTTP concerns (401 challenges, cookies,
redirects) stay in the transport; only the final reply to each POST arrives here.

The rules played (checklist T5, T9-T15, T21, T26):

* the Inform goes first; 8005 to it means "send it again" (at most ``max_retry_requests``
  times); any other fault, or anything but an InformResponse, fails the session;
* after the InformResponse, pending TransferCompletes go one at a time, unless the ACS set
  HoldRequests; then an empty POST (no Content-Type, no SOAPAction);
* every ACS request is answered with its response or a fault, echoing its cwmp:ID and its
  namespace; methods the device does not implement get 9000, a malformed request 9003;
* a 204 ends the session unless the CPE still has requests (a 204 lifts HoldRequests);
* events and TransferCompletes are acknowledged to the device only when the ACS answered them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from cwmp.codec import (
    CWMP_NS_1_0,
    CWMP_NS_1_1,
    CWMP_NS_1_2,
    Envelope,
    InvalidField,
    MalformedEnvelope,
    MissingField,
    UnknownMethod,
    build_envelope,
    is_empty_body,
    parse_envelope,
)
from cwmp.faults import AcsFault, CpeFault, CwmpFault
from cwmp.models import (
    CwmpMessage,
    DUStateChangeComplete,
    Inform,
    MessageKind,
    RequestDownload,
    TransferComplete,
)

from .device import Device

__all__ = ["CWMP_VERSIONS", "CpeSession", "Outgoing", "SessionFailed"]

# An xsd:boolean value written as a word (what a bool_style=numeric CPE refuses).
_BOOLEAN_WORD = re.compile(rb'type="xsd:boolean"[^>]*>\s*(?:true|false)\s*<', re.IGNORECASE)

# --cwmp-version -> (namespace, SupportedCWMPVersions header or None)
CWMP_VERSIONS: dict[str, tuple[str, str | None]] = {
    "1.0": (CWMP_NS_1_0, None),
    "1.1": (CWMP_NS_1_1, None),
    "1.2": (CWMP_NS_1_2, None),
    "1.4": (CWMP_NS_1_2, "1.0,1.1,1.2,1.3,1.4"),  # 1.3/1.4 reuse the cwmp-1-2 namespace (§0)
}


class SessionFailed(Exception):
    """The session did not end normally; the device retries with backoff (T15, T16)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class OutKind(StrEnum):
    REQUEST = "request"  # Inform, TransferComplete
    RESPONSE = "response"  # a response or a fault to an ACS request
    EMPTY = "empty"  # the empty POST


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One POST to send. ``body`` is b"" for the empty POST."""

    kind: OutKind
    body: bytes
    method: str | None = None


class _Phase(StrEnum):
    INFORM = "inform"  # the Inform is outstanding
    REQUEST = "request"  # a TransferComplete is outstanding
    IDLE = "idle"  # we sent an empty POST or a response: the ACS's turn
    DONE = "done"


class CpeSession:
    """One session of one device. See the module docstring."""

    def __init__(self, device: Device, *, url: str, cwmp_version: str = "1.2",
                 max_retry_requests: int = 5, max_messages: int = 2000,
                 session_timeout: int | None = 30) -> None:
        self.device = device
        self.url = url
        self.cwmp_ns, self.supported_versions = CWMP_VERSIONS[cwmp_version]
        # The SessionTimeout header exists from CWMP 1.3 on (T12).
        self.session_timeout = session_timeout if self.supported_versions else None
        self.max_retry_requests = max_retry_requests
        self.max_messages = max_messages
        self.inform: Inform | None = None
        self.rpcs: list[str] = []  # ACS methods answered, in order
        self.faults_sent: list[int] = []
        self.messages = 0
        self._boolean_words = False  # the last ACS envelope wrote an xsd:boolean value as true/false
        self.use_cwmp_version: str | None = None
        # True once the ACS answered the Inform with an InformResponse (it took the Inform).
        self._phase = _Phase.INFORM
        self._requests: list[TransferComplete | DUStateChangeComplete | RequestDownload] = []
        self._current: tuple[CwmpMessage, bytes] | None = None  # our outstanding request
        self._retries = 0
        self._hold = False
        self.inform_acked = False  # the ACS answered the Inform with an InformResponse

    @property
    def done(self) -> bool:
        return self._phase is _Phase.DONE

    # -- outbound -------------------------------------------------------------------------

    def start(self) -> Outgoing:
        self.inform = self.device.build_inform(self.url)
        self._requests = list(self.device.pending_requests())
        return self._send_request(self.inform)

    def _send_request(self, message: CwmpMessage) -> Outgoing:
        body = build_envelope(
            message, cwmp_ns=self.cwmp_ns, cwmp_id=self.device.next_cwmp_id(),
            session_timeout=self.session_timeout if isinstance(message, Inform) else None,
            supported_cwmp_versions=self.supported_versions if isinstance(message, Inform) else None,
        )
        self._current = (message, body)
        self._retries = 0
        self._phase = _Phase.INFORM if isinstance(message, Inform) else _Phase.REQUEST
        return Outgoing(OutKind.REQUEST, body, message.METHOD)

    def _next_own(self) -> Outgoing:
        """After an answer to our request: the next request if allowed, else the empty POST."""
        self._current = None
        if self._requests and not self._hold:
            return self._send_request(self._requests[0])
        self._phase = _Phase.IDLE
        return Outgoing(OutKind.EMPTY, b"")

    def _respond(self, message: CwmpMessage | CwmpFault, cwmp_id: str | None, ns: str | None) -> Outgoing:
        body = build_envelope(message, cwmp_ns=ns or self.cwmp_ns, cwmp_id=cwmp_id)
        self._phase = _Phase.IDLE
        return Outgoing(OutKind.RESPONSE, body, message.METHOD)

    # -- inbound --------------------------------------------------------------------------

    def receive(self, status: int, body: bytes, content_type: str | None = None) -> Outgoing | None:
        """Feed the ACS's reply to the last POST; return the next POST, or None when done."""
        if self._phase is _Phase.DONE:
            raise SessionFailed("reply after the session ended")
        self.messages += 1
        if self.messages > self.max_messages:
            raise SessionFailed(f"more than {self.max_messages} messages in one session")
        if status == 204 or (status == 200 and is_empty_body(body)):
            return self._receive_empty()
        if status != 200:
            raise SessionFailed(f"HTTP {status}")
        # The parsed envelope normalises booleans; a CPE strict about their literals reads the wire.
        self._boolean_words = bool(_BOOLEAN_WORD.search(body))
        try:
            envelope = parse_envelope(body, content_type)
        except UnknownMethod as exc:
            return self._unknown_method(exc)
        except (MissingField, InvalidField) as exc:
            return self._malformed_request(exc)
        except MalformedEnvelope as exc:
            raise SessionFailed(f"malformed ACS reply: {exc.reason}") from None
        return self._receive_envelope(envelope)

    def _receive_empty(self) -> Outgoing | None:
        if self._phase in (_Phase.INFORM, _Phase.REQUEST):
            method = self._current[0].METHOD if self._current else "request"
            raise SessionFailed(f"empty reply to {method}")
        # A 204 is the end of the ACS's requests and lifts HoldRequests (T10).
        self._hold = False
        if self._requests:
            return self._send_request(self._requests[0])
        self._phase = _Phase.DONE
        return None

    def _receive_envelope(self, envelope: Envelope) -> Outgoing:
        message = envelope.message
        hold = envelope.header.hold_requests
        self._hold = bool(hold)
        if message is None:
            raise SessionFailed("ACS envelope with an empty Body")
        if self._phase in (_Phase.INFORM, _Phase.REQUEST):
            return self._answer_to_own(envelope, message)
        if isinstance(message, CwmpFault) or message.KIND is not MessageKind.REQUEST:
            raise SessionFailed(f"unexpected {message.METHOD} while no CPE request was outstanding")
        return self._handle_acs_request(envelope, message)

    def _answer_to_own(self, envelope: Envelope, message: CwmpMessage | CwmpFault) -> Outgoing:
        assert self._current is not None
        request, body = self._current
        if isinstance(message, CwmpFault):
            if message.code == AcsFault.RETRY_REQUEST and self._retries < self.max_retry_requests:
                # 8005: send the very same request again (T21).
                self._retries += 1
                return Outgoing(OutKind.REQUEST, body, request.METHOD)
            if isinstance(request, Inform):
                raise SessionFailed(f"Inform faulted: {message.code} {message.string}".rstrip())
            # A faulted TransferComplete stays pending for a later session.
            self._requests.pop(0)
            return self._next_own()
        if message.METHOD == request.RESPONSE:
            if isinstance(request, Inform):
                self.use_cwmp_version = envelope.header.use_cwmp_version
                self.inform_acked = True
                self.device.inform_acked(request, self.url)
            else:
                assert isinstance(request, TransferComplete | DUStateChangeComplete | RequestDownload)
                self.device.transfer_complete_acked(request)
                self._requests.pop(0)
            return self._next_own()
        if isinstance(request, Inform) or message.KIND is not MessageKind.REQUEST:
            expected = request.RESPONSE
            raise SessionFailed(f"expected {expected}, got {message.METHOD}")
        # An ACS request in reply to our TransferComplete breaks T14; answer it anyway and
        # keep the TransferComplete for the next session, as lenient CPEs do.
        self._requests.clear()
        self._current = None
        return self._handle_acs_request(envelope, message)

    def _handle_acs_request(self, envelope: Envelope, message: CwmpMessage) -> Outgoing:
        cwmp_id = envelope.header.id
        self.rpcs.append(message.METHOD)
        try:
            if self._boolean_words and message.METHOD == "SetParameterValues" \
                    and self.device.settings.bool_style == "numeric":
                # The quirk of some agents: only 1/0 are booleans (genieacs#228).
                raise CwmpFault.from_code(CpeFault.INVALID_PARAMETER_VALUE,
                                          "Invalid parameter value: booleans must be 1 or 0")
            response: CwmpMessage | CwmpFault = self.device.handle(message)
        except CwmpFault as fault:
            response = fault
            self.faults_sent.append(fault.code)
        return self._respond(response, cwmp_id, envelope.cwmp_ns)

    def _unknown_method(self, exc: UnknownMethod) -> Outgoing:
        if self._phase in (_Phase.INFORM, _Phase.REQUEST):
            raise SessionFailed(f"unknown method {exc.method} in reply to our request")
        self.rpcs.append(exc.method)
        self.faults_sent.append(CpeFault.METHOD_NOT_SUPPORTED)
        fault = CwmpFault.from_code(CpeFault.METHOD_NOT_SUPPORTED)
        return self._respond(fault, exc.cwmp_id, exc.cwmp_ns)

    def _malformed_request(self, exc: MalformedEnvelope) -> Outgoing:
        if self._phase in (_Phase.INFORM, _Phase.REQUEST):
            raise SessionFailed(f"malformed ACS reply: {exc.reason}")
        self.faults_sent.append(CpeFault.INVALID_ARGUMENTS)
        fault = CwmpFault.from_code(CpeFault.INVALID_ARGUMENTS, f"Invalid arguments: {exc.reason}")
        return self._respond(fault, exc.cwmp_id, exc.cwmp_ns)

    @property
    def event_codes(self) -> tuple[str, ...]:
        if self.inform is None:
            return ()
        return tuple(e.event_code for e in self.inform.event)
