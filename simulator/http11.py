"""A lean HTTP/1.1 client connection for CWMP sessions: h11 over asyncio streams.

Why not httpx here: measured on the benchmark host (docs/simulator.md), an httpx request costs
0.8-1 ms of CPU (httpx -> httpcore -> anyio -> asyncio), against ~0.15 ms for h11 on a bare
asyncio stream; with 3-4 requests per session the HTTP client was 90 % of the simulator's CPU.
httpx's shared pool also degrades with hundreds of connections (it scans them per request).
h11 does all the HTTP parsing and framing (chunked bodies, keep-alive, Connection: close), so
nothing of HTTP is re-implemented here: this module only moves bytes and applies timeouts.

A :class:`Connection` serves one request at a time (a CPE never pipelines, T2). When the server
closes it (Connection: close, idle keep-alive timeout), the next request opens a new TCP
connection: the CPE "continues the same session on a new TCP connection" (T6).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

__all__ = ["Connection", "ConnectionClosed", "HttpError", "Origin", "Response", "origin_of"]

MAX_BODY = 16 * 1024 * 1024  # an ACS reply larger than this is not a CWMP message
_READ_SIZE = 65536


class HttpError(Exception):
    """The exchange failed (connect, timeout, protocol error, oversized reply)."""


class ConnectionClosed(HttpError):
    """The server closed the connection before answering (possibly an idle keep-alive)."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def origin_of(url: str) -> tuple[Origin, str]:
    """``(origin, request target)`` of an http(s) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(scheme, parts.hostname, port), target


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in order (repeated names kept)
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_list(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


class Connection:
    """One client connection to ``origin``; opened lazily, reopened after the server closes it."""

    __slots__ = ("_conn", "_reader", "_writer", "connects", "origin", "ssl_context", "user_agent")

    def __init__(self, origin: Origin, *, user_agent: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self.origin = origin
        self.user_agent = user_agent
        self.ssl_context = ssl_context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._conn: h11.Connection | None = None
        self.connects = 0  # TCP connections opened so far (tests check session affinity)

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def _connect(self) -> None:
        origin = self.origin
        tls = None
        if origin.scheme == "https":
            tls = self.ssl_context or ssl.create_default_context()
        try:
            self._reader, self._writer = await asyncio.open_connection(
                origin.host, origin.port, ssl=tls, server_hostname=origin.host if tls else None,
                limit=_READ_SIZE)
        except OSError as exc:
            raise HttpError(f"connect to {origin.host}:{origin.port} failed: {exc.strerror or exc}") from None
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
        self.connects += 1

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
                      answer_within: float) -> Response:
        """One exchange. Retries once on a fresh connection if a reused one was found closed."""
        reused = self.is_open
        try:
            async with asyncio.timeout(answer_within):
                try:
                    return await self._exchange(method, target, headers, body)
                except ConnectionClosed:
                    if not reused:
                        raise
                    # The server dropped an idle keep-alive connection: not a failure of this
                    # request, which never reached it. Try once more on a new connection.
                    await self.close()
                    return await self._exchange(method, target, headers, body)
        except TimeoutError:
            await self.close()
            raise HttpError(f"timeout: no answer within {answer_within:g} s") from None
        except HttpError:
            await self.close()
            raise

    async def _exchange(self, method: str, target: str, headers: list[tuple[str, str]],
                        body: bytes) -> Response:
        if not self.is_open:
            await self._connect()
        conn, reader, writer = self._conn, self._reader, self._writer
        assert conn is not None and reader is not None and writer is not None
        all_headers = [("Host", self.origin.host_header), ("User-Agent", self.user_agent),
                       ("Content-Length", str(len(body))), *headers]
        try:
            data = conn.send(h11.Request(method=method, target=target, headers=all_headers))
            if body:
                data += conn.send(h11.Data(data=body))  # type: ignore[operator]
            data += conn.send(h11.EndOfMessage())  # type: ignore[operator]
            writer.write(data)  # type: ignore[arg-type]
            await writer.drain()
        except (ConnectionError, h11.LocalProtocolError) as exc:
            raise ConnectionClosed(f"send failed: {exc}") from None

        status = 0
        response_headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        size = 0
        received_any = False
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpError(f"malformed HTTP response: {exc}") from None
            if event is h11.NEED_DATA:
                try:
                    chunk = await reader.read(_READ_SIZE)
                except ConnectionError as exc:
                    raise ConnectionClosed(f"connection reset: {exc}") from None
                if not chunk and not received_any:
                    raise ConnectionClosed("server closed the connection")
                received_any = True
                conn.receive_data(chunk)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue  # 100 Continue and the like
            if isinstance(event, h11.Response):
                status = event.status_code
                response_headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise HttpError(f"response body larger than {MAX_BODY} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionClosed("server closed the connection mid-response")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.close()  # Connection: close, or HTTP/1.0: the next request reconnects
        return Response(status, response_headers, b"".join(chunks))

    async def close(self) -> None:
        writer = self._writer
        self._reader = self._writer = None
        self._conn = None
        if writer is not None:
            writer.close()
            try:
                # Bounded: a peer that vanished must not keep the fleet from stopping.
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (ConnectionError, ssl.SSLError, TimeoutError):
                pass  # already gone: nothing to clean up
