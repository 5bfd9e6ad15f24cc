"""Operator accounts, scopes and the audit trail on the real MongoDB, with the real inventory,
orchestrator and console apps (the orchestrator reaches the inventory through an ASGI transport
instead of a socket; nothing is stood in for).

A user scoped to tag partner-a lists, counts and acts on only those devices, and gets 404 for any
other device, task or job; a job over a query as that user touches only its devices; every write
is in the audit trail with its principal and no record holds a secret; five wrong passwords lock
an account; TOTP sign-in works with a generated code; a revoked key or a disabled user stops
working on a second orchestrator instance within 5 s.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pyotp
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.common.audit import COLLECTION as AUDIT
from services.common.settings import Settings
from services.console.app import create_app as create_console
from services.inventory import store as inventory_store
from services.inventory.app import create_app as create_inventory
from services.orchestrator.app import create_app as create_orchestrator
from services.orchestrator.jobs import JobConfig
from services.orchestrator.runtime import OrchestratorRuntime
from services.orchestrator.state import DeviceState

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer test-admin-key"}
PARTNER_A = [f"00259E-Box-A{i}" for i in range(3)]
PARTNER_B = [f"00259E-Box-B{i}" for i in range(2)]
ALICE_PASSWORD = "correct horse battery"


@dataclass
class Stack:
    db: AsyncDatabase
    inventory: httpx.AsyncClient
    orchestrator: httpx.AsyncClient
    console: httpx.AsyncClient
    runtime: OrchestratorRuntime
    settings: Settings


@pytest.fixture
async def stack(settings: Settings, mongodb_url: str) -> AsyncIterator[Stack]:
    inventory_app = create_inventory(settings)
    async with inventory_app.router.lifespan_context(inventory_app):
        to_inventory = httpx.AsyncClient(transport=httpx.ASGITransport(inventory_app),
                                         base_url="http://inventory")
        runtime = OrchestratorRuntime(settings, with_kafka=False, http=to_inventory,
                                      job_config=JobConfig(claim_interval=0.2))
        await runtime.start()
        db = runtime.db
        await inventory_store.ensure_indexes(db)
        for device_id, tag in [(d, "partner-a") for d in PARTNER_A] + [(d, "partner-b") for d in PARTNER_B]:
            serial = device_id.rsplit("-", 1)[1]
            await inventory_store.devices(db).insert_one({"_id": device_id, "serial_number": serial, "oui": "00259E",
                                                          "product_class": "Box", "tags": [tag], "params": {}})
            await runtime.store.save_device(DeviceState(id=device_id))
        orchestrator_app = create_orchestrator(runtime, manage_runtime=False)
        console_app = create_console(settings, runtime.mongo)
        async with orchestrator_app.router.lifespan_context(orchestrator_app), \
                console_app.router.lifespan_context(console_app), \
                httpx.AsyncClient(transport=httpx.ASGITransport(orchestrator_app),
                                  base_url="http://orchestrator") as orchestrator, \
                httpx.AsyncClient(transport=httpx.ASGITransport(console_app), base_url="http://console") as console:
            try:
                yield Stack(db, to_inventory, orchestrator, console, runtime, settings)
            finally:
                await runtime.mongo.drop_database(settings.mongodb_database)
                await runtime.close()


async def create_user(stack: Stack, username: str, role: str, scope: Any = None,
                      password: str = ALICE_PASSWORD) -> dict[str, Any]:
    body: dict[str, Any] = {"username": username, "password": password, "role": role}
    if scope is not None:
        body["scope"] = scope
    answer = await stack.orchestrator.post("/api/v1/users", json=body, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def sign_in(stack: Stack, username: str, password: str = ALICE_PASSWORD, code: str | None = None,
                  ) -> dict[str, str]:
    """The headers of a signed-in console session (cookie and CSRF token)."""
    body: dict[str, Any] = {"username": username, "password": password}
    if code is not None:
        body["totp_code"] = code
    answer = await stack.console.post("/console/api/session", json=body)
    assert answer.status_code == 201, answer.text
    return {"Cookie": f"acs_session={answer.cookies['acs_session']}", "X-CSRF-Token": answer.json()["csrf_token"]}


def path(device_id: str) -> str:
    return quote(device_id, safe="")


async def test_a_partner_scoped_user_sees_and_acts_on_only_its_devices(stack: Stack) -> None:
    user = await create_user(stack, "alice", "operator", {"tags": "partner-a"})
    assert user["scope"] == '{"tags":"partner-a"}' and ALICE_PASSWORD not in json.dumps(user)
    assert "password_hash" not in user
    alice = await sign_in(stack, "alice")
    inv, orch = stack.inventory, stack.orchestrator

    listed = await inv.get("/api/v1/devices", params={"count": "true"}, headers=alice)
    assert listed.status_code == 200
    assert sorted(d["id"] for d in listed.json()["devices"]) == PARTNER_A and listed.json()["count"] == 3
    # Its own query is narrowed, never widened: asking for partner-b finds nothing.
    other = await inv.get("/api/v1/devices", params={"q": '{"tags": "partner-b"}'}, headers=alice)
    assert other.json()["devices"] == []
    assert (await inv.get("/api/v1/devices/count", headers=alice)).json() == {"count": 3}
    assert (await inv.get("/api/v1/devices/count", headers=ADMIN)).json() == {"count": 5}
    assert (await inv.get(f"/api/v1/devices/{path(PARTNER_A[0])}", headers=alice)).status_code == 200
    outside = await inv.get(f"/api/v1/devices/{path(PARTNER_B[0])}", headers=alice)
    assert outside.status_code == 404  # not 403: nothing leaks
    assert (await inv.post(f"/api/v1/devices/{path(PARTNER_B[0])}/tags/x", headers=alice)).status_code == 404
    assert (await inv.post(f"/api/v1/devices/{path(PARTNER_A[0])}/tags/x", headers=alice)).status_code == 200

    # Tasks: on its devices only; a task id from another scope is not found.
    reboot = {"name": "reboot"}
    assert (await orch.post(f"/api/v1/devices/{path(PARTNER_B[0])}/tasks", json=reboot,
                            headers=alice)).status_code == 404
    assert (await orch.post(f"/api/v1/devices/{path(PARTNER_B[0])}/tasks", params={"preprovision": "true"},
                            json=reboot, headers=alice)).status_code == 404
    mine = await orch.post(f"/api/v1/devices/{path(PARTNER_A[0])}/tasks", json=reboot, headers=alice)
    assert mine.status_code == 201, mine.text
    theirs = (await orch.post(f"/api/v1/devices/{path(PARTNER_B[0])}/tasks", json=reboot, headers=ADMIN)).json()
    assert (await orch.get(f"/api/v1/tasks/{theirs['id']}", headers=alice)).status_code == 404
    assert (await orch.post(f"/api/v1/tasks/{theirs['id']}/cancel", headers=alice)).status_code == 404
    assert (await orch.get(f"/api/v1/tasks/{mine.json()['id']}", headers=alice)).status_code == 200
    assert (await orch.get(f"/api/v1/devices/{path(PARTNER_B[0])}/tasks", headers=alice)).status_code == 404
    assert (await orch.post(f"/api/v1/devices/{path(PARTNER_B[0])}/connection-request",
                            headers=alice)).status_code == 404
    seen = (await orch.get("/api/v1/tasks", headers=alice)).json()["tasks"]
    assert [t["id"] for t in seen] == [mine.json()["id"]]
    assert (await orch.get("/api/v1/tasks", params={"device_id": PARTNER_B[0]}, headers=alice)).json()["tasks"] == []
    assert len((await orch.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"]) == 2

    # A job over every device, as alice, touches only partner-a's.
    job = await orch.post("/api/v1/jobs", json={"query": {}, "task": reboot}, headers=alice)
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    async with asyncio.timeout(15):
        while (await orch.get(f"/api/v1/jobs/{job_id}", headers=alice)).json()["status"] == "resolving":  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    tasks = (await orch.get("/api/v1/tasks", params={"job_id": job_id}, headers=ADMIN)).json()["tasks"]
    assert sorted(t["device_id"] for t in tasks) == PARTNER_A
    admin_job = (await orch.post("/api/v1/jobs", json={"query": {"tags": "partner-b"}, "task": reboot},
                                 headers=ADMIN)).json()
    assert (await orch.get(f"/api/v1/jobs/{admin_job['id']}", headers=alice)).status_code == 404
    assert (await orch.post(f"/api/v1/jobs/{admin_job['id']}/cancel", headers=alice)).status_code == 404
    assert [j["id"] for j in (await orch.get("/api/v1/jobs", headers=alice)).json()["jobs"]] == [job_id]
    assert (await orch.get("/api/v1/tasks", params={"job_id": admin_job["id"]},
                           headers=alice)).json()["tasks"] == []
    # Routes that know nothing of scopes are closed to a scoped principal.
    assert (await orch.get("/api/v1/policies", headers=alice)).status_code == 403
    assert (await inv.get("/api/v1/stats/devices", headers=alice)).json()["total"] == 3  # opted in, scoped

    # A key of alice's has her scope.
    key = (await orch.post("/api/v1/apikeys", json={"name": "alice-oss", "role": "operator", "user": "alice"},
                           headers=ADMIN)).json()["key"]
    by_key = await inv.get("/api/v1/devices", headers={"X-API-Key": key})
    assert sorted(d["id"] for d in by_key.json()["devices"]) == PARTNER_A
    assert (await orch.post("/api/v1/apikeys", json={"name": "both", "role": "operator", "user": "alice",
                                                     "scope": {"oui": "1"}}, headers=ADMIN)).status_code == 422
    key_session = await stack.console.post("/console/api/session", json={"api_key": key})
    assert key_session.status_code == 201 and key_session.json()["user"] == "alice"
    by_key_session = {"Cookie": f"acs_session={key_session.cookies['acs_session']}"}
    # The admin moves alice to partner-b: her password session, key session and key follow at once.
    moved = await orch.patch("/api/v1/users/alice", json={"scope": {"tags": "partner-b"}}, headers=ADMIN)
    assert moved.status_code == 200 and moved.json()["scope"] == '{"tags":"partner-b"}'
    for headers in (alice, by_key_session, {"X-API-Key": key}):
        for _ in range(50):  # 5 s at most (the key's cache is dropped everywhere within about 1 s)
            seen_ids = sorted(d["id"] for d in (await inv.get("/api/v1/devices", headers=headers)).json()["devices"])
            if seen_ids == PARTNER_B:
                break
            await asyncio.sleep(0.1)
        assert seen_ids == PARTNER_B, headers
    # Cleared, she has every device.
    await orch.patch("/api/v1/users/alice", json={"scope": None}, headers=ADMIN)
    assert (await inv.get("/api/v1/devices/count", headers=alice)).json() == {"count": 5}


async def test_every_write_is_audited_with_its_principal_and_no_secret(stack: Stack) -> None:
    await create_user(stack, "bob", "operator")
    refused = await stack.console.post("/console/api/session", json={"username": "bob", "password": "wrong-guess-1"})
    assert refused.status_code == 401
    bob = await sign_in(stack, "bob")
    key = (await stack.orchestrator.post("/api/v1/apikeys", json={"name": "oss", "role": "operator"},
                                         headers=ADMIN)).json()["key"]
    await stack.inventory.post(f"/api/v1/devices/{path(PARTNER_A[1])}/tags/lab", headers=bob)
    await stack.orchestrator.post(f"/api/v1/devices/{path(PARTNER_A[1])}/tasks", headers={"X-API-Key": key},
                                  json={"name": "setParameterValues", "parameter_values": [
                                      {"name": "Device.Users.User.1.Password", "value": "hunter2-secret"}]})
    await stack.orchestrator.post("/api/v1/users/bob/password", headers=bob,
                                  json={"current_password": ALICE_PASSWORD, "new_password": "a new long password"})
    await stack.inventory.post("/api/v1/credentials", headers=ADMIN,
                               json=[{"device_id": PARTNER_A[2], "password": "cpe-secret-pass"}])

    answer = await stack.orchestrator.get("/api/v1/audit", params={"limit": 100}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    records = answer.json()["records"]
    done = [(r["service"], r["method"], r["path"], r["principal"], r["status"]) for r in records]
    assert ("orchestrator", "POST", "/api/v1/users", "bootstrap-admin", 201) in done
    assert ("console", "POST", "/console/api/session", None, 401) in done  # the failed sign-in
    assert ("console", "POST", "/console/api/session", "bob", 201) in done
    assert ("orchestrator", "POST", "/api/v1/apikeys", "bootstrap-admin", 201) in done
    assert ("inventory", "POST", f"/api/v1/devices/{PARTNER_A[1]}/tags/lab", "bob", 200) in done
    assert ("orchestrator", "POST", f"/api/v1/devices/{PARTNER_A[1]}/tasks", "oss", 201) in done
    assert ("orchestrator", "POST", "/api/v1/users/bob/password", "bob", 204) in done
    assert ("inventory", "POST", "/api/v1/credentials", "bootstrap-admin", 200) in done
    failed = next(r for r in records if r["status"] == 401)
    assert failed["body"] == {"username": "bob", "password": "<redacted>"} and failed["outcome"] == "refused"
    assert all(r["address"] for r in records)
    stored = json.dumps([d async for d in stack.db[AUDIT].find()], default=str)
    for secret in (ALICE_PASSWORD, "wrong-guess-1", "a new long password", key, "hunter2-secret", "cpe-secret-pass",
                   bob["X-CSRF-Token"], "test-admin-key"):
        assert secret not in stored and secret not in answer.text
    # Filters.
    by_bob = (await stack.orchestrator.get("/api/v1/audit", params={"principal": "bob"}, headers=ADMIN)).json()
    assert by_bob["records"] and {r["principal"] for r in by_bob["records"]} == {"bob"}
    refusals = (await stack.orchestrator.get("/api/v1/audit", params={"outcome": "refused"}, headers=ADMIN)).json()
    assert [r["status"] for r in refusals["records"]] == [401]
    page = (await stack.orchestrator.get("/api/v1/audit", params={"limit": 2}, headers=ADMIN)).json()
    older = (await stack.orchestrator.get("/api/v1/audit", params={"limit": 2, "before": page["next_before"]},
                                          headers=ADMIN)).json()
    assert {r["id"] for r in page["records"]}.isdisjoint({r["id"] for r in older["records"]})
    assert (await stack.orchestrator.get("/api/v1/audit", headers=bob)).status_code == 403
    # The trail expires by itself: a TTL index of the retention setting.
    indexes = {i["name"]: i async for i in await stack.db[AUDIT].list_indexes()}
    assert indexes["retention"]["expireAfterSeconds"] == int(stack.settings.audit_retention_days * 86400)


async def test_five_wrong_passwords_lock_the_account_until_an_admin_unlocks_it(stack: Stack) -> None:
    await create_user(stack, "carol", "read-only")
    for attempt in range(5):
        wrong = await stack.console.post("/console/api/session", json={"username": "carol",
                                                                       "password": f"guess number {attempt}"})
        assert wrong.status_code == 401
    assert "locked" in wrong.json()["detail"]
    right = await stack.console.post("/console/api/session", json={"username": "carol", "password": ALICE_PASSWORD})
    assert right.status_code == 401 and "locked" in right.json()["detail"]
    shown = (await stack.orchestrator.get("/api/v1/users/carol", headers=ADMIN)).json()
    assert shown["locked"] and shown["failures"] == 5
    unlocked = await stack.orchestrator.patch("/api/v1/users/carol", json={"locked": False}, headers=ADMIN)
    assert unlocked.status_code == 200 and not unlocked.json()["locked"]
    await sign_in(stack, "carol")
    # An unknown user is told the same as a wrong password.
    unknown = await stack.console.post("/console/api/session", json={"username": "nobody", "password": "x" * 12})
    assert unknown.json()["detail"] == "wrong username or password"


async def test_totp_sign_in_with_a_generated_code(stack: Stack) -> None:
    await create_user(stack, "dave", "operator")
    dave = await sign_in(stack, "dave")
    started = await stack.orchestrator.post("/api/v1/users/dave/totp", headers=dave)
    assert started.status_code == 200 and started.json()["uri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(started.json()["secret"])
    # Another user cannot enrol dave.
    await create_user(stack, "eve", "operator")
    eve = await sign_in(stack, "eve")
    assert (await stack.orchestrator.post("/api/v1/users/dave/totp", headers=eve)).status_code == 404
    assert (await stack.orchestrator.post("/api/v1/users/dave/totp/confirm", json={"code": "000000"},
                                          headers=dave)).status_code in (422, 200)
    confirmed = await stack.orchestrator.post("/api/v1/users/dave/totp/confirm", json={"code": totp.now()},
                                              headers=dave)
    if confirmed.status_code == 422:  # "000000" happened to be the code: enrolled already
        confirmed = await stack.orchestrator.get("/api/v1/users/dave", headers=dave)
    assert confirmed.json()["totp"] is True
    without = await stack.console.post("/console/api/session", json={"username": "dave", "password": ALICE_PASSWORD})
    assert without.status_code == 401 and "one-time code" in without.json()["detail"]
    # The code of the confirmation is used up; the next step's code is accepted (one step of clock
    # drift either way), as a code later than the last one used.
    code = totp.at(time.time() + 30)
    await sign_in(stack, "dave", code=code)
    replayed = await stack.console.post("/console/api/session", json={"username": "dave", "password": ALICE_PASSWORD,
                                                                      "totp_code": code})
    assert replayed.status_code == 401 and "reused" in replayed.json()["detail"]
    again = await stack.orchestrator.post("/api/v1/users/dave/totp", headers=dave)
    assert again.status_code == 409  # an enabled factor is not replaced (and so switched off) silently
    stored = await stack.db["users"].find_one({"_id": "dave"})
    assert stored is not None and stored["password_hash"].startswith("$argon2id$")
    assert "secret" not in (await stack.orchestrator.get("/api/v1/users/dave", headers=ADMIN)).text


async def test_sessions_are_listed_and_revoked_and_a_password_change_ends_the_others(stack: Stack) -> None:
    await create_user(stack, "frank", "operator")
    first = await sign_in(stack, "frank")
    second = await sign_in(stack, "frank")
    own = (await stack.orchestrator.get("/api/v1/sessions", headers=first)).json()["sessions"]
    assert len(own) == 2 and {s["via"] for s in own} == {"password"} and all(s["user"] == "frank" for s in own)
    assert "_id" not in json.dumps(own) and "csrf" not in json.dumps(own)
    # An admin revokes one: that cookie stops at once.
    one = own[0]["id"]
    assert (await stack.orchestrator.delete(f"/api/v1/sessions/{one}", headers=ADMIN)).status_code == 204
    left = [h for h in (first, second)
            if (await stack.inventory.get("/api/v1/devices", headers=h)).status_code == 200]
    assert len(left) == 1
    current = left[0]
    wrong = await stack.orchestrator.post("/api/v1/users/frank/password", headers=current,
                                          json={"current_password": "not it at all", "new_password": "x" * 16})
    assert wrong.status_code == 403
    third = await sign_in(stack, "frank")
    changed = await stack.orchestrator.post("/api/v1/users/frank/password", headers=current,
                                            json={"current_password": ALICE_PASSWORD, "new_password": "y" * 16})
    assert changed.status_code == 204
    assert (await stack.inventory.get("/api/v1/devices", headers=third)).status_code == 401
    assert (await stack.inventory.get("/api/v1/devices", headers=current)).status_code == 200
    old = await stack.console.post("/console/api/session", json={"username": "frank", "password": ALICE_PASSWORD})
    assert old.status_code == 401
    await sign_in(stack, "frank", password="y" * 16)
    # Disabling ends every session.
    assert (await stack.orchestrator.patch("/api/v1/users/frank", json={"disabled": True},
                                           headers=ADMIN)).status_code == 200
    assert (await stack.inventory.get("/api/v1/devices", headers=current)).status_code == 401
    assert (await stack.orchestrator.get("/api/v1/users", headers=current)).status_code == 401


async def test_a_revoked_key_and_a_disabled_user_stop_on_a_second_instance_within_5_s(stack: Stack) -> None:
    second = OrchestratorRuntime(stack.settings, with_kafka=False, http=stack.inventory)
    app = create_orchestrator(second, manage_runtime=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://orchestrator-2") as other:
        await create_user(stack, "gina", "operator")
        key = (await stack.orchestrator.post("/api/v1/apikeys", json={"name": "k", "role": "operator"},
                                             headers=ADMIN)).json()["key"]
        owned = (await stack.orchestrator.post("/api/v1/apikeys", json={"name": "g", "role": "operator",
                                                                        "user": "gina"}, headers=ADMIN)).json()["key"]
        for k in (key, owned):  # cached on the second instance now
            assert (await other.get("/api/v1/tasks", headers={"X-API-Key": k})).status_code == 200
        assert (await stack.orchestrator.delete("/api/v1/apikeys/k", headers=ADMIN)).status_code == 204
        assert (await stack.orchestrator.patch("/api/v1/users/gina", json={"disabled": True},
                                               headers=ADMIN)).status_code == 200
        started = time.monotonic()
        for k in (key, owned):
            while (await other.get("/api/v1/tasks", headers={"X-API-Key": k})).status_code != 401:
                assert time.monotonic() - started < 5, "still accepted after 5 s"
                await asyncio.sleep(0.1)
    await second.mongo.close()  # its http client is the stack's


async def test_audit_records_are_published_on_the_audit_topic(settings: Settings, mongodb_url: str,
                                                             kafka_bootstrap: str) -> None:
    from services.bus.events import TOPIC_AUDIT
    from services.bus.kafka import ensure_topics, make_consumer, make_producer
    from services.common.audit import AuditEvent

    await ensure_topics(settings, [TOPIC_AUDIT])
    producer = make_producer(settings)
    await producer.start()
    consumer = make_consumer(settings, TOPIC_AUDIT, group_id=None)
    await consumer.start()
    app = create_inventory(settings, producer=producer)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://inventory") as inventory:
            await inventory.post("/api/v1/devices/nothing-here/tags/lab", headers=ADMIN)
            await inventory.post("/api/v1/credentials", headers=ADMIN,
                                 json=[{"device_id": "x", "password": "published-secret"}])
            events: list[AuditEvent] = []
            async with asyncio.timeout(20):
                while len(events) < 2:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        assert all(b"published-secret" not in r.value for r in records)
                        assert all(r.key == b"bootstrap-admin" for r in records)
                        events += [AuditEvent.model_validate_json(r.value) for r in records]
        assert [(e.path, e.status, e.outcome) for e in events] == [
            ("/api/v1/devices/nothing-here/tags/lab", 404, "refused"), ("/api/v1/credentials", 200, "ok")]
        assert events[1].body == [{"device_id": "x", "password": "<redacted>"}]
    finally:
        await consumer.stop()
        await producer.stop()
        from pymongo import AsyncMongoClient

        dropper: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
        await dropper.drop_database(settings.mongodb_database)
        await dropper.close()


async def test_timeline_figures_profiles_and_deletion_are_limited_to_the_scope(stack: Stack) -> None:
    """The routes that used to refuse a scoped principal (403) now serve it within its scope, and
    answer 404 for a device outside it, exactly as for an unknown one."""
    from datetime import UTC, datetime

    from services.inventory.timeline import COLLECTION as TIMELINE

    await create_user(stack, "paula", "read-only", {"tags": "partner-a"})
    await create_user(stack, "pat", "admin", {"tags": "partner-a"})
    paula, pat = await sign_in(stack, "paula"), await sign_in(stack, "pat")
    inv, orch = stack.inventory, stack.orchestrator
    now = datetime.now(UTC)
    for number, device_id in enumerate(PARTNER_A[:1] + PARTNER_B[:1]):
        await stack.db[TIMELINE].insert_one({"_id": f"event-{number}", "device_id": device_id, "time": now,
                                             "kind": "booted", "changes": [], "details": {}, "expires_at": now})

    # The timeline: a device of the scope reads as for anyone; another is not found.
    mine = await inv.get(f"/api/v1/devices/{path(PARTNER_A[0])}/events", headers=paula)
    assert mine.status_code == 200 and [e["event_id"] for e in mine.json()["events"]] == ["event-0"]
    theirs = await inv.get(f"/api/v1/devices/{path(PARTNER_B[0])}/events", headers=paula)
    unknown = await inv.get(f"/api/v1/devices/{path('00259E-Box-NOPE')}/events", headers=paula)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["detail"].replace(PARTNER_B[0], "x") == unknown.json()["detail"].replace(
        "00259E-Box-NOPE", "x")
    assert (await inv.get(f"/api/v1/devices/{path(PARTNER_B[0])}/events", headers=ADMIN)).json()["events"]

    # The Overview's figures count the scope's devices and their tasks only.
    figures = (await inv.get("/api/v1/stats/devices", headers=paula)).json()
    assert figures["total"] == 3 and sum(v["count"] for v in figures["versions"]) == 3
    assert (await inv.get("/api/v1/stats/devices", headers=ADMIN)).json()["total"] == 5
    reboot = {"name": "reboot"}
    for device_id in (PARTNER_A[0], PARTNER_B[0], PARTNER_B[1]):
        assert (await orch.post(f"/api/v1/devices/{path(device_id)}/tasks", json=reboot,
                                headers=ADMIN)).status_code == 201
    assert (await orch.get("/api/v1/stats/tasks", headers=paula)).json()["by_status"]["pending"] == 1
    assert (await orch.get("/api/v1/stats/tasks", headers=ADMIN)).json()["by_status"]["pending"] == 3

    # Profiles: definitions are fleet settings (readable); figures and device routes are scoped;
    # writes need an unscoped admin.
    created = await orch.post("/api/v1/profiles", headers=ADMIN, json={
        "name": "ntp", "priority": 10, "parameters": [{"name": "Device.Time.NTPServer1", "value": "ntp.example"}]})
    assert created.status_code == 201, created.text
    profile_id = created.json()["id"]
    for number, device_id in enumerate(PARTNER_A[:2] + PARTNER_B):
        state = "failing" if number % 2 else "compliant"
        await stack.db["orchestrator_devices"].update_one(
            {"_id": device_id}, {"$set": {f"profile_status.{profile_id}": {"state": state}}})
    assert (await orch.get("/api/v1/profiles", headers=paula)).status_code == 200
    scoped = (await orch.get(f"/api/v1/profiles/{profile_id}/compliance", headers=paula)).json()
    assert scoped["counts"] == {"compliant": 1, "pending": 0, "drifted": 0, "failing": 1}
    assert [d["device_id"] for d in scoped["failing"]] == [PARTNER_A[1]]
    everyone = (await orch.get(f"/api/v1/profiles/{profile_id}", headers=ADMIN)).json()["compliance"]
    assert everyone == {"compliant": 2, "pending": 0, "drifted": 0, "failing": 2}
    assert (await orch.get(f"/api/v1/profiles/{profile_id}", headers=paula)).json()["compliance"]["failing"] == 1
    for route in ("variables", "desired"):
        assert (await orch.get(f"/api/v1/devices/{path(PARTNER_B[0])}/{route}", headers=paula)).status_code == 404
    assert (await orch.get(f"/api/v1/devices/{path(PARTNER_A[0])}/variables", headers=paula)).status_code == 200
    preview = await orch.post(f"/api/v1/profiles/{profile_id}/preview", headers=paula)
    assert preview.status_code == 200, preview.text
    assert preview.json()["matched"] == 3
    assert (await orch.post(f"/api/v1/profiles/{profile_id}/preview", headers=ADMIN)).json()["matched"] == 5
    assert (await orch.post(f"/api/v1/profiles/{profile_id}/disable", headers=pat)).status_code == 403

    # Deletion: a scoped admin cannot reach a device outside its scope (this inventory has no bus,
    # so a device it may delete gets as far as 503).
    outside = await inv.delete(f"/api/v1/devices/{path(PARTNER_B[0])}", headers=pat)
    assert outside.status_code == 404
    inside = await inv.delete(f"/api/v1/devices/{path(PARTNER_A[2])}", headers=pat)
    assert inside.status_code == 503
    assert (await inv.delete(f"/api/v1/devices/{path(PARTNER_A[2])}", headers=paula)).status_code == 403
    assert await inventory_store.devices(stack.db).count_documents({}) == 5


async def test_settings_changes_are_audited_before_and_after_without_a_secret(stack: Stack) -> None:
    """Profiles, policies, CPE credentials, users and API keys: the record of each change holds the
    setting as it was and as it is, secrets redacted; no stored record holds any secret used."""
    orch, inv = stack.orchestrator, stack.inventory
    secrets = ["profile-secret-value-1", "policy-secret-value-2", "cpe-cred-secret-3", "cpe-cred-secret-4",
               "variable-secret-5", "a long first password", "a long second password"]

    async def change_of(method: str, path_: str) -> dict[str, Any]:
        found = await stack.db[AUDIT].find_one({"method": method, "path": path_, "status": {"$lt": 400}},
                                               sort=[("time", -1)])
        assert found is not None, (method, path_)
        return found

    # A profile: created, changed, deleted.
    created = await orch.post("/api/v1/profiles", headers=ADMIN, json={
        "name": "admin-password", "priority": 10, "parameters": [
            {"name": "Device.Users.User.1.Password", "value": secrets[0]},
            {"name": "Device.Time.NTPServer1", "value": "ntp.example"}]})
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert (await orch.patch(f"/api/v1/profiles/{pid}", headers=ADMIN, json={"priority": 20})).status_code == 200
    assert (await orch.delete(f"/api/v1/profiles/{pid}", headers=ADMIN)).status_code == 204
    made = await change_of("POST", "/api/v1/profiles")
    assert made["before"] is None and made["after"]["name"] == "admin-password"
    assert made["after"]["parameters"][0] == {"name": "Device.Users.User.1.Password", "value": "<redacted>",
                                              "type": None}
    patched = await change_of("PATCH", f"/api/v1/profiles/{pid}")
    assert (patched["before"]["priority"], patched["after"]["priority"]) == (10, 20)
    assert (patched["before"]["version"], patched["after"]["version"]) == (1, 2)
    deleted = await change_of("DELETE", f"/api/v1/profiles/{pid}")
    assert deleted["before"]["priority"] == 20 and deleted["after"] is None
    imported = await orch.post("/api/v1/profiles/variables", headers=ADMIN, json={
        "secret": ["PPP_KEY"], "devices": [{"device_id": PARTNER_A[0], "variables": {"PPP_KEY": secrets[4],
                                                                                    "VLAN": "7"}}]})
    assert imported.status_code == 200, imported.text
    variables = await change_of("POST", "/api/v1/profiles/variables")
    assert variables["body"]["devices"] == [{"device_id": PARTNER_A[0],
                                             "variables": {"PPP_KEY": "<redacted>", "VLAN": "7"}}]

    # A policy: created and deleted.
    policy = await orch.post("/api/v1/policies", headers=ADMIN, json={
        "name": "set-password", "events": ["boot"], "tasks": [{"name": "setParameterValues", "parameter_values": [
            {"name": "Device.Users.User.1.Password", "value": secrets[1]}]}]})
    assert policy.status_code == 201, policy.text
    assert (await orch.delete(f"/api/v1/policies/{policy.json()['id']}", headers=ADMIN)).status_code == 204
    policy_made = await change_of("POST", "/api/v1/policies")
    assert policy_made["before"] is None and policy_made["after"]["name"] == "set-password"
    policy_gone = await change_of("DELETE", f"/api/v1/policies/{policy.json()['id']}")
    assert policy_gone["before"]["name"] == "set-password" and policy_gone["after"] is None

    # CPE credentials: imported, replaced, deleted; the audit says who has them, never an HA1.
    for password in secrets[2:4]:
        assert (await inv.post("/api/v1/credentials", headers=ADMIN,
                               json=[{"device_id": PARTNER_A[1], "password": password}])).status_code == 200
    assert (await inv.delete(f"/api/v1/credentials/{path(PARTNER_A[1])}", headers=ADMIN)).status_code == 204
    imports = [r async for r in stack.db[AUDIT].find({"path": "/api/v1/credentials"}).sort("time", 1)]
    assert imports[0]["before"] is None and imports[0]["after"][0]["username"] == PARTNER_A[1]
    assert imports[1]["before"][0]["username"] == PARTNER_A[1] and imports[1]["after"][0]["state"] == "active"
    removed = await change_of("DELETE", f"/api/v1/credentials/{PARTNER_A[1]}")
    assert removed["before"]["username"] == PARTNER_A[1] and removed["after"] is None

    # A user: created, role changed, password changed; an API key created and revoked.
    await create_user(stack, "hank", "read-only", password=secrets[5])
    assert (await orch.patch("/api/v1/users/hank", json={"role": "operator"}, headers=ADMIN)).status_code == 200
    assert (await orch.post("/api/v1/users/hank/password", headers=ADMIN,
                            json={"new_password": secrets[6]})).status_code == 204
    user_made = await change_of("POST", "/api/v1/users")
    assert user_made["before"] is None and user_made["after"]["username"] == "hank"
    role = await change_of("PATCH", "/api/v1/users/hank")
    assert (role["before"]["role"], role["after"]["role"]) == ("read-only", "operator")
    password = await change_of("POST", "/api/v1/users/hank/password")
    assert password["before"]["password_changed_at"] != password["after"]["password_changed_at"]
    key = (await orch.post("/api/v1/apikeys", json={"name": "siem", "role": "read-only"}, headers=ADMIN)).json()
    assert (await orch.delete("/api/v1/apikeys/siem", headers=ADMIN)).status_code == 204
    key_made = await change_of("POST", "/api/v1/apikeys")
    assert key_made["after"] == {"name": "siem", "role": "read-only", "user": None, "scope": None}
    assert (await change_of("DELETE", "/api/v1/apikeys/siem"))["before"]["name"] == "siem"

    # A refused change has no images.
    assert (await orch.patch("/api/v1/users/nobody", json={"role": "admin"}, headers=ADMIN)).status_code == 404
    refused = await stack.db[AUDIT].find_one({"path": "/api/v1/users/nobody"})
    assert refused is not None and refused["before"] is None and refused["after"] is None

    # The API shows the images too; and no stored record, nor the API's answer, holds a secret.
    answer = await orch.get("/api/v1/audit", params={"limit": 1000}, headers=ADMIN)
    assert any(r["before"] for r in answer.json()["records"])
    stored = json.dumps([d async for d in stack.db[AUDIT].find()], default=str)
    for secret in [*secrets, key["key"], "test-admin-key"]:
        assert secret not in stored and secret not in answer.text, secret
    assert "ha1" not in stored and "password_hash" not in stored and "$argon2" not in stored
