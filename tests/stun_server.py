"""A real STUN server (Debian's coturn, acs/stunserver.py) for the tests that need one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from acs.stunserver import StunServer, available, start_coturn


@pytest.fixture(scope="session")
def stun_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StunServer]:
    if not available():
        pytest.fail("coturn is not installed: `make install` installs it (Debian: apt-get install coturn)")
    server = start_coturn(tmp_path_factory.mktemp("coturn"))
    try:
        yield server
    finally:
        server.stop()
