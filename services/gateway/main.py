"""`acs gateway`: the CWMP endpoint for CPEs on ACS_GATEWAY_PORT (7547)."""

from __future__ import annotations

from services.bus.kafka import ensure_topics
from services.common.preflight import check_kafka, check_mongodb, check_port_free
from services.common.service import serve
from services.common.settings import Settings
from services.gateway.app import GatewayApp
from services.gateway.protocol import with_header_timeout


async def run(settings: Settings) -> None:
    check_port_free(settings.bind_host, settings.gateway_port, "ACS_GATEWAY_PORT")
    await check_mongodb(settings, settings.startup_wait)
    await check_kafka(settings, settings.startup_wait)
    await ensure_topics(settings)
    await serve([(GatewayApp(settings), settings.gateway_port)], settings,
                http_protocol=with_header_timeout(settings.request_header_timeout))
