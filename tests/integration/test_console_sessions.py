"""Console sessions on the real MongoDB: sign-in with an API key, the cookie accepted by an API
service (the inventory here) in place of the key, CSRF on writes, roles, revocation, expiry,
sign-out. And the Overview's figures (services/inventory/stats.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common.apikeys import SESSIONS, ApiKeyAuth, hash_key
from services.common.settings import Settings
from services.console.app import create_app as create_console
from services.inventory import store
from services.inventory.app import create_app as create_inventory
from services.inventory.stats import device_stats

pytestmark = pytest.mark.integration
ADMIN_KEY = "test-admin-key"  # the bootstrap key of the settings fixture


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
async def console(settings: Settings, db: AsyncDatabase) -> AsyncIterator[httpx.AsyncClient]:
    app = create_console(settings, db.client)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://acs.test") as client:
        yield client


@pytest.fixture
async def inventory(settings: Settings, db: AsyncDatabase) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_inventory(settings, db.client)),
                                 base_url="http://acs.test") as client:
        yield client


async def sign_in(console: httpx.AsyncClient, key: str, **headers: str) -> tuple[str, str, httpx.Response]:
    answer = await console.post("/console/api/session", json={"api_key": key}, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.cookies["acs_session"], answer.json()["csrf_token"], answer


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"acs_session={token}"}


async def a_device(db: AsyncDatabase) -> str:
    await store.devices(db).insert_one({"_id": "00259E-Box-SN1", "serial_number": "SN1", "oui": "00259E",
                                        "product_class": "Box", "software_version": "1.0", "params": {}})
    return "00259E-Box-SN1"


async def test_sign_in_sets_a_strict_http_only_cookie_and_stores_only_hashes(
        console: httpx.AsyncClient, db: AsyncDatabase) -> None:
    refused = await console.post("/console/api/session", json={"api_key": "wrong"})
    assert refused.status_code == 401 and refused.json()["detail"] == "unknown API key"
    token, csrf, answer = await sign_in(console, ADMIN_KEY)
    set_cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "path=/" in set_cookie
    assert "secure" not in set_cookie
    assert answer.json()["principal"] == "bootstrap-admin" and answer.json()["role"] == "admin"
    (stored,) = await db[SESSIONS].find().to_list()
    assert stored["_id"] == hash_key(token) and stored["csrf_hash"] == hash_key(csrf)
    assert token not in str(stored) and csrf not in str(stored) and ADMIN_KEY not in str(stored)
    # Behind TLS (the Ingress says so), the cookie is Secure.
    _, _, behind_tls = await sign_in(console, ADMIN_KEY, **{"X-Forwarded-Proto": "https"})
    assert "secure" in behind_tls.headers["set-cookie"].lower()
    # A reloaded page gets the same CSRF token back.
    again = await console.get("/console/api/session", headers=cookie(token))
    assert again.status_code == 200 and again.json()["csrf_token"] == csrf


async def test_the_cookie_replaces_the_key_and_every_write_needs_the_csrf_token(
        console: httpx.AsyncClient, inventory: httpx.AsyncClient, db: AsyncDatabase) -> None:
    device = await a_device(db)
    token, csrf, _ = await sign_in(console, ADMIN_KEY)
    cookies = cookie(token)
    assert (await inventory.get("/api/v1/devices", headers=cookies)).status_code == 200
    assert (await inventory.get("/api/v1/devices")).status_code == 401
    tag = f"/api/v1/devices/{device}/tags/lab"
    without = await inventory.post(tag, headers=cookies)
    assert without.status_code == 403 and "X-CSRF-Token" in without.json()["detail"]
    forged = await inventory.post(tag, headers={**cookies, "X-CSRF-Token": "0" * 64})
    assert forged.status_code == 403
    done = await inventory.post(tag, headers={**cookies, "X-CSRF-Token": csrf})
    assert done.status_code == 200 and done.json()["tags"] == ["lab"]
    # Another session's CSRF token does not fit this one.
    _, other_csrf, _ = await sign_in(console, ADMIN_KEY)
    assert (await inventory.delete(tag, headers={**cookies, "X-CSRF-Token": other_csrf})).status_code == 403


async def test_a_read_only_session_is_refused_writes_and_a_revoked_key_ends_its_sessions(
        console: httpx.AsyncClient, inventory: httpx.AsyncClient, db: AsyncDatabase, settings: Settings) -> None:
    device = await a_device(db)
    auth = ApiKeyAuth(db, settings.admin_api_key)
    key = await auth.create("viewer", "read-only")
    token, csrf, answer = await sign_in(console, key)
    assert answer.json()["role"] == "read-only"
    cookies = cookie(token)
    refused = await inventory.post(f"/api/v1/devices/{device}/tags/lab", headers={**cookies, "X-CSRF-Token": csrf})
    assert refused.status_code == 403 and "operator" in refused.json()["detail"]
    assert (await inventory.get(f"/api/v1/devices/{device}", headers=cookies)).status_code == 200
    assert await auth.revoke("viewer")
    assert (await inventory.get(f"/api/v1/devices/{device}", headers=cookies)).status_code == 401
    assert (await console.get("/console/api/session", headers=cookies)).status_code == 401


async def test_an_expired_session_is_refused(console: httpx.AsyncClient, inventory: httpx.AsyncClient,
                                             db: AsyncDatabase) -> None:
    token, _, _ = await sign_in(console, ADMIN_KEY)
    await db[SESSIONS].update_one({"_id": hash_key(token)},
                                  {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
    assert (await inventory.get("/api/v1/devices", headers=cookie(token))).status_code == 401
    assert (await console.get("/console/api/session", headers=cookie(token))).status_code == 401
    indexes = await db[SESSIONS].index_information()
    assert any(index.get("expireAfterSeconds") == 0 for index in indexes.values())  # MongoDB deletes it


async def test_sign_out_needs_the_csrf_token_and_deletes_the_session(
        console: httpx.AsyncClient, inventory: httpx.AsyncClient, db: AsyncDatabase) -> None:
    token, csrf, _ = await sign_in(console, ADMIN_KEY)
    cookies = cookie(token)
    assert (await console.delete("/console/api/session", headers=cookies)).status_code == 403
    out = await console.delete("/console/api/session", headers={**cookies, "X-CSRF-Token": csrf})
    assert out.status_code == 204 and 'acs_session=""' in out.headers["set-cookie"]
    assert await db[SESSIONS].count_documents({}) == 0
    assert (await inventory.get("/api/v1/devices", headers=cookies)).status_code == 401


async def test_the_page_and_its_assets_come_from_the_console_with_a_strict_policy(
        console: httpx.AsyncClient) -> None:
    page = await console.get("/")
    assert page.status_code == 200 and '<script type="module" src="/console/assets/app.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    script = await console.get("/console/assets/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "http://" not in script.text and "https://" not in script.text  # nothing from elsewhere


async def test_device_figures_for_the_overview(db: AsyncDatabase, inventory: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    await store.devices(db).insert_many([
        {"_id": f"00259E-Box-SN{i}", "product_class": "Box" if i < 3 else "Hub",
         "software_version": "1.0" if i else "2.0",
         "last_inform": now - timedelta(seconds=30 if i < 2 else 600),
         **({"silent_since": now} if i == 4 else {})} for i in range(5)])
    figures = await device_stats(db, now)
    assert (figures["total"], figures["silent"], figures["seen"]) == (5, 1, 4)
    assert (figures["informs_last_minute"], figures["informs_last_5_minutes"]) == (2, 2)
    versions = [(v["product_class"], v["software_version"], v["count"]) for v in figures["versions"]]
    assert versions[-1] == ("Box", "2.0", 1)  # largest first
    assert sorted(versions) == [("Box", "1.0", 2), ("Box", "2.0", 1), ("Hub", "1.0", 2)]
    answer = await inventory.get("/api/v1/stats/devices", headers={"X-API-Key": ADMIN_KEY})
    assert answer.status_code == 200 and answer.json()["total"] == 5
