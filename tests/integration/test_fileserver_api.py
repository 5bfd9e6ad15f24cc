"""The operator API (/api/v1/files) against the real fileserver, S3 and MongoDB."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.common.settings import Settings
from services.fileserver.catalog import TRASH
from services.fileserver.credentials import mint_download_credentials
from tests.integration.test_fileserver_support import (
    ADMIN,
    MIB,
    DigestAuth,
    RunningFileServer,
    run_fileserver,
    seeded_chunks,
    seeded_sha256,
    upload,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def fileserver(settings: Settings, mongodb_url: str,
                     s3_server: object) -> AsyncIterator[RunningFileServer]:
    # No Kafka: nothing here downloads, so no event is published.
    async with run_fileserver(settings, with_kafka=False) as running:
        yield running


async def test_fileserver_api_requires_a_key_with_the_right_role(fileserver: RunningFileServer) -> None:
    url = f"{fileserver.api_url}/api/v1/files"
    reader_key = await fileserver.runtime.auth.create("noc", "read-only")
    operator_key = await fileserver.runtime.auth.create("ops", "operator")
    async with httpx.AsyncClient(timeout=30) as client:
        for method, path in (("GET", ""), ("GET", "/x.bin"), ("PUT", "/x.bin"), ("DELETE", "/x.bin")):
            anonymous = await client.request(method, url + path, content=b"data" if method == "PUT" else None)
            assert anonymous.status_code == 401, (method, path)
            assert anonymous.headers["www-authenticate"] == "Bearer"
            unknown = await client.request(method, url + path, headers={"X-API-Key": "acs_nope"})
            assert unknown.status_code == 401, (method, path)

        as_reader = {"Authorization": f"Bearer {reader_key}"}
        assert (await client.get(url, headers=as_reader)).status_code == 200
        refused = await client.put(url + "/x.bin", content=b"data", headers=as_reader,
                                   params={"file_type": "2 Web Content"})
        assert refused.status_code == 403
        created = await client.put(url + "/x.bin", content=b"data", params={"file_type": "2 Web Content"},
                                   headers={"X-API-Key": operator_key})
        assert created.status_code == 201
        assert created.json()["uploaded_by"] == "ops"
        assert (await client.get(url + "/x.bin", headers=as_reader)).status_code == 200
        assert (await client.delete(url + "/x.bin", headers=as_reader)).status_code == 403


async def test_fileserver_upload_list_describe_delete(fileserver: RunningFileServer) -> None:
    url = f"{fileserver.api_url}/api/v1/files"
    async with httpx.AsyncClient(timeout=30) as client:
        # Metadata in headers this time (query parameters are covered by the other tests).
        first = await upload(client, fileserver, "box-2.0.bin", b"image 2.0", file_type=None,
                             headers={"X-File-Type": "1 Firmware Upgrade Image", "X-File-OUI": "00D09E",
                                      "X-File-Product-Class": "Box", "X-File-Version": "2.0",
                                      "X-File-Description": "stable", "Content-Type": "application/x-tar"})
        assert first.status_code == 201, first.text
        assert first.headers["location"] == "/api/v1/files/box-2.0.bin"
        assert first.json()["content_type"] == "application/x-tar"
        await upload(client, fileserver, "box-2.1.bin", b"image 2.1", oui="00D09E", product_class="Box",
                     version="2.1")
        await upload(client, fileserver, "other.cfg", b"cfg", file_type="X 00D09E Profile")

        everything = (await client.get(url, headers=ADMIN)).json()
        assert [f["name"] for f in everything["files"]] == ["box-2.0.bin", "box-2.1.bin", "other.cfg"]
        assert everything["next_cursor"] is None
        boxes = (await client.get(url, headers=ADMIN,
                                  params={"oui": "00d09e", "product_class": "Box"})).json()
        assert [f["name"] for f in boxes["files"]] == ["box-2.0.bin", "box-2.1.bin"]
        vendor = (await client.get(url, headers=ADMIN, params={"file_type": "X 00D09E Profile"})).json()
        assert [f["name"] for f in vendor["files"]] == ["other.cfg"]
        page = (await client.get(url, headers=ADMIN, params={"limit": 2})).json()
        assert [f["name"] for f in page["files"]] == ["box-2.0.bin", "box-2.1.bin"]
        rest = (await client.get(url, headers=ADMIN, params={"limit": 2, "cursor": page["next_cursor"]})).json()
        assert [f["name"] for f in rest["files"]] == ["other.cfg"]

        described = (await client.get(f"{url}/box-2.0.bin", headers=ADMIN)).json()
        assert {k: described[k] for k in ("size", "oui", "product_class", "version", "description")} == {
            "size": 9, "oui": "00D09E", "product_class": "Box", "version": "2.0", "description": "stable"}
        assert (await client.get(f"{url}/nothing.bin", headers=ADMIN)).status_code == 404

        key = (await fileserver.runtime.catalog.get("box-2.0.bin")).object_key  # type: ignore[union-attr]
        assert (await client.delete(f"{url}/box-2.0.bin", headers=ADMIN)).status_code == 204
        assert (await client.delete(f"{url}/box-2.0.bin", headers=ADMIN)).status_code == 404
        assert (await client.get(f"{url}/box-2.0.bin", headers=ADMIN)).status_code == 404
        gone = await client.get(described["download_url"], auth=DigestAuth(
            *mint_download_credentials(fileserver.settings, "box-2.0.bin", "00D09E-Box-1")))
        assert gone.status_code == 404
        # That attempt is on the file's download list, for operators following a rollout.
        await fileserver.runtime.recorder.drain()
        history = (await client.get(f"{url}/box-2.0.bin/downloads", headers=ADMIN)).json()["downloads"]
        assert [(d["device_id"], d["outcome"], d["reason"], d["status"]) for d in history] == [
            ("00D09E-Box-1", "failed", "no such file", 404)]
        assert history[0]["event_id"] and history[0]["finished_at"]

    # The bytes stay for downloads in flight, then the maintenance round deletes them.
    assert await fileserver.runtime.store.exists(key)
    await fileserver.runtime.run_maintenance()
    assert await fileserver.runtime.store.exists(key)
    trash = fileserver.runtime.mongo[fileserver.settings.mongodb_database][TRASH]
    await trash.update_one({"_id": key}, {"$set": {"due": datetime.now(UTC) - timedelta(seconds=1)}})
    await fileserver.runtime.run_maintenance()
    assert not await fileserver.runtime.store.exists(key)
    assert await trash.count_documents({}) == 0


async def test_fileserver_replace_keeps_old_bytes_until_swapped(fileserver: RunningFileServer) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        first = (await upload(client, fileserver, "fw.bin", b"version one")).json()
        old_key = (await fileserver.runtime.catalog.get("fw.bin")).object_key  # type: ignore[union-attr]

        # A wrong expected hash discards the new upload; the old file is untouched.
        mismatch = await upload(client, fileserver, "fw.bin", b"version two", sha256="0" * 64)
        assert mismatch.status_code == 422
        assert "sha256 mismatch" in mismatch.text
        assert (await client.get(f"{fileserver.api_url}/api/v1/files/fw.bin", headers=ADMIN)).json() == first

        replaced = await upload(client, fileserver, "fw.bin", b"version two",
                                headers={"X-File-Sha256": hashlib.sha256(b"version two").hexdigest()})
        assert replaced.status_code == 200
        assert replaced.json()["sha256"] != first["sha256"]
        auth = DigestAuth(*mint_download_credentials(fileserver.settings, "fw.bin", None))
        got = await client.get(replaced.json()["download_url"], auth=auth)
        assert (got.content, got.headers["etag"]) == (b"version two", f'"{replaced.json()["sha256"]}"')
    trash = fileserver.runtime.mongo[fileserver.settings.mongodb_database][TRASH]
    assert [d["_id"] for d in await trash.find().to_list()] == [old_key]


async def test_fileserver_upload_refuses_bad_metadata_names_and_oversize(
        fileserver: RunningFileServer) -> None:
    url = f"{fileserver.api_url}/api/v1/files"
    async with httpx.AsyncClient(timeout=30) as client:
        missing_type = await client.put(f"{url}/a.bin", content=b"x", headers=ADMIN)
        assert missing_type.status_code == 422
        assert missing_type.json()["errors"][0]["location"] == "metadata.file_type"
        assert (await upload(client, fileserver, "a.bin", b"x", file_type="7 Nonsense")).status_code == 422
        assert (await upload(client, fileserver, "a.bin", b"x", oui="xyz")).status_code == 422
        assert (await upload(client, fileserver, "..", b"x")).status_code in (404, 422)
        assert (await upload(client, fileserver, "bad%0Aname", b"x")).status_code == 422

        fileserver.runtime.max_file_bytes = 3 * MIB
        declared = await upload(client, fileserver, "big.bin", b"x" * (3 * MIB + 1))
        assert declared.status_code == 413
        # Without Content-Length (chunked) the limit is enforced while streaming.
        streamed = await upload(client, fileserver, "big.bin", seeded_chunks(1, 4 * MIB))
        assert streamed.status_code == 413
        assert (await client.get(f"{url}/big.bin", headers=ADMIN)).status_code == 404
        fine = await upload(client, fileserver, "ok.bin", seeded_chunks(1, 3 * MIB))
        assert (fine.status_code, fine.json()["sha256"]) == (201, seeded_sha256(1, 3 * MIB))


async def test_a_scoped_reader_sees_operator_files_and_only_its_devices_uploads(
        fileserver: RunningFileServer) -> None:
    """Operator files are a global catalogue; CPE uploads belong to their device: a principal
    scoped to tag partner-a reads partner-a's uploads and gets 404 for any other device's."""
    from services.common.scopes import canonical

    runtime = fileserver.runtime
    db = runtime.auth.db
    assert db is not None
    url = f"{fileserver.api_url}/api/v1/files"
    for device_id, tag in (("00259E-Box-A0", "partner-a"), ("00259E-Box-B0", "partner-b")):
        await db["devices"].insert_one({"_id": device_id, "tags": [tag]})
    key = await runtime.auth.create("partner-a-noc", "operator", scope=canonical({"tags": "partner-a"}))
    scoped = {"X-API-Key": key}
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await upload(client, fileserver, "fw.bin", b"firmware")).status_code == 201
        stored = await db["files"].find_one({"_id": "fw.bin"})
        assert stored is not None
        for device_id in ("00259E-Box-A0", "00259E-Box-B0"):
            # What a CPE upload leaves in the catalogue (the bytes are the firmware's object).
            await db["files"].insert_one({**stored, "_id": f"{device_id}/cfg.1", "kind": "upload",
                                          "file_type": None, "device_id": device_id, "command_key": "cfg.1",
                                          "uploaded_by": f"cpe:{device_id}"})
            await runtime.recorder.collection.insert_one({
                "_id": f"dl-{device_id}", "file_name": "fw.bin", "device_id": device_id, "outcome": "completed",
                "bytes_sent": 8, "finished_at": datetime.now(UTC), "published": True})

        listed = (await client.get(url, headers=scoped)).json()["files"]
        assert [f["name"] for f in listed] == ["00259E-Box-A0/cfg.1", "fw.bin"]
        assert len((await client.get(url, headers=ADMIN)).json()["files"]) == 3
        assert (await client.get(url, headers=scoped, params={"device_id": "00259E-Box-B0"})).json()["files"] == []
        assert (await client.get(f"{url}/fw.bin/content", headers=scoped)).content == b"firmware"
        mine = "00259E-Box-A0%2Fcfg.1"
        theirs = "00259E-Box-B0%2Fcfg.1"
        assert (await client.get(f"{url}/{mine}", headers=scoped)).status_code == 200
        assert (await client.get(f"{url}/{mine}/content", headers=scoped)).content == b"firmware"
        for suffix in ("", "/content"):
            outside = await client.get(f"{url}/{theirs}{suffix}", headers=scoped)
            unknown = await client.get(f"{url}/nothing-here{suffix}", headers=scoped)
            assert outside.status_code == unknown.status_code == 404, suffix
            assert outside.json()["detail"] == unknown.json()["detail"]
        assert (await client.get(f"{url}/{theirs}", headers=ADMIN)).status_code == 200
        attempts = (await client.get(f"{url}/fw.bin/downloads", headers=scoped)).json()["downloads"]
        assert [a["device_id"] for a in attempts] == ["00259E-Box-A0"]
        assert len((await client.get(f"{url}/fw.bin/downloads", headers=ADMIN)).json()["downloads"]) == 2
        # The catalogue is shared by every scope: writes need an unscoped operator.
        refused = await client.put(f"{url}/other.bin", content=b"x", headers=scoped,
                                   params={"file_type": "1 Firmware Upgrade Image"})
        assert refused.status_code == 403
        assert (await client.delete(f"{url}/fw.bin", headers=scoped)).status_code == 403
