"""The inventory consumer end to end: cwmp.inbound -> MongoDB -> device.events, on the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect

from cwmp import models
from cwmp.values import ParameterValue as CwmpValue
from services.bus.events import (
    TOPIC_DEVICE_EVENTS,
    TOPIC_INBOUND,
    DeviceDeleted,
    DeviceEvent,
    DeviceIdentity,
    InformEventCode,
    InformReceived,
    ParameterValue,
    RpcResponseReceived,
    encode,
)
from services.bus.kafka import ensure_topics, make_consumer, make_producer, topic_name
from services.common.settings import Settings
from services.inventory import consumer as consumer_module
from services.inventory import store
from services.inventory.consumer import InventoryConsumer, group_id
from services.inventory.silence import SilenceSweeper

pytestmark = pytest.mark.integration

FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
DEVICE = "00259E-Box-SN1"


@pytest.fixture
async def db(settings: Settings, mongodb_url: str) -> AsyncIterator[AsyncDatabase]:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    database = client[settings.mongodb_database]
    await store.ensure_indexes(database)
    try:
        yield database
    finally:
        await client.drop_database(settings.mongodb_database)
        await client.close()


@pytest.fixture
async def producer(settings: Settings, kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_topics(settings, [TOPIC_INBOUND, TOPIC_DEVICE_EVENTS])
    instance = make_producer(settings)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


@pytest.fixture
async def running(settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer,
                  ) -> AsyncIterator[Callable[[], Awaitable[InventoryConsumer]]]:
    started: list[InventoryConsumer] = []

    async def start() -> InventoryConsumer:
        consumer = InventoryConsumer(settings, db, producer, retry_initial=0.1, retry_max=0.5, **FAST_GROUP)
        await consumer.start()
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        await consumer.stop()


def inform(*codes: str, at: datetime, event_id: str | None = None, **params: str) -> InformReceived:
    extra = {"event_id": event_id} if event_id else {}
    return InformReceived(
        device_id=DEVICE, session_id="s", reply_to="r:0", gateway_id="g", time=at,
        device=DeviceIdentity(manufacturer="Acme", oui="00259E", product_class="Box", serial_number="SN1"),
        events=[InformEventCode(code=code) for code in codes],
        parameters=[ParameterValue(name=name.replace("__", "."), value=value)
                    for name, value in params.items()],
        **extra)


async def send(settings: Settings, producer: AIOKafkaProducer, *payloads: Any) -> None:
    for payload in payloads:
        raw = payload if isinstance(payload, bytes) else encode(payload)
        await producer.send_and_wait(topic_name(settings, TOPIC_INBOUND), raw, key=DEVICE.encode())


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 20.0) -> Any:
    async with asyncio.timeout(within):
        while not (result := await check()):  # noqa: ASYNC110 - polls another task's effects
            await asyncio.sleep(0.1)
    return result


async def device_events(settings: Settings, count: int, within: float = 20.0) -> list[DeviceEvent]:
    reader = make_consumer(settings, TOPIC_DEVICE_EVENTS, group_id=None)
    await reader.start()
    received: list[DeviceEvent] = []
    try:
        async with asyncio.timeout(within):
            while len(received) < count:
                for records in (await reader.getmany(timeout_ms=300)).values():
                    received += [DeviceEvent.model_validate_json(r.value) for r in records]
        # Anything beyond the expected events (a replay re-published, say) shows up here.
        for records in (await reader.getmany(timeout_ms=1000)).values():
            received += [DeviceEvent.model_validate_json(r.value) for r in records]
    finally:
        await reader.stop()
    return received


async def test_inbound_messages_land_in_mongodb_and_publish_device_events(
        settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer,
        running: Callable[[], Awaitable[InventoryConsumer]]) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    first = inform("0 BOOTSTRAP", "1 BOOT", at=t0, Device__DeviceInfo__SoftwareVersion="1.0")
    gpv = RpcResponseReceived(device_id=DEVICE, session_id="s", reply_to="r:0", gateway_id="g", rpc_id="1",
                              method="GetParameterValuesResponse", time=t0 + timedelta(seconds=1),
                              rpc={"method": "GetParameterValuesResponse", "parameter_list": [
                                  {"name": "Device.WiFi.SSID.1.SSID", "value": {"value": "home",
                                                                                "type": "xsd:string"}}]})
    second = inform("2 PERIODIC", at=t0 + timedelta(minutes=5), Device__DeviceInfo__SoftwareVersion="1.1")
    await send(settings, producer, first, b"not json at all", b'{"type": "inform", "device_id": 5}', gpv,
               second, first)  # the last one is a redelivery of the first
    consumer = await running()

    device = await eventually(lambda: db["devices"].find_one(
        {"_id": DEVICE, "software_version": "1.1", "params.Device:WiFi:SSID:1:SSID.v": "home"}))
    assert device["last_bootstrap"] == t0 and device["last_inform"] == t0 + timedelta(minutes=5)
    events = await device_events(settings, 6)
    assert [e.kind for e in events] == ["registered", "bootstrapped", "booted", "informed", "value_changed",
                                        "informed"]
    assert {e.device_id for e in events} == {DEVICE}
    assert [(c.name, c.old, c.new) for c in events[4].changes] == [
        ("Device.DeviceInfo.SoftwareVersion", "1.0", "1.1")]
    assert consumer.task is not None and not consumer.task.done()  # malformed messages did not stop it

    async def committed() -> int:
        assert consumer.consumer is not None
        offsets = [await consumer.consumer.committed(tp) or 0 for tp in consumer.consumer.assignment()]
        return sum(offsets) == 6
    assert await eventually(committed)


def answer(request: models.CwmpMessage, response: models.CwmpMessage, at: datetime) -> RpcResponseReceived:
    """What the gateway publishes for a CPE's answer: the response and the request it answers."""
    return RpcResponseReceived(device_id=DEVICE, session_id="s", reply_to="r:0", gateway_id="g", rpc_id="1",
                               time=at, method=response.METHOD, rpc=models.rpc_to_dict(response),
                               request=models.rpc_to_dict(request))


