"""The gateway's admin listener (ACS_GATEWAY_ADMIN_PORT, 7548): ``/metrics``, ``/healthz``, ``/readyz``.

Prometheus metrics name devices' activity, and the CWMP port faces every CPE (and whoever else
reaches it): metrics are served here only, on a port that stays inside the deployment (in
Kubernetes: the Service's ``metrics`` port, which no Ingress routes). The probes answer here too,
and, bare (no detail), on the CWMP port, for load balancers that check the port they balance.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.gateway.app import GatewayApp
from services.gateway.http import HttpAnswer, Receive, Scope, Send, plain, send_answer


class GatewayAdminApp:
    """Plain ASGI, next to a :class:`GatewayApp` whose state (readiness) it reports."""

    def __init__(self, gateway: GatewayApp) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the GatewayApp's own lifespan starts and stops everything
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            await send_answer(send, plain(405, "GET only", headers=[("allow", "GET")]))
        elif path == "/metrics":
            await send_answer(send, HttpAnswer(200, generate_latest(), [("content-type", CONTENT_TYPE_LATEST)]))
        elif path == "/healthz":
            await send_answer(send, plain(200, "ok"))
        elif path == "/readyz":
            ready = await self.gateway.ready()
            await send_answer(send, plain(200 if ready else 503, "ready" if ready else "not ready"))
        else:
            await send_answer(send, plain(404, "not found"))
