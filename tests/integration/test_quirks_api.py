"""The per-vendor quirks API on a real MongoDB: roles, validation, ties refused, light versions, the
audit trail, and readers elsewhere (another instance's cache) seeing a change within seconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from pymongo import AsyncMongoClient

from services.common.quirks import QuirksCache
from services.common.settings import Settings
from services.orchestrator.app import create_app
from services.orchestrator.runtime import OrchestratorRuntime

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-key"}  # the principal "bootstrap-admin"
HG = {"name": "hg-old-fw", "description": "1.x firmware wants numeric booleans",
      "match": {"oui": "00D09E", "product_class": "HG532e", "software_version": {"$prefix": "1."}},
      "quirks": {"boolean_style": "numeric", "end_session": "200"}}


def _nothing(request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, json={"detail": "not found"})


@pytest.fixture
async def api(settings: Settings, mongodb_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, OrchestratorRuntime]]:
    settings = settings.model_copy(update={"quirks_refresh_seconds": 0.2})
    runtime = OrchestratorRuntime(settings, with_kafka=False, http=httpx.AsyncClient(
        transport=httpx.MockTransport(_nothing)))
    await runtime.start()
    app = create_app(runtime, manage_runtime=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://orchestrator",
                                 headers=ADMIN) as client:
        yield client, runtime
    await runtime.mongo.drop_database(settings.mongodb_database)
    await runtime.close()


async def test_entries_are_written_by_admins_versioned_and_audited(
        api: tuple[httpx.AsyncClient, OrchestratorRuntime]) -> None:
    client, runtime = api
    created = await client.post("/api/v1/quirks", json=HG)
    assert created.status_code == 201, created.text
    entry = created.json()
    assert (entry["version"], entry["updated_by"], entry["quirks"]) == (
        1, "bootstrap-admin", {"boolean_style": "numeric", "end_session": "200"})
    qid = entry["id"]
    # This instance uses it at once.
    assert runtime.quirks.lookup("00D09E", "HG532e", "1.4").boolean_style == "numeric"
    assert runtime.quirks.lookup("00D09E", "HG532e", "2.0").boolean_style is None
    put = await client.put(f"/api/v1/quirks/{qid}", json={**HG, "quirks": {"max_envelopes": 2}, "version": 1})
    assert put.status_code == 200 and put.json()["version"] == 2 and put.json()["quirks"] == {"max_envelopes": 2}
    stale = await client.put(f"/api/v1/quirks/{qid}", json={**HG, "version": 1})
    assert stale.status_code == 409  # optimistic locking
    assert (await client.get(f"/api/v1/quirks/{qid}")).json()["version"] == 2
    listed = await client.get("/api/v1/quirks")
    assert [e["name"] for e in listed.json()["quirks"]] == ["hg-old-fw"]
    matched = await client.get("/api/v1/quirks/match", params={"oui": "00D09E", "product_class": "HG532e",
                                                               "software_version": "1.9"})
    assert matched.json()["quirks"] == {"max_envelopes": 2}
    other = await client.get("/api/v1/quirks/match", params={"oui": "00D09E", "product_class": "HG532e",
                                                             "software_version": "3.0"})
    assert other.json() == {"entry": None, "quirks": {}}
    # Writes are audited like every settings write.
    records = [r async for r in runtime.db["audit"].find({"path": {"$regex": "^/api/v1/quirks"}})]
    assert sorted((r["method"], r["status"]) for r in records) == [("POST", 201), ("PUT", 200), ("PUT", 409)]
    assert {r["principal"] for r in records} == {"bootstrap-admin"}
    assert next(r for r in records if r["method"] == "POST")["body"]["quirks"] == HG["quirks"]
    # With the entry as it was and as it is (a settings write).
    replaced = next(r for r in records if r["method"] == "PUT" and r["status"] == 200)
    assert (replaced["before"]["quirks"], replaced["after"]["quirks"]) == (HG["quirks"], {"max_envelopes": 2})
    assert next(r for r in records if r["method"] == "POST")["before"] is None
    assert (await client.delete(f"/api/v1/quirks/{qid}")).status_code == 204
    deleted = await runtime.db["audit"].find_one({"path": f"/api/v1/quirks/{qid}", "method": "DELETE"})
    assert deleted is not None and deleted["before"]["version"] == 2 and deleted["after"] is None
    assert (await client.get(f"/api/v1/quirks/{qid}")).status_code == 404
    assert runtime.quirks.lookup("00D09E", "HG532e", "1.4").max_envelopes is None


async def test_bad_entries_and_ties_are_refused(api: tuple[httpx.AsyncClient, OrchestratorRuntime]) -> None:
    client, _ = api
    assert (await client.post("/api/v1/quirks", json={**HG, "quirks": {"colour": "red"}})).status_code == 422
    assert (await client.post("/api/v1/quirks", json={**HG, "match": {}})).status_code == 422
    assert (await client.post("/api/v1/quirks", json={**HG, "match": {"oui": {"$regex": "."}}})).status_code == 422
    assert (await client.post("/api/v1/quirks", json=HG)).status_code == 201
    assert (await client.post("/api/v1/quirks", json=HG)).status_code == 409  # the name is taken
    tie = {**HG, "name": "other", "match": {**HG["match"], "software_version": {"$prefix": "1."}}}
    refused = await client.post("/api/v1/quirks", json=tie)
    assert refused.status_code == 409 and "ties" in refused.json()["detail"]
    # More specific (exact version) is no tie: it wins for that version.
    exact = {**HG, "name": "exact", "match": {**HG["match"], "software_version": "1.2"}}
    assert (await client.post("/api/v1/quirks", json=exact)).status_code == 201
    # A disjoint prefix of the same specificity is no tie either.
    disjoint = {**HG, "name": "v2", "match": {**HG["match"], "software_version": {"$prefix": "2."}}}
    assert (await client.post("/api/v1/quirks", json=disjoint)).status_code == 201


async def test_readers_need_a_key_and_writers_must_be_admins(
        api: tuple[httpx.AsyncClient, OrchestratorRuntime]) -> None:
    client, _ = api
    key = await client.post("/api/v1/apikeys", json={"name": "reader", "role": "read-only"})
    assert key.status_code == 201, key.text
    reader = {"Authorization": f"Bearer {key.json()['key']}"}
    assert (await client.get("/api/v1/quirks", headers=reader)).status_code == 200
    assert (await client.post("/api/v1/quirks", json=HG, headers=reader)).status_code == 403
    assert (await client.get("/api/v1/quirks", headers={"Authorization": "Bearer wrong"})).status_code == 401


async def test_another_instance_sees_a_change_within_its_refresh_period(
        api: tuple[httpx.AsyncClient, OrchestratorRuntime], settings: Settings) -> None:
    client, _ = api
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    elsewhere = QuirksCache(mongo[settings.mongodb_database], refresh=0.2)
    await elsewhere.start()
    try:
        assert elsewhere.lookup("00D09E", "HG532e", "1.4").boolean_style is None
        assert (await client.post("/api/v1/quirks", json=HG)).status_code == 201
        async with asyncio.timeout(5):
            while elsewhere.lookup("00D09E", "HG532e", "1.4").boolean_style != "numeric":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await elsewhere.close()
        await mongo.close()
