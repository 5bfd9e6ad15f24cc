"""The inventory's MongoDB writes and indexes, against a real mongod."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from cwmp import models
from cwmp.values import ParameterValue as CwmpValue
from services.bus.events import (
    DeviceDeleted,
    DeviceIdentity,
    InformEventCode,
    InformReceived,
    ParameterValue,
    RpcResponseReceived,
)
from services.common.settings import Settings
from services.inventory import store
from services.inventory.changes import Observation, PlanConfig, observe
from services.inventory.query import parse_query

pytestmark = pytest.mark.integration

T0 = datetime(2025, 5, 1, 12, tzinfo=UTC)
CONFIG = PlanConfig(silent_after_intervals=3, default_interval=600)


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


def inform(serial: str, *codes: str, at: datetime = T0, **params: str) -> InformReceived:
    return InformReceived(
        device_id=f"00259E-Box-{serial}", session_id="s", reply_to="r:0", gateway_id="g", time=at,
        device=DeviceIdentity(manufacturer="Acme", oui="00259E", product_class="Box", serial_number=serial),
        events=[InformEventCode(code=code) for code in codes or ("2 PERIODIC",)],
        parameters=[ParameterValue(name=name.replace("__", "."), value=value,
                                   type="xsd:unsignedInt" if value.isdigit() else "xsd:string")
                    for name, value in params.items()])


def gpv(serial: str, values: dict[str, tuple[str, str]], at: datetime = T0) -> RpcResponseReceived:
    return RpcResponseReceived(
        device_id=f"00259E-Box-{serial}", session_id="s", reply_to="r:0", gateway_id="g", time=at,
        rpc_id="1", method="GetParameterValuesResponse",
        rpc={"method": "GetParameterValuesResponse", "parameter_list": [
            {"name": name, "value": {"value": value, "type": kind}}
            for name, (value, kind) in values.items()]})


def observations(*messages: Any) -> list[Observation]:
    found = [observe(message) for message in messages]
    assert all(found)
    return found  # type: ignore[return-value]


async def test_informs_and_gpv_responses_land_as_typed_parameters(db: AsyncDatabase) -> None:
    result = await store.apply_observations(db, observations(
        inform("SN1", "0 BOOTSTRAP", "1 BOOT", Device__DeviceInfo__SoftwareVersion="1.0",
               Device__ManagementServer__PeriodicInformInterval="300"),
        gpv("SN1", {"Device.WiFi.SSID.1.SSID": ("home", "xsd:string"),
                    "Device.WiFi.SSID.1.Enable": ("1", "xsd:boolean")}, at=T0 + timedelta(seconds=1)),
    ), CONFIG)
    assert result.writes == 2
    device = await db["devices"].find_one({"_id": "00259E-Box-SN1"})
    assert device is not None
    assert device["serial_number"] == "SN1" and device["oui"] == "00259E" and device["tags"] == []
    assert device["first_seen"] == T0 and device["last_boot"] == T0 and device["last_bootstrap"] == T0
    assert device["software_version"] == "1.0" and device["inform_interval"] == 300
    assert device["silent_deadline"] == T0 + timedelta(seconds=900)
    params = device["params"]
    assert params["Device:DeviceInfo:SoftwareVersion"] == {"v": "1.0", "t": "xsd:string", "ts": T0}
    assert params["Device:WiFi:SSID:1:Enable"]["v"] is True
    assert params["Device:WiFi:SSID:1:SSID"]["ts"] == T0 + timedelta(seconds=1)
    assert [f.kind for f in result.facts] == ["registered", "bootstrapped", "booted", "informed"]


async def test_a_replayed_batch_changes_nothing(db: AsyncDatabase) -> None:
    batch = observations(inform("SN2", "1 BOOT", Device__X__Uptime="5"),
                         gpv("SN2", {"Device.X.Name": ("a", "xsd:string")}),
                         inform("SN2", at=T0 + timedelta(minutes=5), Device__X__Uptime="305"))
    first = await store.apply_observations(db, batch, CONFIG)
    before = await db["devices"].find_one({"_id": "00259E-Box-SN2"})
    replay = await store.apply_observations(db, batch, CONFIG)
    after = await db["devices"].find_one({"_id": "00259E-Box-SN2"})
    assert first.writes == 3 and first.facts
    assert replay.writes == 0 and replay.skipped == 3 and replay.facts == []
    assert after == before


async def test_value_changes_carry_old_and_new_values(db: AsyncDatabase) -> None:
    await store.apply_observations(db, observations(
        inform("SN3", Device__DeviceInfo__SoftwareVersion="1.0", Device__X__Uptime="5")), CONFIG)
    result = await store.apply_observations(db, observations(
        inform("SN3", at=T0 + timedelta(hours=1), Device__DeviceInfo__SoftwareVersion="2.0",
               Device__X__Uptime="5")), CONFIG)
    changed = [f for f in result.facts if f.kind == "value_changed"]
    assert len(changed) == 1
    assert [(c.name, c.old, c.new) for c in changed[0].changes] == [
        ("Device.DeviceInfo.SoftwareVersion", "1.0", "2.0")]
    device = await db["devices"].find_one({"_id": "00259E-Box-SN3"})
    assert device is not None and device["software_version"] == "2.0"
    assert device["last_inform"] == T0 + timedelta(hours=1) and device["first_seen"] == T0


async def test_bootstrap_drops_the_cached_tree_but_keeps_tags(db: AsyncDatabase) -> None:
    await store.apply_observations(db, observations(
        inform("SN4", Device__DeviceInfo__SoftwareVersion="1.0"),
        gpv("SN4", {"Device.WiFi.SSID.1.SSID": ("home", "xsd:string")})), CONFIG)
    await store.add_tag(db, "00259E-Box-SN4", "lab")
    await store.apply_observations(db, observations(
        inform("SN4", "0 BOOTSTRAP", at=T0 + timedelta(days=1), Device__DeviceInfo__SoftwareVersion="1.0")),
        CONFIG)
    device = await db["devices"].find_one({"_id": "00259E-Box-SN4"})
    assert device is not None
    assert set(device["params"]) == {"Device:DeviceInfo:SoftwareVersion"}
    assert device["tags"] == ["lab"] and device["last_bootstrap"] == T0 + timedelta(days=1)


async def test_delete_object_unsets_the_subtree_and_add_object_records_the_instance(
        db: AsyncDatabase) -> None:
    await store.apply_observations(db, observations(
        inform("SN5"),
        gpv("SN5", {"Device.NAT.PortMapping.1.Enable": ("1", "xsd:boolean"),
                    "Device.NAT.PortMapping.10.Enable": ("1", "xsd:boolean"),
                    "Device.NAT.PortMapping.1.InternalPort": ("80", "xsd:unsignedInt"),
                    "Device.NAT.PortMappingNumberOfEntries": ("2", "xsd:unsignedInt")})), CONFIG)

    def response(method: str, rpc: dict[str, Any], object_name: str) -> RpcResponseReceived:
        return RpcResponseReceived(device_id="00259E-Box-SN5", session_id="s", reply_to="r:0",
                                   gateway_id="g", rpc_id="2", method=method, rpc={"method": method, **rpc},
                                   request={"method": method.removesuffix("Response"), "object_name": object_name})

    await store.apply_observations(db, observations(
        response("DeleteObjectResponse", {"status": 0}, "Device.NAT.PortMapping.1."),
        response("AddObjectResponse", {"status": 0, "instance_number": 11}, "Device.NAT.PortMapping.")), CONFIG)
    device = await db["devices"].find_one({"_id": "00259E-Box-SN5"})
    assert device is not None
    assert set(device["params"]) == {"Device:NAT:PortMapping:10:Enable",
                                     "Device:NAT:PortMappingNumberOfEntries", "Device:NAT:PortMapping:11:"}
    assert len(device["applied"]) == 4


def answer(serial: str, request: models.CwmpMessage, response: models.CwmpMessage,
           at: datetime = T0) -> RpcResponseReceived:
    """An RPC answer as the gateway publishes it: the response, and the request it answers."""
    return RpcResponseReceived(
        device_id=f"00259E-Box-{serial}", session_id="s", reply_to="r:0", gateway_id="g", time=at,
        rpc_id="1", method=response.METHOD, rpc=models.rpc_to_dict(response),
        request=models.rpc_to_dict(request))


def set_values(*values: tuple[str, str, str]) -> models.SetParameterValues:
    return models.SetParameterValues(tuple(models.ParameterValueStruct(n, CwmpValue(v, t)) for n, v, t in values),
                                     "key")


async def test_set_parameter_values_outcomes_land_in_the_record_without_a_read(db: AsyncDatabase) -> None:
    device_id = "00259E-Box-SN8"
    await store.apply_observations(db, observations(
        inform("SN8", "1 BOOT", Device__X__Name="old", Device__X__Port="80")), CONFIG)
    result = await store.apply_observations(db, observations(
        answer("SN8", set_values(("Device.X.Name", "new", "xsd:string")),
               models.SetParameterValuesResponse(status=0), at=T0 + timedelta(seconds=1)),
        answer("SN8", set_values(("Device.X.Port", "8080", "xsd:unsignedInt"),
                                 ("Device.ManagementServer.ConnectionRequestPassword", "s3cret", "xsd:string")),
               models.SetParameterValuesResponse(status=1), at=T0 + timedelta(seconds=2)),
    ), CONFIG)
    device = await db["devices"].find_one({"_id": device_id})
    assert device is not None
    assert device["params"]["Device:X:Name"] == {"v": "new", "t": "xsd:string", "ts": T0 + timedelta(seconds=1)}
    assert device["params"]["Device:X:Port"]["v"] == 8080 and device["params"]["Device:X:Port"]["r"] is True
    assert device["reboot_pending"] == ["Device.X.Port"]
    assert "s3cret" not in str(device)
    changes = [(c.name, c.old, c.new) for f in result.facts for c in f.changes]
    assert changes == [("Device.X.Name", "old", "new"), ("Device.X.Port", "80", "8080")]

    # The boot puts it into effect: the flag and the list go, the value stays.
    await store.apply_observations(db, observations(inform("SN8", "1 BOOT", at=T0 + timedelta(minutes=1))),
                                   CONFIG)
    device = await db["devices"].find_one({"_id": device_id})
    assert device is not None and "reboot_pending" not in device
    assert device["params"]["Device:X:Port"] == {"v": 8080, "t": "xsd:unsignedInt", "ts": T0 + timedelta(seconds=2)}


async def test_add_object_with_values_then_delete_object_without_a_read(db: AsyncDatabase) -> None:
    device_id = "00259E-Box-SN9"
    await store.apply_observations(db, observations(inform("SN9", "1 BOOT")), CONFIG)
    add = models.AddObject("Device.NAT.PortMapping.", "key")
    await store.apply_observations(db, observations(
        answer("SN9", add, models.AddObjectResponse(instance_number=3, status=1)),
        answer("SN9", set_values(("Device.NAT.PortMapping.3.Enable", "true", "xsd:boolean"),
                                 ("Device.NAT.PortMapping.3.ExternalPort", "2222", "xsd:unsignedInt")),
               models.SetParameterValuesResponse(status=1)),
        answer("SN9", set_values(("Device.X.Other", "x", "xsd:string")), models.SetParameterValuesResponse(status=1)),
    ), CONFIG)
    device = await db["devices"].find_one({"_id": device_id})
    assert device is not None
    assert device["params"]["Device:NAT:PortMapping:3:"]["r"] is True
    assert device["params"]["Device:NAT:PortMapping:3:Enable"]["v"] is True
    assert device["params"]["Device:NAT:PortMapping:3:ExternalPort"]["v"] == 2222
    assert set(device["reboot_pending"]) == {"Device.NAT.PortMapping.3.", "Device.NAT.PortMapping.3.Enable",
                                             "Device.NAT.PortMapping.3.ExternalPort", "Device.X.Other"}

    await store.apply_observations(db, observations(
        answer("SN9", models.DeleteObject("Device.NAT.PortMapping.3.", "key"), models.DeleteObjectResponse(0))),
        CONFIG)
    device = await db["devices"].find_one({"_id": device_id})
    assert device is not None
    assert not any(key.startswith("Device:NAT:") for key in device["params"])
    assert device["reboot_pending"] == ["Device.X.Other"]
    await store.apply_observations(db, observations(
        answer("SN9", models.DeleteObject("Device.X.", "key"), models.DeleteObjectResponse(0))), CONFIG)
    device = await db["devices"].find_one({"_id": device_id})
    assert device is not None and "reboot_pending" not in device and device["params"] == {}


async def test_a_deleted_device_goes_in_order_with_the_messages_of_its_batch(db: AsyncDatabase) -> None:
    device_id = "00259E-Box-SN10"
    batch = observations(
        inform("SN10", "1 BOOT", Device__X__A="1"),  # before the deletion: forgotten with the rest
        DeviceDeleted(device_id=device_id, time=T0 + timedelta(seconds=1)),
        gpv("SN10", {"Device.X.B": ("2", "xsd:string")}, at=T0 + timedelta(seconds=2)),  # a late answer
    )
    result = await store.apply_observations(db, batch, CONFIG)
    assert await db["devices"].find_one({"_id": device_id}) is None
    assert result.writes == 2 and result.skipped == 1
    later = observations(inform("SN10", "1 BOOT", at=T0 + timedelta(minutes=1), Device__X__C="3"))
    again = await store.apply_observations(db, later, CONFIG)
    device = await db["devices"].find_one({"_id": device_id})
    assert device is not None and set(device["params"]) == {"Device:X:C"}
    assert device["first_seen"] == T0 + timedelta(minutes=1)
    assert [f.kind for f in again.facts] == ["registered", "booted", "informed"]
    # Kafka replays from the last commit, in order: the same messages end in the same record.
    await store.apply_observations(db, batch, CONFIG)
    await store.apply_observations(db, later, CONFIG)
    assert await db["devices"].find_one({"_id": device_id}, {"applied": 0}) == \
        {k: v for k, v in device.items() if k != "applied"}


async def test_hostile_parameter_names_and_values_are_stored_verbatim(db: AsyncDatabase) -> None:
    message = InformReceived(
        device_id="00259E-Box-SN6", session_id="s", reply_to="r:0", gateway_id="g",
        device=DeviceIdentity(oui="00259E", product_class="Box", serial_number="SN6"),
        events=[InformEventCode(code="2 PERIODIC")],
        parameters=[ParameterValue(name="$where", value="$set"), ParameterValue(name="a.$b..c", value="{}")])
    await store.apply_observations(db, observations(message), CONFIG)
    device = await db["devices"].find_one({"_id": "00259E-Box-SN6"})
    assert device is not None
    assert device["params"]["%24where"]["v"] == "$set"
    assert device["params"]["a:%24b::c"]["v"] == "{}"


@pytest.mark.parametrize("query", [
    {"serial_number": "SN00042"},
    {"oui": "00259E", "product_class": "Box"},
    {"software_version": "2.0"},
    {"software_version": {"$prefix": "2."}},
    {"last_inform": {"$lt": "2025-01-01T00:00:00Z"}},
    {"tags": "lab"},
    {"tags": {"$in": ["lab", "field"]}},
    {"id": {"$prefix": "00259E-Box-SN0001"}},
])
async def test_listed_filters_use_an_index(db: AsyncDatabase, query: dict[str, Any]) -> None:
    import json

    documents = [{"_id": f"00259E-Box-SN{i:05d}", "oui": "00259E", "product_class": "Box",
                  "serial_number": f"SN{i:05d}", "software_version": f"{i % 3}.0",
                  "tags": ["lab"] if i % 7 else [],
                  "last_inform": T0 - timedelta(days=i), "first_seen": T0} for i in range(300)]
    await db["devices"].insert_many(documents)
    plan = await db["devices"].find(parse_query(json.dumps(query))).explain()
    stages = _stages(plan["queryPlanner"]["winningPlan"])
    assert "COLLSCAN" not in stages and "IXSCAN" in stages, stages


@pytest.mark.parametrize(("query", "sort"), [
    ({}, "-last_inform"),
    ({"tags": "lab"}, "id"),
    ({"software_version": "1.0"}, "id"),
    ({"oui": "00259E", "product_class": "Box"}, "id"),
])
async def test_sorted_cursor_pages_walk_an_index_without_an_in_memory_sort(
        db: AsyncDatabase, query: dict[str, Any], sort: str) -> None:
    import json

    from services.inventory.query import cursor_filter, encode_cursor, parse_sort

    await db["devices"].insert_many([{"_id": f"d{i:03d}", "last_inform": T0 - timedelta(minutes=i % 10),
                                      "tags": ["lab"] if i % 2 else ["lab", "x"], "software_version": "1.0",
                                      "oui": "00259E", "product_class": "Box"} for i in range(100)])
    order = parse_sort(sort)
    after = cursor_filter(order, encode_cursor(order, {"_id": "d050", "last_inform": T0}))
    page_filter = {"$and": [parse_query(json.dumps(query)), after]} if query else after
    plan = await db["devices"].find(page_filter).sort(order.mongo()).limit(10).explain()
    stages = _stages(plan["queryPlanner"]["winningPlan"])
    assert "COLLSCAN" not in stages and "SORT" not in stages, stages


def _stages(plan: dict[str, Any]) -> list[str]:
    found = [plan.get("stage", "")]
    for key in ("inputStage", "queryPlan"):
        if isinstance(plan.get(key), dict):
            found += _stages(plan[key])
    for child in plan.get("inputStages", []):
        found += _stages(child)
    return found


async def test_concurrent_lanes_keep_each_devices_messages_in_order(db: AsyncDatabase) -> None:
    batch = observations(*(inform(f"L{device}", at=T0 + timedelta(minutes=step), Device__X__Step=str(step))
                           for step in range(4) for device in range(10)))
    result = await store.apply_observations(db, batch, CONFIG, lanes=4)
    assert result.writes == 40
    steps = [d["params"]["Device:X:Step"]["v"] async for d in db["devices"].find({}, {"params": 1})]
    assert steps == [3] * 10
    changes = [(f.device_id, f.changes[0].old, f.changes[0].new) for f in result.facts if f.kind == "value_changed"]
    assert sorted(changes) == sorted((f"00259E-Box-L{d}", str(s), str(s + 1)) for d in range(10) for s in range(3))
