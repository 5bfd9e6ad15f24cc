"""What every service process has: health endpoints, metrics, and a graceful server loop.

``/healthz`` says the process is alive (no dependency checked, so Kubernetes does not restart a
pod because MongoDB blipped). ``/readyz`` runs the service's dependency checks and answers 503
with the failing ones named, so the pod is taken out of rotation instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo import AsyncMongoClient

from services.common.forwarding import TrustedProxies
from services.common.settings import Settings

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
ASGIApp = Callable[..., Awaitable[None]]


def add_health_routes(app: FastAPI, checks: dict[str, ReadinessCheck], *, metrics: bool = True) -> None:
    """Mount /healthz, /readyz and (unless ``metrics`` is False: CPE-facing ports) /metrics on ``app``."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        names = list(checks)
        results = await asyncio.gather(*(_safe(checks[name]) for name in names))
        failing = [name for name, ok in zip(names, results, strict=True) if not ok]
        if failing:
            return JSONResponse({"ready": False, "failing": failing}, status_code=503)
        return JSONResponse({"ready": True})

    if not metrics:
        return

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _safe(check: ReadinessCheck) -> bool:
    try:
        return await asyncio.wait_for(check(), 3.0)
    except Exception:
        log.debug("readiness check raised", exc_info=True)
        return False


def mongo_check(client: AsyncMongoClient) -> ReadinessCheck:
    async def check() -> bool:
        await client.admin.command("ping")
        return True

    return check


def with_trusted_proxies(app: ASGIApp, settings: Settings) -> ASGIApp:
    """``app`` seeing clients as ACS_TRUSTED_PROXIES report them (forwarding.py); unchanged
    when none is configured, so forwarding headers are then ignored."""
    networks = settings.trusted_proxy_networks
    return TrustedProxies(app, networks) if networks else app


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to ``serve``.

    uvicorn installs its own SIGTERM/SIGINT handlers per server; with two servers in one process
    (the fileserver) only the last would hear the signal. ``serve`` installs one handler that
    stops them all.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(servers: list[tuple[ASGIApp, int]], settings: Settings, *,
                http_protocol: type | str = "auto") -> None:
    """Run one uvicorn server per (app, port) until SIGTERM/SIGINT, then shut down gracefully.

    uvicorn stops accepting, lets in-flight requests finish (up to the graceful timeout), then
    runs the apps' lifespan shutdown, where services commit offsets and flush producers.
    """
    instances = [
        _Server(uvicorn.Config(with_trusted_proxies(app, settings), host=settings.bind_host, port=port,
                               log_config=None, access_log=False, timeout_graceful_shutdown=20,
                               timeout_keep_alive=65, lifespan="on", http=http_protocol,
                               # uvicorn's own handling trusts 127.0.0.1 by default: off, always.
                               proxy_headers=False))
        for app, port in servers
    ]
    loop = asyncio.get_running_loop()

    def request_exit() -> None:
        for instance in instances:
            instance.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, request_exit)
    await asyncio.gather(*(instance.serve() for instance in instances))
    if any(not instance.started for instance in instances):
        raise SystemExit(1)