def set_values(*values: tuple[str, str, str]) -> models.SetParameterValues:
    return models.SetParameterValues(tuple(models.ParameterValueStruct(n, CwmpValue(v, t)) for n, v, t in values),
                                     "key")


async def test_the_outcome_of_each_write_reaches_the_record_without_a_later_read(
        settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer,
        running: Callable[[], Awaitable[InventoryConsumer]]) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    read = RpcResponseReceived(device_id=DEVICE, session_id="s", reply_to="r:0", gateway_id="g", rpc_id="0",
                               method="GetParameterValuesResponse", time=t0,
                               rpc=models.rpc_to_dict(models.GetParameterValuesResponse((
                                   models.ParameterValueStruct("Device.NAT.PortMapping.1.Enable",
                                                               CwmpValue("true", "xsd:boolean")),))))
    await send(settings, producer, inform("1 BOOT", at=t0, Device__X__Name="old"), read)
    consumer = await running()
    await eventually(lambda: db["devices"].find_one({"_id": DEVICE, "params.Device:NAT:PortMapping:1:Enable.v": True}))

    # SetParameterValues (Status 0), AddObject followed by values for the new instance (Status 1),
    # DeleteObject: each shows in the record as soon as its answer is consumed.
    await send(settings, producer, answer(set_values(("Device.X.Name", "new", "xsd:string")),
                                          models.SetParameterValuesResponse(status=0), t0 + timedelta(seconds=1)))
    await eventually(lambda: db["devices"].find_one({"_id": DEVICE, "params.Device:X:Name.v": "new"}))
    await send(settings, producer,
               answer(models.AddObject("Device.NAT.PortMapping.", "key"),
                      models.AddObjectResponse(instance_number=2, status=0), t0 + timedelta(seconds=2)),
               answer(set_values(("Device.NAT.PortMapping.2.ExternalPort", "8080", "xsd:unsignedInt")),
                      models.SetParameterValuesResponse(status=1), t0 + timedelta(seconds=3)))
    device = await eventually(lambda: db["devices"].find_one(
        {"_id": DEVICE, "params.Device:NAT:PortMapping:2:ExternalPort.v": 8080}))
    assert "Device:NAT:PortMapping:2:" in device["params"]
    assert device["params"]["Device:NAT:PortMapping:2:ExternalPort"]["r"] is True
    assert device["reboot_pending"] == ["Device.NAT.PortMapping.2.ExternalPort"]
    await send(settings, producer, answer(models.DeleteObject("Device.NAT.PortMapping.1.", "key"),
                                          models.DeleteObjectResponse(0), t0 + timedelta(seconds=4)))
    device = await eventually(lambda: db["devices"].find_one(
        {"_id": DEVICE, "params.Device:NAT:PortMapping:1:Enable": {"$exists": False}}))
    assert {key for key in device["params"] if key.startswith("Device:NAT:")} == {
        "Device:NAT:PortMapping:2:", "Device:NAT:PortMapping:2:ExternalPort"}

    # The changed value is announced like any other change (a first value has nothing to compare).
    events = await device_events(settings, 4)
    assert [e.kind for e in events] == ["registered", "booted", "informed", "value_changed"]
    assert [(c.name, c.old, c.new) for c in events[3].changes] == [("Device.X.Name", "old", "new")]
    assert consumer.task is not None and not consumer.task.done()


