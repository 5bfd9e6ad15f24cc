"""`acs orchestrator`: the cwmp.inbound consumer, the sweep and the API on ACS_ORCHESTRATOR_PORT (7560)."""

from __future__ import annotations

from services.bus.events import TOPIC_CAMPAIGN_EVENTS, TOPIC_DEVICE_EVENTS, TOPIC_INBOUND, TOPIC_REPLIES
from services.bus.kafka import wait_for_topics
from services.common.preflight import check_kafka, check_mongodb, check_port_free
from services.common.service import serve
from services.common.settings import Settings
from services.orchestrator.app import create_app
from services.orchestrator.runtime import OrchestratorRuntime

PREFLIGHT_SECONDS = 30.0


async def run(settings: Settings) -> None:
    check_port_free(settings.bind_host, settings.orchestrator_port, "ACS_ORCHESTRATOR_PORT")
    await check_mongodb(settings, PREFLIGHT_SECONDS)
    await check_kafka(settings, PREFLIGHT_SECONDS)
    # The consumer cannot join a group on a topic that does not exist yet (first start); topics
    # are made by `acs topics` (or `acs up`) with their layout, never by a service.
    await wait_for_topics(settings, [TOPIC_INBOUND, TOPIC_REPLIES, TOPIC_DEVICE_EVENTS, TOPIC_CAMPAIGN_EVENTS],
                          PREFLIGHT_SECONDS)
    runtime = OrchestratorRuntime(settings, sweep_interval=settings.sweep_interval)
    # The app's lifespan starts the runtime and closes it on SIGTERM: consumer stopped (offsets
    # of handled events committed), producer flushed, clients closed.
    await serve([(create_app(runtime), settings.orchestrator_port)], settings)
