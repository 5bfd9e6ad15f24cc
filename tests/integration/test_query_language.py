"""One query language: the inventory's compiled filter gives the same answer in MongoDB and in memory.

Profile selectors and policies are decided in the orchestrator's memory at Inform time; the
inventory answers the same query from MongoDB. Both run the inventory's compiler; this test runs
a battery of queries over the same devices through a real mongod and through ``matches`` and asks
for the very same devices.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common.settings import Settings
from services.inventory.query import compile_query, device_document, matches

pytestmark = pytest.mark.integration

IGD, DEV = "InternetGatewayDevice.", "Device."


def _devices() -> list[dict[str, Any]]:
    rows = [
        ("a", "IGD", ["lab"], "1.9.82", IGD, [("DeviceInfo.UpTime", "900", "xsd:unsignedInt"),
                                              ("ManagementServer.PeriodicInformEnable", "1", "xsd:boolean")]),
        ("b", "IGD", ["lab", "eu"], "1.10", IGD, [("DeviceInfo.UpTime", "5000", "xsd:unsignedInt"),
                                                  ("ManagementServer.PeriodicInformEnable", "false", "xsd:boolean")]),
        ("c", "Router", [], "2.0", DEV, [("DeviceInfo.UpTime", "12", "xsd:unsignedInt"),
                                         ("DeviceInfo.ProvisioningCode", "WKSS", "xsd:string")]),
        ("d", "Router", ["eu"], "2.0.1", DEV, [("DeviceInfo.UpTime", "77", ""),  # untyped: text
                                               ("ManagementServer.PeriodicInformEnable", "true", "xsd:boolean")]),
        ("e", "Other", [], None, DEV, []),
    ]
    devices = []
    for serial, product_class, tags, version, root, params in rows:
        document = device_document(
            {"id": serial, "oui": "09D021", "product_class": product_class, "serial_number": serial,
             "software_version": version, "tags": tags,
             "last_inform": datetime(2025, 5, 1, int(serial, 16) % 24, tzinfo=UTC)},
            [(root + name, value, xsi) for name, value, xsi in params])
        devices.append(document)
    return devices


QUERIES: list[dict[str, Any]] = [
    {},
    {"product_class": "IGD"},
    {"tags": "lab"},
    {"tags": {"$ne": "lab"}},
    {"tags": {"$in": ["eu", "x"]}},
    {"tags": {"$nin": ["eu"]}},
    {"software_version": {"$lt": "2.0"}},
    {"software_version": {"$gte": "1.9"}},
    {"software_version": {"$prefix": "2.0"}},
    {"software_version": {"$exists": False}},
    {"software_version": {"$ne": "2.0"}},
    {"DeviceInfo.UpTime": {"$gt": 100}},
    {"DeviceInfo.UpTime": {"$gt": "100"}},
    {"DeviceInfo.UpTime": 77},
    {"DeviceInfo.UpTime": {"$ne": 900}},
    {"DeviceInfo.UpTime": {"$nin": [900, 12]}},
    {"DeviceInfo.UpTime": {"$exists": False}},
    {"Device.DeviceInfo.UpTime": {"$lte": 12}},
    {"InternetGatewayDevice.DeviceInfo.UpTime": {"$exists": True}},
    {"ManagementServer.PeriodicInformEnable": True},
    {"ManagementServer.PeriodicInformEnable": {"$ne": True}},
    {"DeviceInfo.ProvisioningCode": {"$prefix": "WK"}},
    {"last_inform": {"$gte": "2025-05-01T12:00:00Z"}},
    {"$or": [{"product_class": "Other"}, {"DeviceInfo.UpTime": {"$lt": 1000}}]},
    {"$and": [{"tags": "eu"}, {"software_version": {"$gt": "1"}}], "oui": "09D021"},
    {"Device.DeviceInfo.": {"$exists": True}},
]


@pytest.fixture
async def db(settings: Settings, mongodb_url: str) -> AsyncIterator[AsyncDatabase]:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    database = client[settings.mongodb_database]
    try:
        yield database
    finally:
        await client.drop_database(settings.mongodb_database)
        await client.close()


async def test_memory_and_mongodb_agree_on_every_query(db: AsyncDatabase) -> None:
    devices = _devices()
    # Object existence: the inventory stores an object's name too; give device c its DeviceInfo.
    devices[2]["params"]["Device:DeviceInfo:"] = {"o": True}
    await db.devices.insert_many([dict(d) for d in devices])
    disagreements = []
    for query in QUERIES:
        compiled = compile_query(query)
        in_mongo = sorted([d["_id"] async for d in db.devices.find(compiled, {"_id": 1})])
        in_memory = sorted(d["_id"] for d in devices if matches(compiled, d))
        if in_mongo != in_memory:
            disagreements.append((json.dumps(query), in_mongo, in_memory))
    assert not disagreements
    # And the answers are the ones meant (a few spot checks, so agreement is not vacuous).
    assert sorted(d["_id"] for d in devices if matches(compile_query({"DeviceInfo.UpTime": {"$gt": 100}}), d)) \
        == ["a", "b"]  # d's 77 is text: no order across kinds
    assert sorted(d["_id"] for d in devices if matches(compile_query({"DeviceInfo.UpTime": {"$exists": False}}), d)) \
        == ["e"]
    assert sorted(d["_id"] for d in devices if matches(compile_query({"tags": {"$ne": "lab"}}), d)) == ["c", "d", "e"]
