"""The lean HTTP/1.1 connection against canned loopback servers (framing, keep-alive, closes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from simulator.http11 import Connection, HttpError, Origin

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(handler: Serve) -> AsyncIterator[Origin]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield Origin("http", "127.0.0.1", port)
    finally:
        srv.close()
        await srv.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def answering(raw: bytes, *, close: bool = False) -> Serve:
    """A server that reads one request and answers ``raw`` (then closes, if asked)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()
        if close:
            writer.close()
    return handler


async def test_keep_alive_and_content_length() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            head, body = await read_request(reader)
            heads.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Echo: 1\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    async with server(handler) as origin:
        conn = Connection(origin, user_agent="test")
        for body in (b"one", b"", b"three"):
            response = await conn.request("POST", "/cwmp", [("X-A", "b")], body, 5)
            assert (response.status, response.body, response.header("x-echo")) == (200, body, "1")
        await conn.close()
    assert conn.connects == 1  # one TCP connection for the three requests
    assert heads[0].startswith(b"POST /cwmp HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{origin.port}".encode() in heads[0].lower()
    assert b"content-length: 0" in heads[1].lower()


async def test_chunked_response_and_connection_close_reconnects() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    async with server(handler) as origin:
        conn = Connection(origin, user_agent="test")
        assert (await conn.request("POST", "/", [], b"x", 5)).body == b"hello world"
        assert not conn.is_open  # Connection: close honoured
        assert (await conn.request("POST", "/", [], b"x", 5)).body == b"hello world"
        await conn.close()
    assert conn.connects == 2


async def test_idle_connection_closed_by_the_server_is_retried_once() -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()  # drops the keep-alive connection without saying so

    async with server(handler) as origin:
        conn = Connection(origin, user_agent="test")
        assert (await conn.request("POST", "/", [], b"", 5)).status == 204
        await asyncio.sleep(0.05)
        assert (await conn.request("POST", "/", [], b"", 5)).status == 204
        await conn.close()
    assert served == 2 and conn.connects == 2


async def test_timeouts_and_refused_connections_are_http_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with server(silent) as origin:
        conn = Connection(origin, user_agent="test")
        with pytest.raises(HttpError, match="timeout"):
            await conn.request("POST", "/", [], b"", 0.2)
        assert not conn.is_open
    with pytest.raises(HttpError, match="connect to"):
        await Connection(origin, user_agent="test").request("POST", "/", [], b"", 1)


async def test_malformed_response_is_an_http_error() -> None:
    async with server(answering(b"NOT HTTP AT ALL\r\n\r\n")) as origin:
        with pytest.raises(HttpError, match="malformed HTTP response"):
            await Connection(origin, user_agent="test").request("POST", "/", [], b"", 2)


async def test_interim_response_is_skipped_and_a_body_may_end_at_the_close() -> None:
    # One write: the parser meets the 100 and the final response in the same read.
    handler = answering(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Final: yes\r\n\r\nuntil the end",
                        close=True)
    async with server(handler) as origin:
        conn = Connection(origin, user_agent="test")
        response = await conn.request("POST", "/", [], b"x", 5)
        assert (response.status, response.headers, response.body) == (200, [("x-final", "yes")], b"until the end")
        assert not conn.is_open


async def test_truncated_body_oversized_body_and_forged_headers_are_http_errors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with server(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", close=True)) as origin:
        with pytest.raises(HttpError, match="mid-response"):
            await Connection(origin, user_agent="test").request("POST", "/", [], b"", 2)

    monkeypatch.setattr("simulator.http11.MAX_BODY", 32)
    async with server(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + b"x" * 64)) as origin:
        with pytest.raises(HttpError, match="larger than 32 bytes"):
            await Connection(origin, user_agent="test").request("POST", "/", [], b"", 2)

    with pytest.raises(HttpError, match="CR or LF"):
        await Connection(Origin("http", "127.0.0.1", 9), user_agent="test").request(
            "POST", "/", [("Cookie", "a=b\r\nX-Injected: 1")], b"", 1)
