"""The northbound router: path routing, byte-exact forwarding, and upstreams that are down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn

from acs.infra import free_port
from services.common.settings import Settings
from services.router.app import create_app, upstream_for


@contextlib.asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


def recorder(name: str, seen: list[tuple[str, str, str, bytes]]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append((name, scope["raw_path"].decode(), scope["query_string"].decode(), body))
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-upstream", name.encode())]})
        await send({"type": "http.response.body", "body": name.encode()})

    return app


def test_routes_match_the_ingress_rules() -> None:
    settings = Settings(orchestrator_url="http://o", inventory_url="http://i", fileserver_url="http://f")
    assert upstream_for("/api/v1/devices/00D09E-Box-1/tasks", settings) == "http://o"
    assert upstream_for("/api/v1/devices/00D09E-Box-1/tasks/x", settings) == "http://o"
    assert upstream_for("/api/v1/devices/00D09E-Box-1", settings) == "http://i"
    assert upstream_for("/api/v1/devices", settings) == "http://i"
    assert upstream_for("/api/v1/credentials", settings) == "http://i"
    assert upstream_for("/api/v1/tasks", settings) == "http://o"
    assert upstream_for("/api/v1/files/fw.bin", settings) == "http://f"
    assert upstream_for("/api/v1/filesystem", settings) is None
    assert upstream_for("/api/v2/devices", settings) is None


async def test_forwards_encoded_paths_queries_and_bodies_untouched() -> None:
    seen: list[tuple[str, str, str, bytes]] = []
    ports = {name: free_port() for name in ("o", "i", "f", "router")}
    settings = Settings(orchestrator_url=f"http://127.0.0.1:{ports['o']}",
                        inventory_url=f"http://127.0.0.1:{ports['i']}",
                        fileserver_url=f"http://127.0.0.1:{ports['f']}")
    async with serving(recorder("orchestrator", seen), ports["o"]), \
            serving(recorder("inventory", seen), ports["i"]), \
            serving(create_app(settings), ports["router"]):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['router']}") as client:
            device = await client.get("/api/v1/devices/00D09E-DEV%252DSIM-1?fields=a.b&limit=2")
            task = await client.post("/api/v1/devices/00D09E-DEV%252DSIM-1/tasks", content=b'{"name":"reboot"}')
            files = await client.get("/api/v1/files")  # its upstream is down
            unknown = await client.get("/api/v1/nothing")
    assert (device.status_code, device.text, device.headers["x-upstream"]) == (201, "inventory", "inventory")
    assert seen[0] == ("inventory", "/api/v1/devices/00D09E-DEV%252DSIM-1", "fields=a.b&limit=2", b"")
    assert task.status_code == 201
    assert seen[1] == ("orchestrator", "/api/v1/devices/00D09E-DEV%252DSIM-1/tasks", "", b'{"name":"reboot"}')
    assert files.status_code == 503 and files.headers["retry-after"]
    assert unknown.status_code == 404


def test_console_and_stats_routes() -> None:
    settings = Settings(orchestrator_url="http://o", inventory_url="http://i", fileserver_url="http://f")
    assert upstream_for("/api/v1/stats/tasks", settings) == "http://o"
    assert upstream_for("/api/v1/stats/devices", settings) == "http://i"
    assert upstream_for("/api/v1/stats/other", settings) is None


async def test_serves_the_console_and_keeps_no_upstream_cookie() -> None:
    """/ and /console/* go to the console; the Set-Cookie of one user's sign-in reaches that user
    only: the router's client must not keep it and send it along with the next user's requests."""
    seen: list[tuple[str, str | None]] = []

    async def console(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        cookie = dict(scope["headers"]).get(b"cookie")
        seen.append((scope["path"], cookie.decode() if cookie else None))
        headers = [(b"set-cookie", b"acs_session=secret-token; Path=/; HttpOnly; SameSite=Strict")] \
            if scope["path"] == "/console/api/session" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"console"})

    ports = {name: free_port() for name in ("c", "router")}
    settings = Settings(console_url=f"http://127.0.0.1:{ports['c']}")
    async with serving(console, ports["c"]), serving(create_app(settings), ports["router"]):
        base = f"http://127.0.0.1:{ports['router']}"
        async with httpx.AsyncClient(base_url=base) as first, httpx.AsyncClient(base_url=base) as second:
            signed_in = await first.post("/console/api/session", content=b"{}")
            page = await second.get("/")
            assets = await second.get("/console/assets/app.js")
    assert signed_in.headers["set-cookie"].startswith("acs_session=secret-token")
    assert (page.status_code, page.text, assets.text) == (200, "console", "console")
    assert seen == [("/console/api/session", None), ("/", None), ("/console/assets/app.js", None)]
