"""The three servers the ACS depends on are real and usable the way the services use them."""

from __future__ import annotations

import asyncio
import io
import socket
import sys
from pathlib import Path

import pytest
from minio import Minio
from pymongo import AsyncMongoClient

from acs.infra import InfraError, LocalServer, free_port
from services.bus.events import TOPIC_INBOUND, DeviceEvent, encode
from services.bus.kafka import ensure_topics, kafka_reachable, make_consumer, make_producer, topic_name
from services.common.settings import Settings

pytestmark = pytest.mark.integration


async def test_kafka_produce_with_acks_all_then_consume_in_a_group(settings: Settings,
                                                                     kafka_bootstrap: str) -> None:
    created = await ensure_topics(settings, [TOPIC_INBOUND])
    assert created == [topic_name(settings, TOPIC_INBOUND)]
    assert await ensure_topics(settings, [TOPIC_INBOUND]) == []  # idempotent

    producer = make_producer(settings)
    await producer.start()
    try:
        sent = [DeviceEvent(kind="informed", device_id=f"000000-Box-{i}") for i in range(5)]
        for event in sent:
            await producer.send_and_wait(topic_name(settings, TOPIC_INBOUND), encode(event),
                                         key=event.device_id.encode())
    finally:
        await producer.stop()

    consumer = make_consumer(settings, TOPIC_INBOUND, group_id=f"{settings.kafka_topic_prefix}g",
                             session_timeout_ms=2000, heartbeat_interval_ms=500)
    await consumer.start()
    try:
        received: list[DeviceEvent] = []
        async with asyncio.timeout(30):
            while len(received) < len(sent):
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    received += [DeviceEvent.model_validate_json(r.value) for r in records]
        await consumer.commit()
    finally:
        await consumer.stop()
    assert sorted(e.event_id for e in received) == sorted(e.event_id for e in sent)


async def test_kafka_reachable_is_false_for_a_closed_port(settings: Settings) -> None:
    assert not await kafka_reachable(settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"}),
                                     probe_seconds=1.0)


async def test_mongodb_write_then_read(settings: Settings, mongodb_url: str) -> None:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
    try:
        devices = client[settings.mongodb_database]["devices"]
        await devices.insert_one({"_id": "000000-Box-1", "tags": ["lab"]})
        await devices.update_one({"_id": "000000-Box-1"},
                                 {"$set": {"p.Device.DeviceInfo.SoftwareVersion": "1.0"}})
        found = await devices.find_one({"_id": "000000-Box-1"})
        assert found is not None
        assert found["p"]["Device"]["DeviceInfo"]["SoftwareVersion"] == "1.0"
    finally:
        await client.drop_database(settings.mongodb_database)
        await client.close()


def test_s3_put_then_get(settings: Settings, s3_server: object) -> None:
    client = Minio(settings.s3_endpoint, access_key=settings.s3_access_key,
                   secret_key=settings.s3_secret_key, secure=False)
    client.make_bucket(settings.s3_bucket)
    payload = b"firmware image bytes" * 1000
    client.put_object(settings.s3_bucket, "fw.bin", io.BytesIO(payload), len(payload))
    response = client.get_object(settings.s3_bucket, "fw.bin")
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()


def test_s3_rejects_a_wrong_secret(settings: Settings, s3_server: object) -> None:
    from minio.error import S3Error

    client = Minio(settings.s3_endpoint, access_key=settings.s3_access_key, secret_key="wrong",
                   secure=False)
    with pytest.raises(S3Error):
        client.list_buckets()


def test_a_mongodb_data_folder_reused_on_another_port_elects_a_primary(tmp_path: Path) -> None:
    """A second `acs up` in the same checkout gets new ports; the replica set must follow."""
    from pymongo import MongoClient

    from acs.infra import LocalMongo

    first = LocalMongo(tmp_path)
    first.start()
    old_port = first.port
    first.stop()
    again = LocalMongo(tmp_path)
    again.start()
    try:
        assert again.port != old_port
        with MongoClient(again.url, serverSelectionTimeoutMS=10_000) as client:
            client["reuse"]["t"].insert_one({"_id": 1})
            assert client.admin.command("hello")["isWritablePrimary"]
    finally:
        again.stop()


class _EchoServer(LocalServer):
    """A stand-in server (python listening on its port) whose first port pick is already taken."""

    picks: list[int]

    def binary(self) -> Path:
        return Path(sys.executable)

    def argv(self, binary: Path) -> list[str]:
        listen = (f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1', {self.port})); s.listen(); "
                  "time.sleep(60)")
        return [str(binary), "-c", listen]

    def pick_ports(self) -> None:
        if not self.port:
            self.port = self.picks.pop(0) if self.picks else free_port()


def test_a_port_taken_after_we_chose_it_is_chosen_again_but_a_given_one_is_not(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        server = _EchoServer("echo", tmp_path / "a")
        server.picks = [busy]
        server.start()
        try:
            assert server.port != busy and server.process is not None and server.process.poll() is None
        finally:
            server.stop()

        given = _EchoServer("echo", tmp_path / "b", port=busy)
        given.picks = []
        with pytest.raises(InfraError, match=f"port 127.0.0.1:{busy} is already in use"):
            given.start()
