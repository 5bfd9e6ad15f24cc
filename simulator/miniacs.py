"""A tiny scripted ACS for the simulator's tests and benchmarks (not the real gateway).

It runs the ACS side of each session with :class:`cwmp.session.AcsSession`, so any protocol
mistake of the simulator (a request before the Inform, pipelining, a wrong cwmp:ID) surfaces as
a :class:`cwmp.session.CpeProtocolError`, counted in ``violations`` and answered with 400.

* Authentication: Digest (realm "acs"), Basic, or none; ``password_for(username)`` decides.
* Sessions are keyed by the ``acs_session`` cookie, or by the TCP connection for CPEs that
  ignore cookies (checklist Q8).
* ``plan(inform)`` gives the RPCs to send after the Inform; ``on_event(state, event)`` may
  append more as answers arrive (``state.queue``). Without a plan: InformResponse, then 204.
* ``/files/<name>``: GET with Digest on ``file_credentials``; ``/upload/<name>``: PUT.

Run it alone for benchmarks: ``python -m simulator.miniacs --port 7547``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from cwmp.codec import MalformedEnvelope
from cwmp.digest import DigestServer, basic_challenge, parse_basic
from cwmp.faults import AcsFault, CwmpFault
from cwmp.httputil import format_set_cookie, parse_cookie_header
from cwmp.models import CwmpMessage, Inform, InformResponse
from cwmp.session import (
    AcsSession,
    CpeProtocolError,
    EmptyPostReceived,
    Event,
    FaultReceived,
    InformReceived,
    RequestReceived,
    ResponseReceived,
    SessionOver,
    UnknownMethodReceived,
    VersionIncompatible,
    default_response,
)

from .connreq import Receive, Scope, Send, answer_lifespan

__all__ = ["MiniAcs", "SessionState", "eventually", "main", "serving"]

_COOKIE = "acs_session"
_MAX_BODY = 8 * 1024 * 1024


@dataclass
class SessionState:
    """What the mini ACS knows about one running session (handed to plan hooks)."""

    session: AcsSession
    inform: Inform | None = None
    queue: list[CwmpMessage] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    ended: bool = False  # the ACS has sent its 204

    @property
    def device_id(self) -> str:
        d = self.session.device_id
        return f"{d.oui}-{d.product_class}-{d.serial_number}" if d else ""


class MiniAcs:
    """ASGI app; see the module docstring."""

    def __init__(
        self,
        *,
        auth: str = "digest",
        password_for: Callable[[str], str | None] | None = None,
        plan: Callable[[Inform], list[CwmpMessage]] | None = None,
        on_event: Callable[[SessionState, Event], None] | None = None,
        hold_requests: bool = False,
        files: dict[str, bytes] | None = None,
        file_credentials: tuple[str, str] | None = None,
        record: bool = True,
    ) -> None:
        if auth not in ("digest", "basic", "none"):
            raise ValueError(f"auth must be digest, basic or none, not {auth!r}")
        self.auth = auth
        self.password_for = password_for or (lambda _username: "")
        self.plan = plan
        self.on_event = on_event
        self.hold_requests = hold_requests
        self.files = files if files is not None else {}
        self.file_credentials = file_credentials
        self.uploads: dict[str, bytes] = {}
        self.record = record
        self.digest = DigestServer("acs", secrets.token_bytes(32))
        self.file_digest = DigestServer("files", secrets.token_bytes(32))
        self.sessions: dict[str, SessionState] = {}
        self._by_connection: dict[tuple[str, int], str] = {}
        self._ended: deque[tuple[float, str, tuple[Any, ...]]] = deque()
        self.ended_ttl = 30.0  # seconds an ended session still accepts CPE requests
        # What the CPEs sent, in order: (session id, event); kept only when record=True.
        self.log: list[tuple[str, Event]] = []
        self.violations: list[str] = []
        self.auth_failures = 0
        self.sessions_completed = 0
        self.file_requests: list[tuple[str, str, int]] = []  # (method, path, status)

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        if path.startswith("/files/"):
            status, extra, payload = self._file(scope, headers, path)
        elif path.startswith("/upload/"):
            status, extra, payload = self._upload(scope, headers, path, body)
        else:
            status, extra, payload = self._cwmp(scope, headers, body)
        response_headers = [(b"content-length", str(len(payload)).encode())]
        response_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})

    # -- authentication ------------------------------------------------------------------

    def _authenticated(self, scope: Scope, headers: dict[str, str]) -> bool:
        if self.auth == "none":
            return True
        header = headers.get("authorization")
        if header is None:
            return False
        if self.auth == "basic":
            pair = parse_basic(header)
            return pair is not None and self.password_for(pair[0]) == pair[1]
        result = self.digest.verify(scope["method"], _target(scope), header, self.password_for)
        return result.ok

    def _challenge(self) -> list[tuple[str, str]]:
        if self.auth == "basic":
            return [("www-authenticate", basic_challenge("acs"))]
        return [("www-authenticate", self.digest.challenge())]

    # -- CWMP -----------------------------------------------------------------------------

    def _cwmp(self, scope: Scope, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        if scope["method"] != "POST":
            return 405, [("allow", "POST")], b""
        if not self._authenticated(scope, headers):
            if "authorization" in headers:
                self.auth_failures += 1
            return 401, self._challenge(), b""
        client = tuple(scope.get("client") or ("", 0))
        session_id = parse_cookie_header(headers.get("cookie")).get(_COOKIE)
        via_connection = session_id not in self.sessions
        if via_connection:
            session_id = self._by_connection.get(client)  # type: ignore[arg-type]
        state = self.sessions.get(session_id) if session_id else None
        extra: list[tuple[str, str]] = []
        now = time.monotonic()
        self._expire(now)
        for attempt in range(2):
            if state is None:
                state = SessionState(AcsSession(now=now))
                session_id = state.session.session_id
                self.sessions[session_id] = state
                extra.append(("set-cookie", format_set_cookie(_COOKIE, session_id)))
            assert session_id is not None
            self._by_connection[client] = session_id  # type: ignore[index]
            try:
                event = state.session.receive_body(body, headers.get("content-type"), now=now)
                break
            except CpeProtocolError as exc:
                if attempt == 0 and (isinstance(exc, SessionOver) or via_connection):
                    # An Inform after the session ended, or on a keep-alive connection that
                    # another CPE's session used (shared pools, proxies: genieacs#281): new session.
                    self._ended.append((now, session_id, ()))
                    state = None
                    continue
                self.violations.append(f"{state.device_id}: {exc.reason}")
                self._forget(session_id, client)
                return 400, [("connection", "close")], exc.reason.encode()
            except MalformedEnvelope as exc:
                self.violations.append(f"{state.device_id}: malformed: {exc.reason}")
                self._forget(session_id, client)
                return 400, [("connection", "close")], exc.reason.encode()
        if self.record:
            self.log.append((session_id, event))
            state.events.append(event)
        out = self._reply(state, event)
        if out.status == 204 and not state.ended:
            # Kept a while: a 204 lifts HoldRequests and the CPE may still send a request (T10).
            state.ended = True
            self.sessions_completed += 1
            self._ended.append((now, session_id, client))
        return out.status, ([("content-type", 'text/xml; charset="utf-8"')] if out.body else []) + extra, out.body

    def _expire(self, now: float) -> None:
        while self._ended and now - self._ended[0][0] > self.ended_ttl:
            _t, session_id, client = self._ended.popleft()
            self._forget(session_id, client)

    def _reply(self, state: SessionState, event: Event) -> Any:
        session = state.session
        now = time.monotonic()
        if isinstance(event, InformReceived):
            state.inform = event.inform
            if self.plan is not None:
                state.queue.extend(self.plan(event.inform))
            return session.respond(InformResponse(), now=now, hold_requests=self.hold_requests or None)
        if isinstance(event, VersionIncompatible):
            return session.respond_fault(CwmpFault.from_code(AcsFault.VERSION_INCOMPATIBLE), now=now)
        if isinstance(event, RequestReceived):
            if self.on_event is not None:
                self.on_event(state, event)
            return session.respond(default_response(event.request), now=now)
        if isinstance(event, UnknownMethodReceived):
            return session.respond_fault(CwmpFault.from_code(AcsFault.METHOD_NOT_SUPPORTED), now=now)
        assert isinstance(event, ResponseReceived | FaultReceived | EmptyPostReceived)
        if self.on_event is not None:
            self.on_event(state, event)
        if state.queue:
            return session.send_request(state.queue.pop(0), now=now)
        return session.end(now=now)

    def _forget(self, session_id: str, client: tuple[Any, ...]) -> None:
        self.sessions.pop(session_id, None)
        if self._by_connection.get(client) == session_id:  # type: ignore[arg-type]
            del self._by_connection[client]  # type: ignore[arg-type]

    # -- files ----------------------------------------------------------------------------

    def _file_auth(self, scope: Scope, headers: dict[str, str]) -> bool:
        if self.file_credentials is None:
            return True
        user, password = self.file_credentials
        result = self.file_digest.verify(scope["method"], _target(scope), headers.get("authorization"),
                                         lambda name: password if name == user else None)
        return result.ok

    def _file(self, scope: Scope, headers: dict[str, str], path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        name = path[len("/files/"):]
        if not self._file_auth(scope, headers):
            self.file_requests.append((scope["method"], path, 401))
            return 401, [("www-authenticate", self.file_digest.challenge())], b""
        data = self.files.get(name)
        status = 404 if data is None else 200
        self.file_requests.append((scope["method"], path, status))
        if data is None:
            return 404, [], b""
        return 200, [("content-type", "application/octet-stream")], data

    def _upload(self, scope: Scope, headers: dict[str, str], path: str,
                body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        if scope["method"] != "PUT":
            return 405, [("allow", "PUT")], b""
        if not self._file_auth(scope, headers):
            self.file_requests.append(("PUT", path, 401))
            return 401, [("www-authenticate", self.file_digest.challenge())], b""
        self.uploads[path[len("/upload/"):]] = body
        self.file_requests.append(("PUT", path, 201))
        return 201, [], b""

    def received(self, kind: type) -> list[Any]:
        """Every recorded event of one type, e.g. ``received(InformReceived)``."""
        return [event for _sid, event in self.log if isinstance(event, kind)]


def _target(scope: Scope) -> str:
    target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    return target


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise ValueError("request body too large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


@contextlib.asynccontextmanager
async def serving(app: Any, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in this loop; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                           timeout_keep_alive=30))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.005)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        sock.close()


async def eventually(predicate: Callable[[], bool], seconds: float = 10.0, step: float = 0.02) -> None:
    """Poll ``predicate`` while the fleet and the ACS run in this loop; AssertionError if never true."""
    for _ in range(max(1, int(seconds / step))):
        if predicate():
            return
        await asyncio.sleep(step)
    if not predicate():
        raise AssertionError(f"condition still false after {seconds} s")


def main(argv: list[str] | None = None) -> int:
    """``python -m simulator.miniacs``: an ACS that answers Informs and ends sessions."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m simulator.miniacs", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7547)
    parser.add_argument("--auth", choices=("digest", "basic", "none"), default="none")
    parser.add_argument("--password", default="", help="password every username must use")
    args = parser.parse_args(argv)
    acs = MiniAcs(auth=args.auth, password_for=lambda _u: args.password, record=False)
    config = uvicorn.Config(acs, host=args.host, port=args.port, log_config=None, access_log=False,
                            lifespan="off", timeout_keep_alive=30, backlog=4096)
    try:
        asyncio.run(uvicorn.Server(config).serve())
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
