"""The local STUN server (Debian's coturn, acs/stunserver.py) answers Binding requests as Annex G's
CPEs send them, and `acs up` points the orchestrator at it."""

from __future__ import annotations

import socket
from pathlib import Path

from acs import stunserver
from acs.stunserver import StunServer
from cwmp import stun


def test_the_fixture_server_maps_the_senders_address(stun_server: StunServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        tid = stun.new_transaction_id()
        # An Annex G request: CONNECTION-REQUEST-BINDING and BINDING-CHANGE are comprehension-optional.
        sock.sendto(stun.build_binding_request(tid, binding_change=True), (stun_server.host, stun_server.port))
        data, source = sock.recvfrom(2048)
        assert source == (stun_server.host, stun_server.port)
        assert stun.mapped_address(stun.parse_message(data), tid) == sock.getsockname()


def test_coturn_is_stun_only_and_stops_cleanly(tmp_path: Path) -> None:
    server = stunserver.start_coturn(tmp_path)
    assert "--stun-only" in server.process.args and "--no-auth" in server.process.args  # type: ignore[operator]
    assert stunserver.binding(server.host, server.port) is not None
    server.stop()
    assert server.process.returncode is not None
    assert stunserver.binding(server.host, server.port, timeout=0.3) is None


def test_acs_up_starts_one_unless_a_server_is_named(tmp_path: Path) -> None:
    named = {"ACS_STUN_SERVER": "stun.example.net"}
    assert stunserver.start_for_local_acs(tmp_path / "a", named) is None
    environ: dict[str, str] = {}
    server = stunserver.start_for_local_acs(tmp_path / "b", environ)
    assert server is not None
    try:
        assert environ == {"ACS_STUN_SERVER": "127.0.0.1", "ACS_STUN_PORT": str(server.port)}
        assert stunserver.binding(environ["ACS_STUN_SERVER"], int(environ["ACS_STUN_PORT"])) is not None
    finally:
        server.stop()
