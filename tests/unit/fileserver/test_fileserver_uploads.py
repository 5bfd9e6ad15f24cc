"""The pure parts of CPE uploads: upload names, catalog filters, records, events and routing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from starlette.routing import Match, Route

from services.fileserver.app import content_disposition
from services.fileserver.catalog import FileRecord, is_upload_name, list_query, upload_command_key
from services.fileserver.recorder import upload_event
from services.fileserver.routing import NAME
from services.fileserver.uploads import declared_length, drain

DEVICE = "00D09E-Box%20X-SN%2F1"


@pytest.mark.parametrize("name", [f"{DEVICE}/6650a1b2c3d4e5f6a7b8c9d0.1", "a/b", "a/b/c", "d/" + "k" * 32])
def test_fileserver_upload_names(name: str) -> None:
    assert is_upload_name(name)


@pytest.mark.parametrize("name", ["fw.bin", "/key", "device/", "/", "d/" + "k" * 33, "dev/line\nbreak",
                                  " dev/key", "dev/key ", "d" * 600 + "/k"])
def test_fileserver_not_upload_names(name: str) -> None:
    assert not is_upload_name(name)


def test_fileserver_upload_name_belongs_to_the_device_of_the_credentials() -> None:
    assert upload_command_key(f"{DEVICE}/ck.1", DEVICE) == "ck.1"
    # A device whose id is a prefix of another's must not write the other's uploads.
    assert upload_command_key("00D09E-SN12/ck.1", "00D09E-SN1") is None
    assert upload_command_key("00D09E-SN1/ck.1", "00D09E-SN12") is None
    assert upload_command_key(f"{DEVICE}/ck.1", None) is None
    assert upload_command_key("fw.bin", "fw.bin") is None


def test_fileserver_list_query_narrows_by_kind_and_device() -> None:
    assert list_query() == {}
    assert list_query(kind="upload", device_id=DEVICE) == {"kind": "upload", "device_id": DEVICE}
    # Documents from before uploads existed have no kind and are operator files.
    assert list_query(kind="file", oui="00d09e") == {"kind": {"$ne": "upload"}, "oui": "00D09E"}
    assert list_query(command_key="ck.1") == {"command_key": "ck.1", "kind": "upload"}
    assert list_query(kind="file", device_id=DEVICE) == {"device_id": DEVICE, "kind": {"$ne": "upload"}}


def test_fileserver_upload_record_has_no_file_type_but_operator_types_are_still_checked() -> None:
    values = {"name": f"{DEVICE}/ck.1", "size": 3, "sha256": "ab" * 32, "content_type": "text/plain",
              "uploaded_at": datetime(2024, 5, 1, tzinfo=UTC), "uploaded_by": f"cpe:{DEVICE}", "object_key": "k"}
    upload = FileRecord(**values, kind="upload", device_id=DEVICE, command_key="ck.1")
    assert (upload.file_type, upload.to_document()["kind"]) == (None, "upload")
    with pytest.raises(ValidationError):
        FileRecord(**values, file_type="7 Nonsense")
    # A document stored before kinds existed reads back as an operator file.
    old = {**values, "_id": values["name"], "file_type": "2 Web Content"}
    del old["name"]
    assert FileRecord.from_document(old).kind == "file"


def test_fileserver_upload_event_has_its_own_contract() -> None:
    document = {"_id": "e1", "finished_at": datetime(2024, 5, 1, tzinfo=UTC), "outcome": "failed",
                "file_name": f"{DEVICE}/ck.1", "device_id": DEVICE, "command_key": "ck.1", "bytes_received": 10,
                "sha256": None, "duration_seconds": 0.5, "reason": "client disconnected"}
    event = upload_event(document)
    assert event.type == "file_upload"
    assert (event.event_id, event.file_name, event.command_key, event.bytes_received, event.reason) == (
        "e1", f"{DEVICE}/ck.1", "ck.1", 10, "client disconnected")


def test_fileserver_content_disposition_is_safe_for_any_name() -> None:
    assert content_disposition("fw.bin") == "attachment; filename=\"fw.bin\"; filename*=UTF-8''fw.bin"
    assert content_disposition('dev/ünï "x"') == (
        "attachment; filename=\"dev__n_ _x_\"; filename*=UTF-8''dev_%C3%BCn%C3%AF%20%22x%22")


@pytest.mark.parametrize(("header", "length"), [(None, None), ("12", 12), (" 7 ", 7), ("-1", None), ("x", None)])
def test_fileserver_declared_length(header: str | None, length: int | None) -> None:
    assert declared_length(header) == length


async def test_fileserver_drain_reads_what_is_left_within_bounds() -> None:
    async def body(pieces: int, pause: float = 0.0) -> AsyncIterator[bytes]:
        for _ in range(pieces):
            await asyncio.sleep(pause)
            yield b"x" * 100

    assert await drain(body(5), max_bytes=1000) is True
    assert await drain(body(20), max_bytes=1000) is False
    assert await drain(body(5, pause=0.2), seconds=0.3) is False


@pytest.mark.parametrize("name", ["fw.bin", f"{DEVICE}/ck.1", "bad\nname"])
def test_fileserver_routes_take_any_file_name(name: str) -> None:
    route = Route(f"/files/{NAME}/content", lambda request: None)
    match, child = route.matches({"type": "http", "path": f"/files/{name}/content", "method": "GET"})
    assert match is Match.FULL
    assert child["path_params"] == {"name": name}
