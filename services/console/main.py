"""`acs console`: the operator console on ACS_CONSOLE_PORT (7563), served at / by the router."""

from __future__ import annotations

from services.common.preflight import check_mongodb, check_port_free
from services.common.service import serve
from services.common.settings import Settings
from services.console.app import create_app

STARTUP_TIMEOUT = 60.0


async def run(settings: Settings) -> None:
    check_port_free(settings.bind_host, settings.console_port, "ACS_CONSOLE_PORT")
    await check_mongodb(settings, STARTUP_TIMEOUT)
    await serve([(create_app(settings), settings.console_port)], settings)
