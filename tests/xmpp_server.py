"""A real XMPP server (Debian's prosody, acs/xmppserver.py) for the tests that need one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from acs.xmppserver import XmppServer, available, start_prosody


@pytest.fixture(scope="session")
def xmpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XmppServer]:
    if not available():
        pytest.fail("prosody is not installed: `make install` installs it (Debian: apt-get install prosody)")
    server = start_prosody(tmp_path_factory.mktemp("prosody"))
    try:
        yield server
    finally:
        server.stop()
