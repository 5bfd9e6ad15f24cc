"""The whole ACS for end-to-end tests: `acs up --external` on the test run's real servers.

Every service runs as its own process exactly as in a deployment; the stack gets its own topic
prefix, database and bucket, and free ports, so it shares the servers with other tests safely.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from acs.infra import LOCAL_BROKER_ENV, free_port
from acs.stunserver import StunServer
from acs.xmppserver import XmppServer
from tests.conftest import S3Server

REPO = Path(__file__).resolve().parents[2]



@dataclass(frozen=True)
class Stack:
    gateway_url: str
    api_url: str
    downloads_url: str
    admin_key: str
    cpe_username: str
    cpe_password: str
    env: dict[str, str]
    up_pid: int = 0  # the `acs up` process: its children are the services (a test may kill one)

    @property
    def xmpp_server(self) -> str:
        return self.env["ACS_XMPP_SERVER"]

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}


PORTS = ("GATEWAY", "GATEWAY_ADMIN", "API", "ORCHESTRATOR", "INVENTORY", "FILESERVER", "DOWNLOADS", "CONSOLE")


def local_acs_env(name: str, kafka_bootstrap: str, mongodb_url: str, s3_server: S3Server,
                  partitions: int) -> tuple[dict[str, str], dict[str, int]]:
    """The environment of an `acs up --external` on the test run's servers, with every port its own
    free one (a default port could be held by another stack on the machine), and those ports.
    ``name`` keeps its topics, database and bucket apart from every other test's."""
    ports = {p: free_port() for p in PORTS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACS_")}
    env.update({f"ACS_{p}_PORT": str(port) for p, port in ports.items()})
    env.update({
        **LOCAL_BROKER_ENV,
        "ACS_KAFKA_BOOTSTRAP": kafka_bootstrap, "ACS_KAFKA_TOPIC_PREFIX": f"{name}.",
        "ACS_KAFKA_PARTITIONS": str(partitions),
        "ACS_MONGODB_URL": mongodb_url, "ACS_MONGODB_DATABASE": name,
        "ACS_S3_ENDPOINT": s3_server.endpoint, "ACS_S3_ACCESS_KEY": s3_server.access_key,
        "ACS_S3_SECRET_KEY": s3_server.secret_key, "ACS_S3_BUCKET": name,
        "ACS_ORCHESTRATOR_URL": f"http://127.0.0.1:{ports['ORCHESTRATOR']}",
        "ACS_INVENTORY_URL": f"http://127.0.0.1:{ports['INVENTORY']}",
        "ACS_FILESERVER_URL": f"http://127.0.0.1:{ports['FILESERVER']}",
        "ACS_FILES_PUBLIC_URL": f"http://127.0.0.1:{ports['DOWNLOADS']}",
        "ACS_CONSOLE_URL": f"http://127.0.0.1:{ports['CONSOLE']}",
    })
    return env, ports


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, mongodb_url: str,
          s3_server: S3Server, xmpp_server: XmppServer, stun_server: StunServer) -> Iterator[Stack]:
    name = "e2e" + uuid.uuid4().hex[:8]
    env, ports = local_acs_env(name, kafka_bootstrap, mongodb_url, s3_server, partitions=4)
    env.update({
        "ACS_ADMIN_API_KEY": "e2e-admin-key-" + uuid.uuid4().hex,
        "ACS_SECRET_KEY": "e2e-secret-key-" + uuid.uuid4().hex,
        "ACS_CPE_USERNAME": "testcpe", "ACS_CPE_PASSWORD": "e2e-cpe-password",
        "ACS_PERIODIC_INFORM_INTERVAL": "300",
        # A reboot the simulator does not come back from fails within seconds (tests/e2e/test_reboot.py).
        "ACS_REBOOT_TIMEOUT": "8", "ACS_SWEEP_INTERVAL": "1",
        # Campaign rounds often enough for tests of a few minutes' worth of waves (tests/e2e/test_campaigns.py).
        "ACS_CAMPAIGN_TICK_SECONDS": "0.5",
        # A killed orchestrator's campaign lease lapses within seconds (its restart continues it).
        "ACS_JOB_LEASE_SECONDS": "5",
        "ACS_LOG_LEVEL": "INFO",
        # XMPP connection requests (Annex K) through the test run's prosody.
        "ACS_XMPP_SERVER": xmpp_server.address, "ACS_XMPP_JID": f"acs-{name}@{xmpp_server.domain}",
        "ACS_XMPP_PASSWORD": "e2e-xmpp-" + uuid.uuid4().hex, "ACS_XMPP_REGISTER": "true",
        # ... and bootstrap gives TR-181 CPEs an account on it (those in provisioned XMPP mode log in).
        "ACS_XMPP_CPE_SERVER": xmpp_server.address,
        # UDP connection requests through NAT (Annex G): bootstrap gives CPEs the test run's coturn.
        "ACS_STUN_SERVER": stun_server.host, "ACS_STUN_PORT": str(stun_server.port),
    })
    data_dir = tmp_path_factory.mktemp("stack")
    up = subprocess.Popen([sys.executable, "-m", "acs.cli", "up", "--external", "--data-dir", str(data_dir)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert up.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = up.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ctrl-C stops everything"):
            break
    if not any(line.startswith("ACS is up") for line in lines):
        up.kill()
        logs = "".join(p.read_text()[-3000:] for p in (data_dir / "logs").glob("*.log"))
        pytest.fail("the stack did not come up:\n" + "".join(lines) + logs)
    try:
        yield Stack(gateway_url=f"http://127.0.0.1:{ports['GATEWAY']}",
                    api_url=f"http://127.0.0.1:{ports['API']}/api/v1",
                    downloads_url=f"http://127.0.0.1:{ports['DOWNLOADS']}",
                    admin_key=env["ACS_ADMIN_API_KEY"], cpe_username="testcpe",
                    cpe_password="e2e-cpe-password", env=env, up_pid=up.pid)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
