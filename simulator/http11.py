"""A lean HTTP/1.1 client connection for CWMP sessions: httptools over asyncio streams.

Why not httpx here: measured on the benchmark host (docs/simulator.md), an httpx request costs
0.8-1 ms of CPU (httpx -> httpcore -> anyio -> asyncio). h11 on a bare asyncio stream cost about
0.15 ms, but that was still a third of the simulator's CPU in `acs bench`, where the simulator
shares two cores with the ACS it measures. httptools (llhttp, in C; uvicorn's parser) parses the
responses: framing, chunked bodies, keep-alive and Connection: close are its work, not ours.
Requests are simple to write (our own method, target and headers), so they are formatted here,
refusing any header that would break the framing.

A :class:`Connection` serves one request at a time (a CPE never pipelines, T2). When the server
closes it (Connection: close, idle keep-alive timeout), the next request opens a new TCP
connection: the CPE "continues the same session on a new TCP connection" (T6).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

__all__ = ["Connection", "ConnectionClosed", "HttpError", "Origin", "Response", "origin_of"]

MAX_BODY = 16 * 1024 * 1024  # an ACS reply larger than this is not a CWMP message
MAX_HEAD = 64 * 1024  # status line and headers together
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


def format_request(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """The request's bytes; a CR or LF in any part is refused (it would forge framing)."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if any("\r" in line or "\n" in line for line in lines):
        raise HttpError("a request line or header contains CR or LF")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


class _ResponseParts:
    """Receives httptools' callbacks for one response (1xx interim responses are skipped)."""

    __slots__ = ("body", "complete", "headers", "interim", "keep_alive", "parser", "size", "status", "too_large")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.complete = False
        self.keep_alive = False
        self.interim = False
        self.too_large = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.interim = 100 <= self.status < 200

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY:
            self.too_large = True  # raised after feed_data: an exception here would be wrapped
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.interim:  # 100 Continue and the like: the real response follows
            self.headers.clear()
            self.interim = False
            return
        self.complete = True
        # Asked here: once the message is done, the parser has reset what it knew.
        self.keep_alive = self.parser.should_keep_alive()


class Connection:
    """One client connection to ``origin``; opened lazily, reopened after the server closes it."""

    __slots__ = ("_reader", "_writer", "connects", "origin", "ssl_context", "user_agent")

    def __init__(self, origin: Origin, *, user_agent: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self.origin = origin
        self.user_agent = user_agent
        self.ssl_context = ssl_context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
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
        self.connects += 1

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
                      answer_within: float) -> Response:
        """One exchange. Retries once on a fresh connection if a reused one was found closed."""
        data = format_request(method, target, [("Host", self.origin.host_header), ("User-Agent", self.user_agent),
                                               ("Content-Length", str(len(body))), *headers], body)
        reused = self.is_open
        try:
            async with asyncio.timeout(answer_within):
                try:
                    return await self._exchange(data)
                except ConnectionClosed:
                    if not reused:
                        raise
                    # The server dropped an idle keep-alive connection: not a failure of this
                    # request, which never reached it. Try once more on a new connection.
                    await self.close()
                    return await self._exchange(data)
        except TimeoutError:
            await self.close()
            raise HttpError(f"timeout: no answer within {answer_within:g} s") from None
        except HttpError:
            await self.close()
            raise

    async def _exchange(self, data: bytes) -> Response:
        if not self.is_open:
            await self._connect()
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        try:
            writer.write(data)
            await writer.drain()
        except ConnectionError as exc:
            raise ConnectionClosed(f"send failed: {exc}") from None

        parts = _ResponseParts()
        received = 0
        while not parts.complete:
            try:
                chunk = await reader.read(_READ_SIZE)
            except ConnectionError as exc:
                raise ConnectionClosed(f"connection reset: {exc}") from None
            if not chunk:
                if not received:
                    raise ConnectionClosed("server closed the connection")
                if parts.status and _ends_at_close(parts.headers):
                    break  # no length and not chunked: the body runs to the end of the connection
                raise ConnectionClosed("server closed the connection mid-response")
            received += len(chunk)
            try:
                parts.parser.feed_data(chunk)
            except httptools.HttpParserUpgrade:
                raise HttpError("malformed HTTP response: unexpected protocol upgrade") from None
            except httptools.HttpParserError as exc:
                raise HttpError(f"malformed HTTP response: {exc}") from None
            if parts.too_large:
                raise HttpError(f"response body larger than {MAX_BODY} bytes")
            if not parts.status and received > MAX_HEAD:
                raise HttpError(f"response head larger than {MAX_HEAD} bytes")
        if not parts.keep_alive:
            await self.close()  # Connection: close, HTTP/1.0, or a body ended by the close
        return Response(parts.status, parts.headers, b"".join(parts.body))

    async def close(self) -> None:
        writer = self._writer
        self._reader = self._writer = None
        if writer is not None:
            writer.close()
            try:
                # Bounded: a peer that vanished must not keep the fleet from stopping.
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (ConnectionError, ssl.SSLError, TimeoutError):
                pass  # already gone: nothing to clean up


def _ends_at_close(headers: list[tuple[str, str]]) -> bool:
    return not any(name in ("content-length", "transfer-encoding") for name, _ in headers)