async def test_a_device_deletion_is_applied_in_order_with_the_devices_informs(
        settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer,
        running: Callable[[], Awaitable[InventoryConsumer]]) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    # An Inform still on its way when the device is deleted: consumed first, forgotten with the rest.
    await send(settings, producer, inform("1 BOOT", at=t0, Device__X__A="1"),
               DeviceDeleted(device_id=DEVICE, time=t0 + timedelta(seconds=1)))
    consumer = await running()

    async def caught_up(count: int) -> bool:
        assert consumer.consumer is not None
        return sum([await consumer.consumer.committed(tp) or 0 for tp in consumer.consumer.assignment()]) == count

    await eventually(lambda: caught_up(2))
    assert await db["devices"].find_one({"_id": DEVICE}) is None

    # The next Inform is a first contact.
    await send(settings, producer, inform("2 PERIODIC", at=t0 + timedelta(seconds=2), Device__X__B="2"))
    device = await eventually(lambda: db["devices"].find_one({"_id": DEVICE}))
    assert set(device["params"]) == {"Device:X:B"} and device["first_seen"] == t0 + timedelta(seconds=2)
    events = await device_events(settings, 5)
    assert [e.kind for e in events] == ["registered", "booted", "informed", "registered", "informed"]


async def test_mongodb_outage_pauses_and_retries_without_losing_messages(
        settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer,
        running: Callable[[], Awaitable[InventoryConsumer]], monkeypatch: pytest.MonkeyPatch) -> None:
    real_apply = consumer_module.apply_observations
    failures = 0

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        if failures < 3:
            failures += 1
            raise AutoReconnect("connection refused")
        return await real_apply(*args, **kwargs)

    monkeypatch.setattr(consumer_module, "apply_observations", flaky)
    t0 = datetime.now(UTC)
    await send(settings, producer, inform("1 BOOT", at=t0), inform("2 PERIODIC", at=t0 + timedelta(seconds=1),
                                                                   Device__X="2"))
    consumer = await running()
    device = await eventually(lambda: db["devices"].find_one({"_id": DEVICE, "params.Device:X.v": "2"}))
    assert failures == 3 and len(device["applied"]) == 2
    assert consumer.consumer is not None and not consumer.consumer.paused()


