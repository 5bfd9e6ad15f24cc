"""The connection-request listener: one HTTP server for every device of the fleet (A5).

Each device's ConnectionRequestURL is ``http://<cr-host>:<cr-port>/<device index>``. A GET
there must carry Digest credentials matching the device's ManagementServer.
ConnectionRequestUsername/Password (verified with :class:`cwmp.digest.DigestServer`; Basic is
refused, as the checklist asks). Answers:

* 200 (empty body): accepted; the device starts a "6 CONNECTION REQUEST" session at once.
  Several requests before that session starts produce one session.
* 401 + Digest challenge: missing or wrong credentials.
* 503: the device is already in a session or rebooting (A5 allows 503 for "busy").
* 404: no such device; 405: not a GET.

It is a bare ASGI callable served by uvicorn in the simulator's own event loop.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from cwmp.digest import DigestServer

from .device import Device

__all__ = ["ConnectionRequestApp", "bind_socket", "make_server"]

REALM = "cwmp-cpe"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge uvicorn's lifespan start-up and shutdown (the simulator's apps need neither)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class ConnectionRequestApp:
    """ASGI app. ``lookup(index)`` gives the device; ``accept(device)`` triggers its session."""

    def __init__(self, lookup: Callable[[int], Device | None], accept: Callable[[Device], str],
                 count: Callable[[str], None] | None = None) -> None:
        self.lookup = lookup
        self.accept = accept
        self.count = count or (lambda _outcome: None)
        # One verifier for every device: nonces are stateless HMACs, so this costs nothing
        # per device. The secret lives as long as the process.
        self.digest = DigestServer(REALM, secrets.token_bytes(32))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        status, headers = self._handle(scope)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", b"0"), *headers]})
        await send({"type": "http.response.body", "body": b""})

    def _handle(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]]]:
        path = scope["path"].strip("/")
        device = self.lookup(int(path)) if path.isdigit() else None
        if device is None:
            self.count("unknown device")
            return 404, []
        if scope["method"] not in ("GET", "HEAD"):
            return 405, [(b"allow", b"GET")]
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        username, password = device.cr_credentials
        result = self.digest.verify(
            scope["method"], target, authorization,
            lambda name: password if name == username else None,
        )
        if not result.ok:
            self.count("unauthorized")
            challenge = self.digest.challenge(stale=result.stale)
            return 401, [(b"www-authenticate", challenge.encode("latin-1"))]
        outcome = self.accept(device)
        self.count(outcome)
        return (200, []) if outcome == "accepted" else (503, [(b"retry-after", b"5")])


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind now, so that the port (possibly ephemeral) is known before the devices boot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def make_server(app: ConnectionRequestApp) -> uvicorn.Server:
    """A uvicorn server for ``app``; run it with ``await server.serve(sockets=[bound_socket])``."""
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                            timeout_keep_alive=5)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return server
