"""The northbound API as a client meets it: every service and the router in front, over HTTP.

The orchestrator, inventory and fileserver run for real (uvicorn, real MongoDB and S3), the
router before them. What is checked is what every service must share: one error shape (RFC
9457 problems), unknown query parameters refused, one merged API document at the entry point,
docs pages that load nothing from outside, and headers the router does not double.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.common.settings import Settings
from services.inventory.app import create_app as inventory_app
from services.orchestrator.app import create_app as orchestrator_app
from services.orchestrator.runtime import OrchestratorRuntime
from services.router.app import create_app as router_app
from tests.integration.test_fileserver_support import _listening_socket, run_fileserver, serving

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-key"}
PROBLEM = "application/problem+json"


@dataclass
class Stack:
    urls: dict[str, str]  # service (and "router") -> base URL


async def _boom() -> None:
    raise RuntimeError("a bug")


@pytest.fixture
async def stack(settings: Settings, mongodb_url: str, s3_server: object) -> AsyncIterator[Stack]:
    socks = {name: _listening_socket() for name in ("orchestrator", "inventory", "router")}
    urls = {name: f"http://127.0.0.1:{sock.getsockname()[1]}" for name, sock in socks.items()}
    async with run_fileserver(settings, with_kafka=False) as fileserver:
        urls["fileserver"] = fileserver.api_url
        wired = settings.model_copy(update={"orchestrator_url": urls["orchestrator"],
                                            "inventory_url": urls["inventory"], "fileserver_url": urls["fileserver"]})
        runtime = OrchestratorRuntime(wired, with_kafka=False)
        await runtime.start()
        inventory = inventory_app(wired, runtime.mongo)
        inventory.add_api_route("/api/v1/devices-boom", _boom, include_in_schema=False)  # an unexpected error
        try:
            async with serving(orchestrator_app(runtime, manage_runtime=False), socks["orchestrator"]), \
                    serving(inventory, socks["inventory"]), serving(router_app(wired), socks["router"]):
                yield Stack(urls)
        finally:
            await runtime.mongo.drop_database(settings.mongodb_database)
            await runtime.close()


def _is_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.headers
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body), body
    assert body["status"] == status and isinstance(body["detail"], str)
    return body


async def test_every_service_answers_errors_in_one_shape(stack: Stack) -> None:
    # (service, a route of it with a known query parameter)
    routes = {"orchestrator": "/api/v1/tasks", "inventory": "/api/v1/devices", "fileserver": "/api/v1/files"}
    async with httpx.AsyncClient(timeout=30) as client:
        for service, path in routes.items():
            for base in (stack.urls[service], stack.urls["router"]):
                unknown_route = _is_problem(await client.get(f"{base}/api/v1/nothing-here", headers=ADMIN), 404)
                assert unknown_route["type"] == "about:blank"
                _is_problem(await client.get(f"{base}{path}"), 401)
                typo = _is_problem(await client.get(f"{base}{path}", params={"limt": "5"}, headers=ADMIN), 400)
                assert typo["type"] == "urn:acs:problem:unknown-query-parameter", (service, base)
                assert typo["errors"] == [{"location": "query.limt", "message": "unknown query parameter",
                                           "type": "unknown_parameter"}]
                bad_value = _is_problem(await client.get(f"{base}{path}", params={"limit": "many"}, headers=ADMIN),
                                        422)
                assert bad_value["errors"][0]["location"] == "query.limit"
                assert (await client.get(f"{base}{path}", params={"limit": "2"}, headers=ADMIN)).status_code == 200
            _is_problem(await client.request("PATCH", f"{stack.urls[service]}{path}", headers=ADMIN), 405)

        # Bodies: malformed JSON is 400 wherever a JSON body is read.
        broken = {"content": b'{"name": ', "headers": {**ADMIN, "Content-Type": "application/json"}}
        for url in (f"{stack.urls['orchestrator']}/api/v1/policies", f"{stack.urls['inventory']}/api/v1/credentials",
                    f"{stack.urls['router']}/api/v1/jobs"):
            assert "JSON" in _is_problem(await client.post(url, **broken), 400)["detail"], url
        invalid = _is_problem(await client.post(f"{stack.urls['router']}/api/v1/apikeys", headers=ADMIN,
                                                json={"name": "", "role": "root"}), 422)
        assert {e["location"] for e in invalid["errors"]} == {"body.name", "body.role"}
        rows = _is_problem(await client.post(f"{stack.urls['router']}/api/v1/credentials", headers=ADMIN,
                                             json=[{"username": "u"}]), 400)
        assert rows["errors"] == [{"location": "row 1", "message": "password is required"}]
        metadata = _is_problem(await client.put(f"{stack.urls['router']}/api/v1/files/x.bin", headers=ADMIN,
                                                content=b"x"), 422)
        assert metadata["errors"][0]["location"] == "metadata.file_type"
        # An upload's metadata comes in query parameters the route reads itself: not "unknown".
        stored = await client.put(f"{stack.urls['router']}/api/v1/files/x.bin", headers=ADMIN, content=b"x",
                                  params={"file_type": "2 Web Content", "version": "1"})
        assert stored.status_code == 201, stored.text

        crash = _is_problem(await client.get(f"{stack.urls['inventory']}/api/v1/devices-boom", headers=ADMIN), 500)
        assert "a bug" not in crash["detail"]


async def test_the_router_serves_one_merged_api_document(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.urls["router"], timeout=30) as client:
        response = await client.get("/api/v1/openapi.json", headers=ADMIN)
    assert response.status_code == 200
    document = response.json()
    paths = set(document["paths"])
    assert {"/api/v1/devices/{device_id}/tasks", "/api/v1/devices/{device_id}/connection-request",
            "/api/v1/tasks", "/api/v1/jobs", "/api/v1/jobs/{job_id}/cancel", "/api/v1/apikeys",
            "/api/v1/devices", "/api/v1/devices/{device_id}", "/api/v1/credentials",
            "/api/v1/files"} <= paths
    assert all(p.startswith("/api/v1/") for p in paths)  # no health routes, nothing the router does not route
    schemas = document["components"]["schemas"]
    assert {"TaskOut", "JobOut", "Device", "FileInfo", "Problem"} <= set(schemas)
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', response.text.replace('":"', '": "')))
    assert refs and refs <= set(schemas), refs - set(schemas)
    tags = {t["name"] for t in document["tags"]}
    assert {"tasks", "jobs", "inventory", "fileserver"} <= tags
    for item in document["paths"].values():
        for operation in item.values():
            for code, answer in operation["responses"].items():
                if code.startswith(("4", "5")):
                    assert list(answer["content"]) == [PROBLEM]


async def test_docs_pages_load_every_asset_from_the_service_itself(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        # The whole API's pages: the router's in compose, the orchestrator's behind a Kubernetes Ingress.
        for base in (stack.urls["router"], stack.urls["orchestrator"]):
            assert (await client.get(f"{base}/api/v1/openapi.json", headers=ADMIN)).json()["paths"].keys() >= {
                "/api/v1/tasks", "/api/v1/devices", "/api/v1/files"}
            page = (await client.get(f"{base}/api/v1/docs")).text
            assert 'const spec = "/api/v1/openapi.json"' in page and not re.search(r"https?://", page)
            assert (await client.get(f"{base}/api/v1/docs/assets/swagger-ui-bundle.js")).status_code == 200
            assert (await client.get(f"{base}/api/v1/redoc")).status_code == 200
        for name, base in stack.urls.items():
            for page in ("/docs", "/redoc"):
                html = (await client.get(f"{base}{page}")).text
                assert not re.search(r"https?://", html), (name, page)  # no CDN, no font service
                assets = re.findall(r'(?:src|href)="([^"]+)"', html)
                assert len(assets) >= 2, (name, page, html)
                for asset in assets:
                    assert asset.startswith("/"), asset
                    assert (await client.get(base + asset)).status_code == 200, (name, asset)
            spec = re.search(r'const spec = "([^"]+)"', (await client.get(f"{base}/docs")).text)
            assert spec is not None
            expected = "/api/v1/openapi.json" if name == "router" else "/openapi.json"
            assert spec.group(1) == expected, name


async def test_api_documents_need_a_read_key_everywhere_and_the_docs_pages_ask_for_one(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        reader = await client.post(f"{stack.urls['router']}/api/v1/apikeys", headers=ADMIN,
                                   json={"name": "docs-reader", "role": "read-only"})
        as_reader = {"X-API-Key": reader.json()["key"]}
        documents = [f"{stack.urls[name]}/openapi.json" for name in ("orchestrator", "inventory", "fileserver")]
        documents += [f"{stack.urls[name]}/api/v1/openapi.json" for name in ("router", "orchestrator")]
        for url in documents:
            _is_problem(await client.get(url), 401)
            _is_problem(await client.get(url, headers={"Authorization": "Bearer acs_not-a-key"}), 401)
            assert "paths" in (await client.get(url, headers=as_reader)).json(), url
        for base in stack.urls.values():
            for page in ("/docs", "/redoc"):
                shell = await client.get(f"{base}{page}")
                # A static shell: it asks for the key and holds nothing of the document.
                assert shell.status_code == 200 and 'id="acs-key"' in shell.text
                assert "/api/v1/tasks" not in shell.text and "Authorization" in shell.text


async def test_the_router_sends_each_header_once(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.urls["router"], timeout=30) as client:
        response = await client.get("/api/v1/devices", headers=ADMIN)
    assert response.status_code == 200
    names = [name.lower() for name, _ in response.headers.multi_items()]
    assert names.count("date") == 1 and names.count("server") == 1, names


async def test_a_revoked_key_is_refused_by_every_service_within_seconds(stack: Stack) -> None:
    # Each service caches the keys it saw (30 s); a revoke must still reach all of them at once.
    routes = {"orchestrator": "/api/v1/tasks", "inventory": "/api/v1/devices", "fileserver": "/api/v1/files",
              "router": "/api/v1/devices"}
    async with httpx.AsyncClient(timeout=30) as client:
        created = await client.post(f"{stack.urls['router']}/api/v1/apikeys", headers=ADMIN,
                                    json={"name": "soon-revoked", "role": "read-only"})
        assert created.status_code == 201, created.text
        key = {"X-API-Key": created.json()["key"]}
        for service, path in routes.items():  # every service has the key in its cache now
            assert (await client.get(f"{stack.urls[service]}{path}", headers=key)).status_code == 200, service
        assert (await client.delete(f"{stack.urls['router']}/api/v1/apikeys/soon-revoked",
                                    headers=ADMIN)).status_code == 204
        revoked_at = time.monotonic()
        refused: dict[str, float] = {}
        while len(refused) < len(routes) and time.monotonic() - revoked_at < 10:
            for service, path in routes.items():
                if service not in refused:
                    status = (await client.get(f"{stack.urls[service]}{path}", headers=key)).status_code
                    if status == 401:
                        refused[service] = time.monotonic() - revoked_at
                    else:
                        assert status == 200, (service, status)
            await asyncio.sleep(0.1)
        assert set(refused) == set(routes), refused
        assert max(refused.values()) < 5.0, refused
        # And it stays refused (the negative answer is cached, not the old one).
        for service, path in routes.items():
            assert (await client.get(f"{stack.urls[service]}{path}", headers=key)).status_code == 401
