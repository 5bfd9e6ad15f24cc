"""The HTTP edge of the gateway as a plain ASGI app: reading bodies safely, writing answers.

A plain ASGI app (not a framework router) because the CWMP endpoint is one POST handler on a hot
path, and because it must control what frameworks hide: refusing a body before reading it,
reading with a deadline, the TCP connection identity, and ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CwmpRequest:
    method: str
    path: str
    target: str  # path plus "?query", as Digest's uri covers it
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    client: tuple[str, int]  # the TCP peer: identifies the connection for cookie-less CPEs
    tls: bool

    @property
    def connection_key(self) -> str:
        return f"{self.client[0]}:{self.client[1]}"


@dataclass(slots=True)
class HttpAnswer:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class ClientGone(Exception):
    pass


def request_headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def read_body(receive: Receive, headers: dict[str, str], max_bytes: int, deadline: float) -> bytes:
    """The whole request body, refused early when it would exceed ``max_bytes``.

    A declared Content-Length above the limit is refused before a byte is read; a chunked body
    (Thomson CPEs) is counted as it arrives. ``deadline`` (seconds) bounds the whole read, so a
    client trickling bytes cannot hold a slot forever.
    """
    declared = headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise BodyTooLarge
        except ValueError:
            pass  # The server layer rejects malformed lengths itself.
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    raise BodyTooLarge
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise BodyTimeout from None
    body = b"".join(chunks)
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in {"gzip", "deflate"} and body:
        body = _decompress(body, encoding, max_bytes)
    return body


def _decompress(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """Inflate a compressed body (icwmp, TR-069 3.4.7) without letting a zip bomb past the limit."""
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        if encoding == "deflate":  # Some send raw deflate without the zlib header.
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            out = inflater.decompress(body, max_bytes + 1)
        else:
            raise
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise BodyTooLarge
    return out


def compress(body: bytes, encoding: str) -> bytes:
    return gzip.compress(body, 5) if encoding == "gzip" else zlib.compress(body, 5)


async def send_answer(send: Send, answer: HttpAnswer) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
    headers.append((b"content-length", str(len(answer.body)).encode()))
    if answer.close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


def plain(status: int, text: str, *, close: bool = False,
          headers: list[tuple[str, str]] | None = None) -> HttpAnswer:
    return HttpAnswer(status, text.encode() + b"\n",
                      [("content-type", "text/plain; charset=utf-8"), *(headers or [])], close)
