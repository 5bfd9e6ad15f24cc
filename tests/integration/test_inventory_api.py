"""The inventory's northbound API against a real mongod: queries, paging, tags, credentials, auth."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.bus.events import (
    TOPIC_AUDIT,
    TOPIC_INBOUND,
    DeviceIdentity,
    InformEventCode,
    InformReceived,
    ParameterValue,
    RpcResponseReceived,
    decode_inbound,
)
from services.bus.kafka import ensure_topics, make_consumer, make_producer
from services.common.apikeys import ApiKeyAuth
from services.common.settings import Settings
from services.inventory import credentials, store
from services.inventory.app import create_app
from services.inventory.changes import PlanConfig, observe

pytestmark = pytest.mark.integration

T0 = datetime(2025, 5, 1, 12, tzinfo=UTC)
ADMIN = {"X-API-Key": "test-admin-key"}  # the bootstrap key of the settings fixture


@pytest.fixture
async def db(settings: Settings, mongodb_url: str) -> AsyncIterator[AsyncDatabase]:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    database = client[settings.mongodb_database]
    await store.ensure_indexes(database)
    await credentials.ensure_indexes(database)
    try:
        yield database
    finally:
        await client.drop_database(settings.mongodb_database)
        await client.close()


@pytest.fixture
async def producer(settings: Settings, kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_topics(settings, [TOPIC_INBOUND, TOPIC_AUDIT])
    instance = make_producer(settings)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


@pytest.fixture
async def api(settings: Settings, db: AsyncDatabase, producer: AIOKafkaProducer) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, db.client, producer=producer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://inventory",
                                 headers=ADMIN) as client:
        yield client


async def seed(db: AsyncDatabase, count: int = 30) -> None:
    """``count`` devices: SN00..; software 1.0/2.0/2.1 in turn; every third one on TR-098."""
    messages = []
    for i in range(count):
        root = "InternetGatewayDevice" if i % 3 == 2 else "Device"
        params = {f"{root}.DeviceInfo.SoftwareVersion": ("1.0", "2.0", "2.1")[i % 3],
                  f"{root}.DeviceInfo.UpTime": str(i * 100),
                  f"{root}.ManagementServer.ConnectionRequestURL": f"http://10.0.0.{i}:7547/cr"}
        if i % 2 == 0:
            params[f"{root}.WiFi.SSID.1.SSID"] = f"net-{i}"
        messages.append(InformReceived(
            device_id=f"00259E-{'Box' if i < 20 else 'Hub'}-SN{i:02d}", session_id="s", reply_to="r:0",
            gateway_id="g", time=T0 + timedelta(minutes=i),
            device=DeviceIdentity(manufacturer="Acme", oui="00259E", product_class="Box" if i < 20 else "Hub",
                                  serial_number=f"SN{i:02d}"),
            events=[InformEventCode(code="1 BOOT")],
            parameters=[ParameterValue(name=name, value=value,
                                       type="xsd:unsignedInt" if name.endswith("UpTime") else "xsd:string")
                        for name, value in params.items()]))
    observations = [o for o in map(observe, messages) if o is not None]
    await store.apply_observations(db, observations, PlanConfig(3, 300))


async def ids(api: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await api.get("/api/v1/devices", params={**params, "limit": 1000})
    assert response.status_code == 200, response.text
    return [device["id"] for device in response.json()["devices"]]


async def test_filters_on_identity_tags_and_parameter_values(api: httpx.AsyncClient,
                                                             db: AsyncDatabase) -> None:
    await seed(db)
    await store.add_tag(db, "00259E-Box-SN03", "lab")
    await store.add_tag(db, "00259E-Hub-SN21", "lab")
    q = json.dumps
    assert await ids(api, q=q({"serial_number": "SN05"})) == ["00259E-Box-SN05"]
    assert len(await ids(api, q=q({"oui": "00259E", "product_class": "Hub"}))) == 10
    assert await ids(api, q=q({"tags": "lab"})) == ["00259E-Box-SN03", "00259E-Hub-SN21"]
    # software_version is denormalised from either data model.
    assert len(await ids(api, q=q({"software_version": {"$prefix": "2."}}))) == 20
    assert len(await ids(api, q=q({"InternetGatewayDevice.DeviceInfo.SoftwareVersion": "2.1"}))) == 10
    assert await ids(api, q=q({"Device.DeviceInfo.UpTime": {"$gte": 2500, "$lt": 2800}})) == [
        "00259E-Hub-SN25", "00259E-Hub-SN27"]
    assert await ids(api, q=q({"Device.DeviceInfo.UpTime": "300"})) == ["00259E-Box-SN03"]
    assert len(await ids(api, q=q({"Device.WiFi.SSID.1.SSID": {"$exists": True}}))) == 10
    assert await ids(api, q=q({"last_inform": {"$gte": (T0 + timedelta(minutes=28)).isoformat()}})) == [
        "00259E-Hub-SN28", "00259E-Hub-SN29"]
    either = {"$or": [{"serial_number": "SN01"}, {"tags": "lab", "product_class": "Hub"}]}
    assert await ids(api, q=q(either)) == ["00259E-Box-SN01", "00259E-Hub-SN21"]


async def test_projection_returns_only_the_chosen_parameters(api: httpx.AsyncClient,
                                                             db: AsyncDatabase) -> None:
    await seed(db, 3)
    summary = (await api.get("/api/v1/devices")).json()["devices"][0]
    assert "parameters" not in summary and summary["serial_number"] == "SN00"
    assert summary["connection_request_url"] == "http://10.0.0.0:7547/cr"
    response = await api.get("/api/v1/devices", params={
        "fields": "serial_number,Device.DeviceInfo.UpTime", "q": json.dumps({"serial_number": "SN01"})})
    assert response.json()["devices"] == [{"id": "00259E-Box-SN01", "serial_number": "SN01", "parameters": {
        "Device.DeviceInfo.UpTime": {"value": 100, "type": "xsd:unsignedInt",
                                     "timestamp": (T0 + timedelta(minutes=1)).isoformat()}}}]
    subtree = await api.get("/api/v1/devices/00259E-Box-SN00", params={"fields": "Device.WiFi.,tags"})
    assert subtree.json() == {"id": "00259E-Box-SN00", "tags": [], "parameters": {
        "Device.WiFi.SSID.1.SSID": {"value": "net-0", "type": "xsd:string", "timestamp": T0.isoformat()}}}


async def test_cursor_paging_visits_every_device_once_in_order(api: httpx.AsyncClient,
                                                               db: AsyncDatabase) -> None:
    await seed(db)

    def newest_first(names: list[str]) -> list[str]:  # device i informed at T0 + i minutes
        return sorted(names, key=lambda name: name[-2:], reverse=True)

    for sort, expected in [("id", sorted), ("-last_inform", newest_first), ("software_version", None)]:
        seen: list[dict[str, Any]] = []
        cursor = None
        pages = 0
        while True:
            params = {"sort": sort, "limit": 7, "count": "true", "q": json.dumps({"oui": "00259E"})}
            if cursor:
                params["cursor"] = cursor
            body = (await api.get("/api/v1/devices", params=params)).json()
            assert body["count"] == 30
            seen += body["devices"]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages == 5
        names = [device["id"] for device in seen]
        assert len(set(names)) == 30
        if expected is not None:
            assert names == expected(names)
        else:
            keys = [(device["software_version"], device["id"]) for device in seen]
            assert keys == sorted(keys)


async def test_count_endpoint(api: httpx.AsyncClient, db: AsyncDatabase) -> None:
    await seed(db, 9)
    response = await api.get("/api/v1/devices/count", params={"q": json.dumps({"software_version": "1.0"})})
    assert response.json() == {"count": 3}
    assert (await api.get("/api/v1/devices/count")).json() == {"count": 9}


@pytest.mark.parametrize(("params", "message"), [
    ({"q": "{oops"}, "q: not valid JSON"),
    ({"q": '{"$where": "sleep(10000)"}'}, "unknown operator '$where'"),
    ({"q": '{"serial_number": {"$regex": ".*"}}'}, "unknown operator '$regex'"),
    ({"q": '{"serial_number": {"$eq": {"$gt": ""}}}'}, "expected a string, got an object"),
    ({"q": '{"params.Device:X.v": 1}'}, "unknown field 'params.Device:X.v'"),
    ({"sort": "manufacturer"}, "'manufacturer' is not sortable"),
    ({"cursor": "bm90LWEtY3Vyc29y"}, "not a cursor returned by this API"),
    ({"fields": "applied"}, "'applied' is neither a device field"),
])
async def test_bad_queries_get_a_400_with_a_clear_message(api: httpx.AsyncClient, db: AsyncDatabase,
                                                          params: dict[str, str], message: str) -> None:
    response = await api.get("/api/v1/devices", params=params)
    assert response.status_code == 400
    assert message in response.json()["detail"]


async def test_read_tag_untag_and_delete_one_device(api: httpx.AsyncClient, db: AsyncDatabase) -> None:
    await seed(db, 2)
    device = (await api.get("/api/v1/devices/00259E-Box-SN01")).json()
    assert device["parameters"]["Device.DeviceInfo.SoftwareVersion"]["value"] == "2.0"
    assert "applied" not in device and "silent_deadline" not in device
    assert device["last_boot"] == (T0 + timedelta(minutes=1)).isoformat()
    assert (await api.post("/api/v1/devices/00259E-Box-SN01/tags/lab")).json() == {
        "id": "00259E-Box-SN01", "tags": ["lab"]}
    assert (await api.post("/api/v1/devices/00259E-Box-SN01/tags/lab")).json()["tags"] == ["lab"]
    assert (await api.delete("/api/v1/devices/00259E-Box-SN01/tags/lab")).json()["tags"] == []
    assert (await api.post("/api/v1/devices/00259E-Box-SN01/tags/$bad")).status_code == 400
    assert (await api.delete("/api/v1/devices/00259E-Box-SN01")).status_code == 204
    for response in [await api.get("/api/v1/devices/00259E-Box-SN01"),
                     await api.delete("/api/v1/devices/00259E-Box-SN01"),
                     await api.post("/api/v1/devices/00259E-Box-SN01/tags/lab")]:
        assert response.status_code == 404
        assert "no device '00259E-Box-SN01'" in response.json()["detail"]


async def test_roles_guard_each_route(settings: Settings, api: httpx.AsyncClient, db: AsyncDatabase) -> None:
    await seed(db, 1)
    keys = ApiKeyAuth(db, None)
    reader = {"X-API-Key": await keys.create("ro", "read-only")}
    operator = {"Authorization": "Bearer " + await keys.create("op", "operator")}
    device = "/api/v1/devices/00259E-Box-SN00"
    assert (await api.get("/api/v1/devices", headers={"X-API-Key": ""})).status_code == 401
    assert (await api.get("/api/v1/devices", headers={"X-API-Key": "acs_unknown"})).status_code == 401
    assert (await api.get("/api/v1/devices", headers=reader)).status_code == 200
    assert (await api.get(device, headers=reader)).status_code == 200
    assert (await api.post(f"{device}/tags/x", headers=reader)).status_code == 403
    assert (await api.post(f"{device}/tags/x", headers=operator)).status_code == 200
    assert (await api.delete(device, headers=operator)).status_code == 403
    assert (await api.get("/api/v1/credentials", headers=operator)).status_code == 403
    assert (await api.post("/api/v1/credentials", json=[], headers=operator)).status_code == 403
    assert (await api.delete(device)).status_code == 204  # admin


async def test_credentials_are_stored_as_ha1_only_and_never_returned(
        settings: Settings, api: httpx.AsyncClient, db: AsyncDatabase) -> None:
    await seed(db, 1)
    response = await api.post("/api/v1/credentials", json=[
        {"device_id": "00259E-Box-SN00", "password": "s3cret"}, {"username": "cpe-b", "password": "pw-b"}])
    assert response.json() == {"imported": 2}
    csv_body = "username,password\ncpe-c,pw-c\n"
    response = await api.post("/api/v1/credentials", content=csv_body, headers={"Content-Type": "text/csv"})
    assert response.json() == {"imported": 1}

    stored = await db["cpe_credentials"].find_one({"_id": "00259E-Box-SN00"})
    assert stored is not None and "s3cret" not in json.dumps(stored, default=str)
    realm = settings.cpe_realm
    assert await credentials.lookup_ha1(db, "00259E-Box-SN00", "MD5") == hashlib.md5(
        f"00259E-Box-SN00:{realm}:s3cret".encode()).hexdigest()
    assert await credentials.lookup_ha1(db, "cpe-b", "sha-256-sess") == hashlib.sha256(
        f"cpe-b:{realm}:pw-b".encode()).hexdigest()
    assert await credentials.lookup_ha1(db, "cpe-b", "SHA-512-256") is None
    assert await credentials.lookup_ha1(db, "nobody", "MD5") is None
    assert await credentials.lookup_ha1(db, "cpe-b", "MD5", realm="other") is None

    listing = await api.get("/api/v1/credentials")
    assert [c["username"] for c in listing.json()["credentials"]] == ["00259E-Box-SN00", "cpe-b", "cpe-c"]
    assert "ha1" not in listing.text and "s3cret" not in listing.text
    page = (await api.get("/api/v1/credentials", params={"limit": 2})).json()
    assert page["next_cursor"] == "cpe-b"
    rest = (await api.get("/api/v1/credentials", params={"cursor": page["next_cursor"]})).json()
    assert [c["username"] for c in rest["credentials"]] == ["cpe-c"]
    assert (await api.get("/api/v1/devices/00259E-Box-SN00")).json()["cpe_credentials"] is True

    bad = await api.post("/api/v1/credentials", json=[{"username": "cpe-d", "password": "x"},
                                                      {"username": "e"}])
    assert bad.status_code == 400
    assert bad.json()["errors"] == [{"location": "row 2", "message": "password is required"}]
    assert await credentials.lookup_ha1(db, "cpe-d", "MD5") is None  # nothing imported
    assert (await api.post("/api/v1/credentials", content="x", headers={"Content-Type": "text/plain"})
            ).status_code == 415
    assert (await api.delete("/api/v1/credentials/cpe-b")).status_code == 204
    assert (await api.delete("/api/v1/credentials/cpe-b")).status_code == 404


async def inbound_messages(settings: Settings, count: int) -> list[Any]:
    reader = make_consumer(settings, TOPIC_INBOUND, group_id=None)
    await reader.start()
    received: list[Any] = []
    try:
        async with asyncio.timeout(20):
            while len(received) < count:
                for records in (await reader.getmany(timeout_ms=300)).values():
                    received += [(r.key, decode_inbound(r.value)) for r in records]
    finally:
        await reader.stop()
    return received


async def test_deleting_a_device_announces_it_on_the_bus_and_keeps_its_credentials_unless_asked(
        settings: Settings, api: httpx.AsyncClient, db: AsyncDatabase) -> None:
    await seed(db, 2)
    await api.post("/api/v1/credentials", json=[{"device_id": "00259E-Box-SN00", "password": "a"},
                                                {"device_id": "00259E-Box-SN01", "password": "b"},
                                                {"username": "other", "device_id": "00259E-Box-SN01",
                                                 "password": "c"}])
    assert (await api.delete("/api/v1/devices/00259E-Box-SN00")).status_code == 204
    assert (await api.get("/api/v1/devices/00259E-Box-SN00")).status_code == 404  # at once
    # Kept by default: the device can still authenticate, and its next Inform registers it again.
    assert await credentials.has_credentials(db, "00259E-Box-SN00")

    assert (await api.delete("/api/v1/devices/00259E-Box-SN01", params={"credentials": "true"})).status_code == 204
    assert not await credentials.has_credentials(db, "00259E-Box-SN01")
    assert await db["cpe_credentials"].count_documents({}) == 1

    # Both deletions are on cwmp.inbound, keyed by the device id, for the consumers to act on.
    messages = await inbound_messages(settings, 2)
    assert sorted((key, type(m).__name__, m.device_id, m.deleted_by) for key, m in messages) == [
        (b"00259E-Box-SN00", "DeviceDeleted", "00259E-Box-SN00", "bootstrap-admin"),
        (b"00259E-Box-SN01", "DeviceDeleted", "00259E-Box-SN01", "bootstrap-admin")]
    assert (await api.delete("/api/v1/devices/00259E-Box-SN00")).status_code == 404


async def test_a_deletion_the_bus_cannot_take_deletes_nothing(settings: Settings, db: AsyncDatabase,
                                                              kafka_bootstrap: str) -> None:
    await seed(db, 1)
    closed = make_producer(settings)
    await closed.start()
    await closed.stop()
    quick = settings.model_copy(update={"kafka_publish_timeout": 0.5})
    for producer in (None, closed):
        app = create_app(quick, db.client, producer=producer)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://inventory",
                                     headers=ADMIN) as client:
            response = await client.delete("/api/v1/devices/00259E-Box-SN00")
            assert response.status_code == 503, response.text
            assert (await client.get("/api/v1/devices/00259E-Box-SN00")).status_code == 200


async def test_values_set_with_status_1_are_shown_as_applied_after_reboot(
        api: httpx.AsyncClient, db: AsyncDatabase) -> None:
    await seed(db, 2)
    answer = RpcResponseReceived(
        device_id="00259E-Box-SN01", session_id="s", reply_to="r:0", gateway_id="g", rpc_id="1",
        time=T0 + timedelta(hours=1), method="SetParameterValuesResponse",
        rpc={"method": "SetParameterValuesResponse", "status": 1},
        request={"method": "SetParameterValues", "parameter_key": "", "parameter_list": [
            {"name": "Device.WiFi.SSID.1.SSID", "value": {"value": "new", "type": "xsd:string"}}]})
    observation = observe(answer)
    assert observation is not None
    await store.apply_observations(db, [observation], PlanConfig(3, 300))
    device = (await api.get("/api/v1/devices/00259E-Box-SN01")).json()
    assert device["reboot_pending"] == ["Device.WiFi.SSID.1.SSID"]
    assert device["parameters"]["Device.WiFi.SSID.1.SSID"] == {
        "value": "new", "type": "xsd:string", "timestamp": (T0 + timedelta(hours=1)).isoformat(),
        "applied_after_reboot": True}
    assert "applied_after_reboot" not in device["parameters"]["Device.DeviceInfo.SoftwareVersion"]
    assert await ids(api, q='{"reboot_pending": {"$exists": true}}') == ["00259E-Box-SN01"]
    assert await ids(api, q='{"reboot_pending": "Device.WiFi.SSID.1.SSID"}') == ["00259E-Box-SN01"]


async def test_openapi_documents_every_route_with_a_summary(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    operations = [op for path in schema["paths"].values() for op in path.values()]
    assert len(operations) == 11  # with the stats and the device timeline routes
    assert all(op.get("summary") for op in operations)


async def test_a_write_is_answered_at_once_when_the_audit_topic_is_missing(
        settings: Settings, db: AsyncDatabase, kafka_bootstrap: str) -> None:
    """The topic is a copy of the stored record: a missing one delayed every write by the publish
    timeout (5 s each: 35 s for one test of this file). The record is stored at once all the same."""
    slow = settings.model_copy(update={"kafka_topic_prefix": settings.kafka_topic_prefix + "noaudit.",
                                       "kafka_publish_timeout": 60.0})
    await ensure_topics(slow, [TOPIC_INBOUND])  # and no acs.audit
    producer = make_producer(slow)
    await producer.start()
    try:
        await seed(db, 1)
        app = create_app(slow, db.client, producer=producer)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://inventory",
                                     headers=ADMIN) as api, asyncio.timeout(10):
            for _ in range(3):
                assert (await api.post("/api/v1/devices/00259E-Box-SN00/tags/lab")).status_code == 200
        assert await db["audit"].count_documents({"path": "/api/v1/devices/00259E-Box-SN00/tags/lab"}) == 3
    finally:
        await producer.stop()
