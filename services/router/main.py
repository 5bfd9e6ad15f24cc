"""`acs router`: the northbound entry point on ACS_API_PORT (7557)."""

from __future__ import annotations

from services.common.preflight import check_port_free
from services.common.service import serve
from services.common.settings import Settings
from services.router.app import create_app


async def run(settings: Settings) -> None:
    check_port_free(settings.bind_host, settings.api_port, "ACS_API_PORT")
    await serve([(create_app(settings), settings.api_port)], settings)
