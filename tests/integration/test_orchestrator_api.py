"""The orchestrator's northbound API on a real MongoDB: tasks, bad input, roles, jobs, policies, keys.

The fileserver and inventory are stood in for by an httpx MockTransport that answers like them
(same paths, same bodies), so these tests need only MongoDB.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from services.common.settings import Settings
from services.orchestrator import tasks as T
from services.orchestrator.app import create_app
from services.orchestrator.jobs import JobConfig
from services.orchestrator.runtime import OrchestratorRuntime
from services.orchestrator.state import DeviceState

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-key"}
DEVICE = "09D021-IGD%20Simulator-000000000012"
# A device id is percent-encoded already; in a URL path it is encoded once more.
DEVICE_PATH = quote(DEVICE, safe="")
FLEET = [f"000000-Box-{i:03d}" for i in range(7)]


def _siblings(request: httpx.Request) -> httpx.Response:
    """The fileserver and inventory, as far as the orchestrator asks them anything."""
    path = request.url.path
    if path == "/api/v1/files/fw-2.0.bin":
        assert request.headers["authorization"] == "Bearer test-admin-key"
        return httpx.Response(200, json={"name": "fw-2.0.bin", "size": 83687, "file_type": "1 Firmware Upgrade Image",
                                         "version": "2.0", "sha256": "0" * 64})
    if path.startswith("/api/v1/files/"):
        return httpx.Response(404, json={"detail": "no such file"})
    if path == "/api/v1/devices":
        query = json.loads(request.url.params["q"])
        if "bogus" in query:
            return httpx.Response(400, json={"detail": "unknown field 'bogus'"})
        if query != {"tags": "lab"}:
            return httpx.Response(200, json={"devices": [], "next_cursor": None})
        # Pages of 3, with the inventory's cursor protocol.
        start = int(request.url.params.get("cursor") or 0)
        page = FLEET[start:start + 3]
        more = start + 3 < len(FLEET)
        return httpx.Response(200, json={"devices": [{"id": d} for d in page],
                                         "next_cursor": str(start + 3) if more else None})
    return httpx.Response(404, json={"detail": "not found"})


@pytest.fixture
async def api(settings: Settings, mongodb_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, OrchestratorRuntime]]:
    runtime = OrchestratorRuntime(settings, with_kafka=False, http=httpx.AsyncClient(
        transport=httpx.MockTransport(_siblings)), job_config=JobConfig(claim_interval=0.2))
    await runtime.start()
    await runtime.store.save_device(DeviceState(id=DEVICE))  # it has informed once
    app = create_app(runtime, manage_runtime=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://orchestrator") as client:
        yield client, runtime
    await runtime.mongo.drop_database(settings.mongodb_database)
    await runtime.close()


async def _job_resolved(client: httpx.AsyncClient, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """The job once the engine has paged through its selection."""
    async with asyncio.timeout(10):
        while True:
            job = (await client.get(f"/api/v1/jobs/{job_id}", headers=headers)).json()
            if job["status"] != "resolving":
                return job
            await asyncio.sleep(0.05)


async def _key(client: httpx.AsyncClient, role: str) -> dict[str, str]:
    response = await client.post("/api/v1/apikeys", json={"name": f"{role}-key", "role": role}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return {"X-API-Key": response.json()["key"]}


async def test_a_task_is_queued_listed_cancelled_and_retried(api: Any) -> None:
    client, _ = api
    operator = await _key(client, "operator")
    reader = await _key(client, "read-only")
    created = await client.post(f"/api/v1/devices/{DEVICE_PATH}/tasks", headers=operator, json={
        "name": "getParameterValues", "parameterNames": ["InternetGatewayDevice.DeviceInfo."], "expires_in": 3600})
    assert created.status_code == 201, created.text
    task = created.json()
    assert (task["status"], task["device_id"], task["created_by"], task["attempts"]) == (
        "pending", DEVICE, "operator-key", 0)
    assert task["args"] == {"parameter_names": ["InternetGatewayDevice.DeviceInfo."]}
    assert task["expires_at"] is not None
    assert "progress" not in task and task["connection_request"] is None

    assert (await client.get(f"/api/v1/tasks/{task['id']}", headers=reader)).json()["id"] == task["id"]
    history = (await client.get(f"/api/v1/devices/{DEVICE_PATH}/tasks", headers=reader)).json()
    assert [t["id"] for t in history["tasks"]] == [task["id"]]
    found = (await client.get("/api/v1/tasks", params={"status": "pending", "name": "getParameterValues",
                                                       "device_id": DEVICE}, headers=reader)).json()
    assert [t["id"] for t in found["tasks"]] == [task["id"]]
    assert (await client.get("/api/v1/tasks", params={"status": "failed"}, headers=reader)).json()["tasks"] == []

    cancelled = await client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=operator)
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["reason"]) == ("cancelled", "cancelled by operator-key")
    again = await client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=operator)
    assert again.status_code == 409 and "a cancelled task cannot become cancelled" in again.json()["detail"]
    retried = await client.post(f"/api/v1/tasks/{task['id']}/retry", headers=operator)
    assert retried.status_code == 200 and retried.json()["status"] == "pending"


async def test_bad_input_gets_precise_errors(api: Any) -> None:
    client, _ = api
    reader = await _key(client, "read-only")
    url = f"/api/v1/devices/{DEVICE_PATH}/tasks"

    unknown = await client.post(url, json={"name": "formatDisk"}, headers=ADMIN)
    assert unknown.status_code == 422
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["errors"][0]["message"].startswith("unknown task name 'formatDisk'; expected one of: "
                                                             "getParameterValues, setParameterValues")
    nameless = await client.post(url, json={"parameter_names": ["X."]}, headers=ADMIN)
    assert nameless.status_code == 422 and "a task needs a 'name'" in nameless.json()["errors"][0]["message"]
    bad_args = await client.post(url, json={"name": "addObject", "object_name": "Device.IP.Interface"},
                                 headers=ADMIN)
    assert bad_args.status_code == 422 and "ending with '.'" in bad_args.text

    assert (await client.get("/api/v1/tasks/nope", headers=reader)).status_code == 404
    assert (await client.post("/api/v1/tasks/nope/cancel", headers=ADMIN)).status_code == 404
    missing = await client.post(url, json={"name": "reboot"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert (await client.post(url, json={"name": "reboot"},
                              headers={"X-API-Key": "acs_not-a-key"})).status_code == 401
    forbidden = await client.post(url, json={"name": "reboot"}, headers=reader)
    assert forbidden.status_code == 403 and forbidden.json()["detail"] == "this needs the operator role"
    assert (await client.post("/api/v1/policies", json={}, headers=await _key(client, "operator"))).status_code \
        == 403
    assert (await client.get("/api/v1/tasks", params={"cursor": "garbage"}, headers=reader)).status_code == 400


async def test_a_download_task_is_resolved_against_the_fileserver(api: Any, settings: Settings) -> None:
    client, _ = api
    created = await client.post(f"/api/v1/devices/{DEVICE_PATH}/tasks", headers=ADMIN,
                                json={"name": "download", "file_name": "fw-2.0.bin"})
    assert created.status_code == 201, created.text
    assert created.json()["args"] == {
        "file_name": "fw-2.0.bin", "file_type": "1 Firmware Upgrade Image", "file_size": 83687,
        "url": f"{settings.files_public_url}/download/fw-2.0.bin", "target_file_name": "", "delay_seconds": 0,
        "version": "2.0"}
    missing = await client.post(f"/api/v1/devices/{DEVICE_PATH}/tasks", headers=ADMIN,
                                json={"name": "download", "file_name": "nope.bin"})
    assert missing.status_code == 422 and "no file named 'nope.bin'" in missing.json()["detail"]


async def test_connection_request_for_a_device_without_an_address_says_why_it_was_not_sent(api: Any) -> None:
    client, _ = api
    created = await client.post(f"/api/v1/devices/{DEVICE_PATH}/tasks", params={"connection_request": "true"},
                                headers=ADMIN, json={"name": "reboot"})
    assert created.status_code == 201
    not_sent = {"outcome": "no_address", "transport": "none", "http_status": None,
                "detail": "the device never reported a ConnectionRequestURL"}
    assert created.json()["connection_request"] == not_sent
    # The same, on its own.
    alone = await client.post(f"/api/v1/devices/{DEVICE_PATH}/connection-request", headers=ADMIN)
    assert (alone.status_code, alone.json()) == (200, not_sent)
    assert (await client.post("/api/v1/devices/nobody/connection-request", headers=ADMIN)).status_code == 404
    reader = await _key(client, "read-only")
    assert (await client.post(f"/api/v1/devices/{DEVICE_PATH}/connection-request", headers=reader)).status_code \
        == 403


async def test_a_task_for_an_unknown_device_is_refused_unless_preprovisioned(api: Any) -> None:
    client, _ = api
    # The id encoded once instead of twice, and a plain typo: both name no device.
    for typo in ("09D021-IGD%20Simulator-000000000012", "hello%20world"):
        refused = await client.post(f"/api/v1/devices/{typo}/tasks", headers=ADMIN, json={"name": "reboot"})
        assert refused.status_code == 404, typo
        assert refused.headers["content-type"] == "application/problem+json"
        assert "?preprovision=true" in refused.json()["detail"]
    assert (await client.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"] == []  # nothing was stored

    future = quote("000000-Box-NEW", safe="")
    queued = await client.post(f"/api/v1/devices/{future}/tasks", params={"preprovision": "true"}, headers=ADMIN,
                               json={"name": "reboot"})
    assert queued.status_code == 201 and queued.json()["device_id"] == "000000-Box-NEW"


async def test_unknown_query_parameters_and_malformed_bodies_are_refused(api: Any) -> None:
    client, _ = api
    for path in ("/api/v1/tasks", "/api/v1/jobs", f"/api/v1/devices/{DEVICE_PATH}/tasks", "/api/v1/policies"):
        refused = await client.get(path, params={"origin": "api"}, headers=ADMIN)
        assert refused.status_code == 400, path
        problem = refused.json()
        assert problem["type"] == "urn:acs:problem:unknown-query-parameter"
        assert "'origin'" in problem["detail"] and problem["errors"][0]["location"] == "query.origin"
    url = f"/api/v1/devices/{DEVICE_PATH}/tasks"
    typo = await client.post(url, params={"conection_request": "true"}, headers=ADMIN, json={"name": "reboot"})
    assert typo.status_code == 400 and "connection_request" in typo.json()["detail"]  # it names the known ones

    broken = await client.post(url, content=b'{"name": "reboot"', headers={**ADMIN, "Content-Type": "application/json"})
    assert broken.status_code == 400
    assert broken.json()["type"] == "urn:acs:problem:malformed-body" and "not valid JSON" in broken.json()["detail"]
    untyped = await client.post(url, content=b'{"name": "reboot"}',
                                headers={**ADMIN, "Content-Type": "application/x-www-form-urlencoded"})
    assert untyped.status_code == 400 and "Content-Type: application/json" in untyped.json()["detail"]
    listed = await client.post(url, json=["reboot"], headers=ADMIN)
    assert listed.status_code == 400 and "must be a JSON object, not an array" in listed.json()["detail"]
    assert (await client.post(url, headers=ADMIN)).status_code == 400
    assert (await client.get("/api/v1/tasks", headers=ADMIN)).json()["tasks"] == []


async def test_a_task_created_with_a_timeout_answers_with_its_end(api: Any) -> None:
    client, runtime = api
    url = f"/api/v1/devices/{DEVICE_PATH}/tasks"
    waited = await client.post(url, params={"timeout": 300}, headers=ADMIN, json={"name": "getRPCMethods"})
    assert waited.status_code == 202 and waited.json()["status"] == "pending"

    async def a_session_runs_it() -> None:
        # What the engine writes when a session takes the task and the CPE answers.
        for _ in range(500):  # another request stores it: nothing to wait on but the database
            found, _ = await runtime.store.list_tasks(status="pending", name="reboot")
            if found:
                break
            await asyncio.sleep(0.02)
        task = found[0]
        started = await runtime.store.save_task(T.start(task, "s1", task.updated_at))
        assert started is not None
        await asyncio.sleep(0.2)
        assert await runtime.store.save_task(T.succeed(started, started.updated_at, {"rebooted": True}))

    session = asyncio.create_task(a_session_runs_it())
    done = await client.post(url, params={"timeout": 10_000}, headers=ADMIN, json={"name": "reboot"})
    await session
    assert done.status_code == 200
    assert (done.json()["status"], done.json()["result"]) == ("succeeded", {"rebooted": True})
    assert (await client.post(url, params={"timeout": 0}, headers=ADMIN, json={"name": "reboot"})).status_code == 422


async def test_a_job_queues_the_task_for_every_matching_device_and_counts_progress(api: Any) -> None:
    client, _ = api
    operator = await _key(client, "operator")
    created = await client.post("/api/v1/jobs", headers=operator, json={
        "query": {"tags": "lab"}, "task": {"name": "getRPCMethods"}})
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["task"] == {"name": "getRPCMethods", "args": {}}
    job = await _job_resolved(client, job["id"], operator)
    assert (job["status"], job["device_count"], job["counts"]["pending"], job["pages"]) == ("running", 7, 7, 3)
    tasks = (await client.get("/api/v1/tasks", params={"job_id": job["id"], "limit": 100},
                              headers=operator)).json()["tasks"]
    assert sorted(t["device_id"] for t in tasks) == FLEET
    assert {t["origin"] for t in tasks} == {f"job:{job['id']}"}

    for task in tasks:
        assert (await client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=operator)).status_code == 200
    finished = (await client.get(f"/api/v1/jobs/{job['id']}", headers=operator)).json()
    assert (finished["status"], finished["counts"]["cancelled"]) == ("finished", 7)

    empty = await client.post("/api/v1/jobs", headers=operator, json={"query": {"tags": "nobody"},
                                                                        "task": {"name": "reboot"}})
    empty_job = await _job_resolved(client, empty.json()["id"], operator)
    assert (empty_job["status"], empty_job["device_count"]) == ("finished", 0)

    bad = await client.post("/api/v1/jobs", headers=operator, json={"query": {"bogus": 1},
                                                                      "task": {"name": "reboot"}})
    assert bad.status_code == 422 and "unknown field 'bogus'" in bad.json()["detail"]


async def test_a_job_setting_a_wifi_key_never_shows_the_key(api: Any) -> None:
    client, _ = api
    reader = await _key(client, "read-only")
    name = "Device.WiFi.AccessPoint.1.Security.KeyPassphrase"
    created = await client.post("/api/v1/jobs", headers=ADMIN, json={"query": {"tags": "lab"}, "task": {
        "name": "setParameterValues", "parameter_values": [[name, "job-wifi-key"]]}})
    assert created.status_code == 202 and "job-wifi-key" not in created.text
    job = await _job_resolved(client, created.json()["id"], ADMIN)
    assert job["task"]["args"]["parameter_values"] == [{"name": name, "value": "<redacted>", "type": "xsd:string"}]
    for headers in (ADMIN, reader):
        for path in (f"/api/v1/jobs/{job['id']}", "/api/v1/jobs", f"/api/v1/tasks?job_id={job['id']}"):
            answer = await client.get(path, headers=headers)
            assert answer.status_code == 200 and "job-wifi-key" not in answer.text, path


async def test_jobs_are_listed_newest_first_and_cancelled(api: Any) -> None:
    client, runtime = api
    ids = []
    for _ in range(3):
        created = await client.post("/api/v1/jobs", headers=ADMIN, json={"query": {"tags": "lab"},
                                                                          "task": {"name": "getRPCMethods"}})
        ids.append((await _job_resolved(client, created.json()["id"], ADMIN))["id"])
    first = (await client.get("/api/v1/jobs", params={"limit": 2}, headers=ADMIN)).json()
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
    rest = (await client.get("/api/v1/jobs", params={"cursor": first["next_cursor"]}, headers=ADMIN)).json()
    assert ([j["id"] for j in rest["jobs"]], rest["next_cursor"]) == ([ids[0]], None)

    # One task of the job is in a session already: the cancel takes it too (its answers are ignored).
    task = (await runtime.store.list_tasks(job_id=ids[1]))[0][0]
    assert await runtime.store.save_task(T.start(task, "s1", task.updated_at))
    cancelled = await client.post(f"/api/v1/jobs/{ids[1]}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["status"], body["counts"]["cancelled"], body["reason"]) == ("cancelled", 7,
                                                                            "job cancelled by bootstrap-admin")
    assert (await client.post(f"/api/v1/jobs/{ids[1]}/cancel", headers=ADMIN)).status_code == 409
    assert (await client.post("/api/v1/jobs/nope/cancel", headers=ADMIN)).status_code == 404

    only = (await client.get("/api/v1/jobs", params={"status": "cancelled"}, headers=ADMIN)).json()["jobs"]
    assert [j["id"] for j in only] == [ids[1]]
    running = (await client.get("/api/v1/jobs", params={"status": "running"}, headers=ADMIN)).json()["jobs"]
    assert [j["id"] for j in running] == [ids[2], ids[0]]
    assert (await client.get("/api/v1/jobs", params={"status": "lost"}, headers=ADMIN)).status_code == 422


async def test_policies_are_created_listed_and_deleted_by_admins(api: Any) -> None:
    client, runtime = api
    body = {"name": "ntp", "events": ["bootstrap", "boot"], "match": {"oui": "09D021",
            "query": {"DeviceInfo.SoftwareVersion": {"$lt": "2.0"}}},
            "tasks": [{"name": "setParameterValues", "parameter_values": [["Device.Time.NTPServer1", "pool.ntp.org"]]},
                      {"name": "download", "file_name": "fw-2.0.bin"}]}
    created = await client.post("/api/v1/policies", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    policy = created.json()
    assert policy["tasks"][0]["args"]["parameter_values"] == [
        {"name": "Device.Time.NTPServer1", "value": "pool.ntp.org", "type": "xsd:string"}]
    assert policy["tasks"][1]["args"]["file_size"] == 83687  # resolved once, when saved
    assert (await client.post("/api/v1/policies", json=body, headers=ADMIN)).status_code == 409
    bad_query = await client.post("/api/v1/policies", headers=ADMIN, json={
        **body, "name": "other", "match": {"query": {"DeviceInfo.X": {"$near": 1}}}})
    # The inventory's query language, and its message.
    assert bad_query.status_code == 422 and "unknown operator '$near'" in bad_query.text

    listed = (await client.get("/api/v1/policies", headers=ADMIN)).json()["policies"]
    assert [p["name"] for p in listed] == ["ntp"]
    assert (await runtime.policies.current())[0].match.query == {"DeviceInfo.SoftwareVersion": {"$lt": "2.0"}}
    assert (await client.delete(f"/api/v1/policies/{policy['id']}", headers=ADMIN)).status_code == 204
    assert (await client.get(f"/api/v1/policies/{policy['id']}", headers=ADMIN)).status_code == 404


async def test_api_keys_are_created_by_admins_listed_and_revoked(api: Any) -> None:
    client, _ = api
    operator = await _key(client, "operator")  # 201 with the secret: the create logs at INFO without a crash
    assert (await client.post("/api/v1/apikeys", json={"name": "x", "role": "admin"},
                              headers=operator)).status_code == 403
    # A retry of a create whose answer was lost does not store a second key under the name.
    again = await client.post("/api/v1/apikeys", json={"name": "operator-key", "role": "operator"}, headers=ADMIN)
    assert again.status_code == 409 and "revoke it first" in again.text
    assert (await client.get("/api/v1/tasks", headers=operator)).status_code == 200  # a use, noted

    listed = await client.get("/api/v1/apikeys", headers=ADMIN)
    assert listed.status_code == 200
    (entry,) = listed.json()["apikeys"]
    assert (entry["name"], entry["role"]) == ("operator-key", "operator")
    assert entry["created_at"] and entry["last_used_at"]
    assert set(entry) == {"name", "role", "user", "scope", "created_at", "last_used_at"}  # never the key or its hash
    assert operator["X-API-Key"] not in listed.text
    assert (await client.get("/api/v1/apikeys", headers=operator)).status_code == 403

    assert (await client.delete("/api/v1/apikeys/operator-key", headers=ADMIN)).status_code == 204
    assert (await client.delete("/api/v1/apikeys/operator-key", headers=ADMIN)).status_code == 404
    assert (await client.get("/api/v1/apikeys", headers=ADMIN)).json() == {"apikeys": []}


async def test_the_api_is_documented(api: Any) -> None:
    client, _ = api
    assert (await client.get("/openapi.json")).status_code == 401  # the document needs a key
    spec = (await client.get("/openapi.json", headers=ADMIN)).json()
    assert {"/api/v1/devices/{device_id}/tasks", "/api/v1/tasks/{task_id}/cancel", "/api/v1/jobs",
            "/api/v1/policies", "/api/v1/apikeys"} <= set(spec["paths"])
    assert "bearer" in spec["components"]["securitySchemes"]