async def test_offsets_are_not_committed_while_writes_fail(
        settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer,
        running: Callable[[], Awaitable[InventoryConsumer]], monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = 0

    async def down(*args: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        raise AutoReconnect("mongod is down")

    monkeypatch.setattr(consumer_module, "apply_observations", down)
    await send(settings, producer, inform("1 BOOT", at=datetime.now(UTC)))
    first = await running()
    await eventually(lambda: asyncio.sleep(0, attempts >= 2))
    await first.stop()
    monkeypatch.undo()

    # A new instance of the group (a restart) gets the message again: nothing was committed,
    # though the group reads from the earliest offset only where it has no commit.
    assert await db["devices"].find_one({"_id": DEVICE}) is None
    second = await running()
    assert await eventually(lambda: db["devices"].find_one({"_id": DEVICE}))
    assert second.consumer is not None and group_id(settings) == f"{settings.kafka_topic_prefix}inventory"


async def test_silent_devices_are_published_once_per_silence(settings: Settings, db: AsyncDatabase,
                                                             producer: AIOKafkaProducer) -> None:
    from services.inventory.changes import PlanConfig, observe

    config = PlanConfig(silent_after_intervals=2, default_interval=60)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    observation = observe(inform("1 BOOT", at=long_ago,
                                 Device__ManagementServer__PeriodicInformInterval="30"))
    assert observation is not None
    await store.apply_observations(db, [observation], config)
    sweeper = SilenceSweeper(settings, db, producer)
    assert await sweeper.sweep() == 1
    assert await sweeper.sweep() == 0  # claimed: not published again

    device = await db["devices"].find_one({"_id": DEVICE})
    assert device is not None and "silent_deadline" not in device and device["silent_since"]
    events = await device_events(settings, 1)
    assert [e.kind for e in events] == ["went_silent"]
    deadline = datetime.fromisoformat(events[0].details["silent_deadline"])
    assert abs(deadline - (long_ago + timedelta(seconds=60))) < timedelta(milliseconds=1)  # BSON keeps ms

    # The next Inform ends the silence and re-arms the deadline.
    back = observe(inform("2 PERIODIC", at=datetime.now(UTC)))
    assert back is not None
    await store.apply_observations(db, [back], config)
    device = await db["devices"].find_one({"_id": DEVICE})
    assert device is not None and "silent_since" not in device and device["silent_deadline"]
    assert await sweeper.sweep() == 0


async def test_a_real_mongod_restart_loses_nothing(settings: Settings, producer: AIOKafkaProducer,
                                                   tmp_path: Any) -> None:
    from acs.infra import LocalMongo

    # A private mongod, so that stopping it does not disturb the other tests.
    mongod = LocalMongo(tmp_path / "mongodb")
    await asyncio.to_thread(mongod.start)
    client: AsyncMongoClient = AsyncMongoClient(mongod.url, tz_aware=True, serverSelectionTimeoutMS=1000)
    db = client["inventory"]
    consumer = InventoryConsumer(settings, db, producer, retry_initial=0.1, retry_max=0.5, **FAST_GROUP)
    try:
        await store.ensure_indexes(db)
        t0 = datetime.now(UTC).replace(microsecond=0)  # BSON dates keep milliseconds
        await send(settings, producer, inform("1 BOOT", at=t0, Device__X="1"))
        await consumer.start()
        await eventually(lambda: db["devices"].find_one({"_id": DEVICE}))

        await asyncio.to_thread(mongod.stop)
        await send(settings, producer, *(inform("2 PERIODIC", at=t0 + timedelta(minutes=n), Device__X=str(n))
                                          for n in range(2, 6)))
        await asyncio.sleep(2)  # the consumer fails, pauses, retries
        assert consumer.task is not None and not consumer.task.done()
        await asyncio.to_thread(mongod.start)

        device = await eventually(lambda: db["devices"].find_one({"_id": DEVICE, "params.Device:X.v": "5"}), 30)
        assert len(device["applied"]) == 5 and device["last_inform"] == t0 + timedelta(minutes=5)
    finally:
        await consumer.stop()
        await client.close()
        await asyncio.to_thread(mongod.stop)


async def test_records_arriving_while_a_batch_is_handled_wait_and_come_in_one_fetch(
        settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer,
        running: Callable[[], Awaitable[InventoryConsumer]], monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = await running()
    consumer.settings = consumer.settings.model_copy(update={"inventory_fetch_interval": 3.0})
    sizes: list[int] = []
    handle = consumer.handle

    async def counted(batch: Any) -> None:
        sizes.append(sum(len(records) for records in batch.values()))
        await handle(batch)

    monkeypatch.setattr(consumer, "handle", counted)
    t0 = datetime.now(UTC).replace(microsecond=0)
    await send(settings, producer, inform("1 BOOT", at=t0))
    await eventually(lambda: _true(sizes == [1]))
    for minute in range(1, 5):  # 1.6 s, within the 3 s in which nothing is fetched
        await send(settings, producer, inform("2 PERIODIC", at=t0 + timedelta(minutes=minute)))
        await asyncio.sleep(0.4)
    await eventually(lambda: _true(sum(sizes) == 5))
    # One fetch may have been in flight when the pause began; the rest wait for the next one.
    # Fetched as they arrived, the four would have come one by one.
    assert sizes[0] == 1 and len(sizes) <= 3
    assert (await db["devices"].find_one({"_id": DEVICE}))["last_inform"] == t0 + timedelta(minutes=4)


async def _true(value: bool) -> bool:
    return value


async def test_secret_values_are_neither_stored_nor_published_nor_shown_nor_searchable(
        settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer,
        running: Callable[[], Awaitable[InventoryConsumer]]) -> None:
    import httpx

    from services.common import redaction
    from services.inventory.app import create_app

    key = "Device.WiFi.AccessPoint.1.Security.KeyPassphrase"
    token = "Device.X_ACME_Token"  # secret only by ACS_REDACTED_PARAMETERS
    redaction.configure(["X_ACME_*"])
    try:
        t0 = datetime.now(UTC).replace(microsecond=0)
        first = inform("0 BOOTSTRAP", at=t0, **{key.replace(".", "__"): "hunter22", token.replace(".", "__"): "tok-1",
                                                "Device__ManagementServer__ConnectionRequestPassword": ""})
        second = inform("2 PERIODIC", at=t0 + timedelta(minutes=5), **{key.replace(".", "__"): "hunter33",
                                                                         token.replace(".", "__"): "tok-2"})
        await send(settings, producer, first, second)
        await running()
        later = t0 + timedelta(minutes=5)
        device = await eventually(lambda: db["devices"].find_one({"_id": DEVICE, "last_inform": later}))
        for secret in ("hunter22", "hunter33", "tok-1", "tok-2"):
            assert secret not in str(device)
        assert device["params"]["Device:ManagementServer:ConnectionRequestPassword"]["v"] == ""  # "not set" shows
        events = await device_events(settings, 2)
        assert not [e for e in events if any(s in e.model_dump_json() for s in ("hunter", "tok-"))]

        # A record written before secrets were kept out of it is still shown redacted.
        await db["devices"].update_one({"_id": DEVICE}, {"$set": {
            "params.Device:WiFi:AccessPoint:1:Security:PreSharedKey": {"v": "legacy-psk", "t": "xsd:string"}}})
        api = httpx.AsyncClient(transport=httpx.ASGITransport(create_app(settings, db.client, producer=producer)),
                                base_url="http://inventory", headers={"X-API-Key": "test-admin-key"})
        async with api:
            shown = (await api.get(f"/api/v1/devices/{DEVICE}")).json()["parameters"]
            assert shown[key]["value"] == shown[token]["value"] == redaction.REDACTED
            assert shown["Device.WiFi.AccessPoint.1.Security.PreSharedKey"]["value"] == redaction.REDACTED
            assert shown["Device.ManagementServer.ConnectionRequestPassword"]["value"] == ""
            listed = await api.get("/api/v1/devices", params={"fields": "Device.WiFi."})
            assert "legacy-psk" not in listed.text and listed.status_code == 200
            # A secret's value cannot be tested (that would confirm a guess); whether it is set can.
            guess = await api.get("/api/v1/devices", params={
                "q": '{"Device.WiFi.AccessPoint.1.Security.PreSharedKey": "legacy-psk"}'})
            assert guess.status_code == 400 and "secret parameter" in guess.text
            present = await api.get("/api/v1/devices", params={"q": f'{{"{key}": {{"$exists": true}}}}'})
            assert [d["id"] for d in present.json()["devices"]] == [DEVICE]
    finally:
        redaction.configure([])
