"""`acs gateway`: the CWMP endpoint for CPEs on ACS_GATEWAY_PORT (7547), metrics and probes on
ACS_GATEWAY_ADMIN_PORT (7548)."""

from __future__ import annotations

from services.bus.events import TOPIC_INBOUND, TOPIC_REPLIES
from services.bus.kafka import wait_for_topics
from services.common.preflight import check_kafka, check_mongodb, check_port_free
from services.common.service import serve
from services.common.settings import Settings
from services.gateway.admin import GatewayAdminApp
from services.gateway.app import GatewayApp
from services.gateway.protocol import with_header_timeout


async def run(settings: Settings) -> None:
    check_port_free(settings.bind_host, settings.gateway_port, "ACS_GATEWAY_PORT")
    check_port_free(settings.bind_host, settings.gateway_admin_port, "ACS_GATEWAY_ADMIN_PORT")
    await check_mongodb(settings, settings.startup_wait)
    await check_kafka(settings, settings.startup_wait)
    # Topics are made by `acs topics` (or `acs up`) with their layout, never by a service.
    await wait_for_topics(settings, [TOPIC_INBOUND, TOPIC_REPLIES], settings.startup_wait)
    gateway = GatewayApp(settings)
    await serve([(gateway, settings.gateway_port), (GatewayAdminApp(gateway), settings.gateway_admin_port)], settings,
                http_protocol=with_header_timeout(settings.request_header_timeout))
