"""The profiles API on a real MongoDB: versions and rollback, ties refused, variables whose secrets
never come back, the policies' migration, and the cache noticing changes made elsewhere.

Nothing here needs the inventory (preview and convergence are in tests/e2e/test_profiles.py); the
orchestrator's HTTP client answers 404 to anything it asks, as an inventory without the device would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.common.settings import Settings
from services.orchestrator.app import create_app
from services.orchestrator.profile_store import ProfileCache, ProfileStore, migrate_policies
from services.orchestrator.runtime import OrchestratorRuntime

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-key"}  # the principal "bootstrap-admin"
NTP = {"name": "Time.NTPServer1", "value": "pool.ntp.org"}


def _nothing(request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, json={"detail": "not found"})


POLICY = {"_id": "pol-1", "name": "boot-read", "description": "", "enabled": True, "priority": 10,
          "events": ["boot"], "match": {"tags": ["lab"], "oui": ["09D021"], "product_class": [], "manufacturer": [],
                                        "software_version": [], "query": json.dumps({"DeviceInfo.UpTime": {"$gt": 5}})},
          "tasks": [{"name": "getParameterValues", "args": {"parameter_names": ["Device.DeviceInfo."]}}],
          "created_at": datetime(2025, 1, 1, tzinfo=UTC), "created_by": "ops"}
OLD_POLICY = {**POLICY, "_id": "pol-2", "name": "old-regex",
              "match": {**POLICY["match"], "query": json.dumps({"DeviceInfo.X": {"$regex": "^a"}})}}


@pytest.fixture
async def api(settings: Settings, mongodb_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, OrchestratorRuntime]]:
    runtime = OrchestratorRuntime(settings, with_kafka=False, http=httpx.AsyncClient(
        transport=httpx.MockTransport(_nothing)))
    await runtime.db["policies"].insert_many([dict(POLICY), dict(OLD_POLICY)])  # stored by an earlier version
    await runtime.start()
    app = create_app(runtime, manage_runtime=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://orchestrator",
                                 headers=ADMIN) as client:
        yield client, runtime
    await runtime.mongo.drop_database(settings.mongodb_database)
    await runtime.close()


async def _create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/profiles", json={"parameters": [NTP], **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_every_change_is_a_version_and_a_rollback_brings_one_back(
        api: tuple[httpx.AsyncClient, OrchestratorRuntime]) -> None:
    client, _ = api
    profile = await _create(client, name="ntp", priority=10, selector={"product_class": "Box"})
    assert (profile["version"], profile["created_by"], profile["mode"]) == (1, "bootstrap-admin", "enforce")
    pid = profile["id"]
    put = await client.put(f"/api/v1/profiles/{pid}", json={"name": "ntp", "priority": 10, "parameters": [
        {"name": "Time.NTPServer1", "value": "ntp.example"}]})
    assert put.status_code == 200 and put.json()["version"] == 2 and put.json()["selector"] == {}
    patched = await client.patch(f"/api/v1/profiles/{pid}", json={"mode": "report"})
    assert (patched.json()["version"], patched.json()["mode"]) == (3, "report")
    assert patched.json()["parameters"][0]["value"] == "ntp.example"  # PATCH keeps the rest
    assert (await client.patch(f"/api/v1/profiles/{pid}", json={"colour": "red"})).status_code == 422
    assert (await client.post(f"/api/v1/profiles/{pid}/disable")).json()["enabled"] is False
    back = await client.post(f"/api/v1/profiles/{pid}/rollback", json={"version": 1})
    assert back.status_code == 200
    assert (back.json()["version"], back.json()["selector"], back.json()["mode"], back.json()["enabled"]) == (
        5, {"product_class": "Box"}, "enforce", True)
    versions = (await client.get(f"/api/v1/profiles/{pid}/versions")).json()["versions"]
    assert {v["changed_by"] for v in versions} == {"bootstrap-admin"}
    assert [(v["version"], v["change"]) for v in versions] == [
        (5, "rolled back to version 1"), (4, "disabled"), (3, "updated"), (2, "updated"), (1, "created")]
    assert (await client.get(f"/api/v1/profiles/{pid}/versions/2")).json()["parameters"][0]["value"] == "ntp.example"
    assert (await client.delete(f"/api/v1/profiles/{pid}")).status_code == 204
    assert (await client.get(f"/api/v1/profiles/{pid}")).status_code == 404
    assert (await client.get(f"/api/v1/profiles/{pid}/versions")).json()["versions"][0]["change"] == "deleted"


async def test_ties_and_bad_profiles_are_refused_on_save(api: tuple[httpx.AsyncClient, OrchestratorRuntime]) -> None:
    client, _ = api
    first = await _create(client, name="a", priority=7)
    tie = await client.post("/api/v1/profiles", json={"name": "b", "priority": 7, "parameters": [NTP]})
    assert tie.status_code == 409 and "priority 7 is taken" in tie.json()["detail"]
    other = await _create(client, name="b", priority=8)
    # Moving onto a taken priority is a tie too.
    moved = await client.patch(f"/api/v1/profiles/{other['id']}", json={"priority": 7})
    assert moved.status_code == 409
    assert (await client.post("/api/v1/profiles", json={"name": "a", "priority": 9})).status_code == 409
    bad_selector = await client.post("/api/v1/profiles", json={"name": "c", "priority": 11,
                                                               "selector": {"oui": {"$regex": "^0"}}})
    assert bad_selector.status_code == 422 and "unknown operator '$regex'" in bad_selector.text
    bad_template = await client.post("/api/v1/profiles", json={"name": "c", "priority": 11, "parameters": [
        {"name": "Time.NTPServer1", "value": "{hostname}"}]})
    assert bad_template.status_code == 422 and "unknown template {hostname}" in bad_template.text
    assert [p["name"] for p in (await client.get("/api/v1/profiles")).json()["profiles"]] == [
        "b", "a", "boot-read"]  # highest priority first; the migrated policy is a profile too
    assert first["priority"] == 7


async def test_variables_import_and_secrets_are_never_shown_back(
        api: tuple[httpx.AsyncClient, OrchestratorRuntime]) -> None:
    client, runtime = api
    csv_body = "device_id,ssid,psk\nDEV-1,home-1,hunter2\nDEV-2,home-2,correct-horse\n"
    imported = await client.post("/api/v1/profiles/variables", params={"secret": "psk"}, content=csv_body,
                                 headers={"Content-Type": "text/csv"})
    assert imported.json() == {"imported": 2, "secret": ["psk"]}
    assert "hunter2" not in imported.text
    shown = (await client.get("/api/v1/devices/DEV-1/variables")).json()
    assert shown == {"device_id": "DEV-1", "variables": {"psk": "********", "ssid": "home-1"}, "secret": ["psk"]}
    # JSON, adding a variable to one device: the others it has are kept.
    imported = await client.post("/api/v1/profiles/variables", json={
        "devices": [{"device_id": "DEV-1", "variables": {"vlan": 42}}]})
    assert imported.status_code == 200, imported.text
    stored = await runtime.profile_store.variables_of("DEV-1")
    assert dict(stored.values) == {"ssid": "home-1", "psk": "hunter2", "vlan": "42"}
    assert stored.secret == {"psk"}
    bad = await client.post("/api/v1/profiles/variables", content="device_id,ssid\nDEV-3,a,b\n",
                            headers={"Content-Type": "text/csv"})
    assert bad.status_code == 422 and "row 2: 3 columns" in bad.text
    bad = await client.post("/api/v1/profiles/variables", content="serial,ssid\nx,y\n",
                            headers={"Content-Type": "text/csv"})
    assert bad.status_code == 422 and "header" in bad.text


async def test_stored_policies_migrate_into_profiles_once(api: tuple[httpx.AsyncClient, OrchestratorRuntime]) -> None:
    client, runtime = api
    profile = (await client.get("/api/v1/profiles/policy-pol-1")).json()
    assert profile["name"] == "boot-read" and profile["priority"] == -1000
    assert profile["selector"] == {"$and": [{"oui": "09D021"}, {"tags": "lab"}, {"DeviceInfo.UpTime": {"$gt": 5}}]}
    assert profile["actions"] == [{"events": ["boot"], "tasks": [
        {"name": "getParameterValues", "args": {"parameter_names": ["Device.DeviceInfo."]}}]}]
    policy = await runtime.db["policies"].find_one({"_id": "pol-1"})
    assert policy is not None and (policy["enabled"], policy["migrated_to"]) == (False, "policy-pol-1")
    # A policy the shared query language refuses stays where it was, untouched.
    old = await runtime.db["policies"].find_one({"_id": "pol-2"})
    assert old is not None and old["enabled"] is True and "migrated_to" not in old
    # A second start (another instance, a restart) migrates nothing twice.
    assert await migrate_policies(runtime.store, runtime.profile_store) == []
    assert len((await client.get("/api/v1/profiles")).json()["profiles"]) == 1
    versions = (await client.get("/api/v1/profiles/policy-pol-1/versions")).json()["versions"]
    assert versions[0]["change"] == "migrated from policy boot-read"


async def test_the_cache_notices_a_change_made_through_another_instance(
        api: tuple[httpx.AsyncClient, OrchestratorRuntime]) -> None:
    client, runtime = api
    cache = ProfileCache(ProfileStore(runtime.db), check_every=0.2)
    before = await cache.current()
    assert [c.profile.name for c in before.all] == ["boot-read"]
    await _create(client, name="later", priority=50)  # through the API, not through this cache
    assert len(await cache.current()) == 1  # within check_every it answers from memory
    await asyncio.sleep(0.25)
    assert sorted(c.profile.name for c in (await cache.current()).all) == ["boot-read", "later"]
    assert (await cache.current()) is (await cache.current())  # not rebuilt while nothing changes


async def test_objects_freshness_and_discovery_are_saved_and_bad_ones_refused(
        api: tuple[httpx.AsyncClient, OrchestratorRuntime]) -> None:
    client, _ = api
    entry = {"path": "NAT.PortMapping.", "keys": [{"name": "ExternalPort", "value": 8080}],
             "values": [{"name": "InternalClient", "value": "{vars.lan_host}"}], "present": True}
    made = await _create(client, name="pm", priority=31, objects=[entry],
                         freshness=[{"path": "DeviceInfo.UpTime", "max_age": 600}],
                         discovery={"subtrees": ["WiFi."], "full": False})
    got = (await client.get(f"/api/v1/profiles/{made['id']}")).json()
    assert got["objects"][0]["keys"] == [{"name": "ExternalPort", "value": 8080, "type": None}]
    assert got["freshness"] == [{"path": "DeviceInfo.UpTime", "max_age": 600}]
    assert got["discovery"] == {"subtrees": ["WiFi."], "full": False}
    patched = await client.patch(f"/api/v1/profiles/{made['id']}", json={"objects": []})
    assert patched.status_code == 200 and patched.json()["version"] == 2
    old = (await client.get(f"/api/v1/profiles/{made['id']}/versions/1")).json()
    assert old["objects"][0]["path"] == "NAT.PortMapping."
    for bad, why in (
            ({**entry, "present": False}, "absent instance has no values"),
            ({**entry, "path": "NAT.PortMapping"}, "must be an object path"),
            ({**entry, "keys": []}, "at least 1"),
            ({**entry, "values": [{"name": "ExternalPort", "value": 1}]}, "given twice")):
        refused = await client.post("/api/v1/profiles", json={"name": "x", "priority": 32, "objects": [bad]})
        assert refused.status_code == 422 and why in refused.text, refused.text
    short = await client.post("/api/v1/profiles", json={"name": "x", "priority": 32,
                                                        "freshness": [{"path": "DeviceInfo.", "max_age": 5}]})
    assert short.status_code == 422
