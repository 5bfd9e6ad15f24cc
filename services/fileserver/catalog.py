"""The file catalog in MongoDB: which files exist, their metadata, and where their bytes are.

Collection ``files``, one document per file, ``_id`` = file name. It is the source of truth for
listing and describing (indexed, so listing is one query, never an S3 walk). The bytes live in S3
under a key that is new for every upload (``objects/<uuid>``), never under the file name. That
indirection is what makes replacing a file safe:

- an upload writes a new object, then swaps the catalog entry in one document write; a failed
  or aborted upload never touches the file that CPEs are downloading;
- a CPE resuming with Range after a replacement gets the new ETag, so If-Range makes it start
  over instead of splicing two images together;
- the replaced object is not deleted at once but put in ``file_trash`` with a due time, so
  downloads already streaming it can finish; the maintenance loop deletes it later.

Two kinds of file share the collection: ``file`` (put by an operator, for Download RPCs) and
``upload`` (put by a CPE answering an Upload RPC, uploads.py). Upload names are
``<device id>/<command key>``, the form the orchestrator puts in the Upload URL; operator names
can never contain ``/``, so the two kinds cannot overwrite each other.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

FILES = "files"
TRASH = "file_trash"

# TR-069 A.3.2.8 FileType: the numbered types, Amd 6's "6 Stored Firmware Image", or vendor types.
STANDARD_FILE_TYPES = (
    "1 Firmware Upgrade Image",
    "2 Web Content",
    "3 Vendor Configuration File",
    "4 Tone File",
    "5 Ringer File",
    "6 Stored Firmware Image",
)
_VENDOR_FILE_TYPE_RE = re.compile(r"^X [^ ]+ \S.*$")
_OUI_RE = re.compile(r"^[0-9A-F]{6}$")
# Control characters would break headers and logs; "/" would make names path-like and ambiguous.
_BAD_NAME_RE = re.compile(r"[\x00-\x1f\x7f/\\]")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def validate_file_name(name: str) -> str:
    if not name or len(name) > 255:
        raise ValueError("a file name has 1 to 255 characters")
    if name != name.strip():
        raise ValueError("a file name must not start or end with white space")
    if name in {".", ".."} or _BAD_NAME_RE.search(name):
        raise ValueError("a file name must not contain '/', '\\' or control characters, nor be '.' or '..'")
    return name


# TR-069 CommandKey is string(32); device ids are percent-encoded (cwmp.httputil.make_device_id)
# and the download credentials cap them near 220 characters, so this bounds any honest name.
MAX_UPLOAD_NAME_LENGTH = 512
MAX_COMMAND_KEY_LENGTH = 32

FileKind = Literal["file", "upload"]


def is_upload_name(name: str) -> bool:
    """Whether ``name`` has the form of a CPE upload, ``<device id>/<command key>``.

    The form only: who may write it is decided by the credentials (:func:`upload_command_key`).
    """
    device, sep, command_key = name.rpartition("/")
    return (bool(sep and device and command_key) and len(name) <= MAX_UPLOAD_NAME_LENGTH
            and len(command_key) <= MAX_COMMAND_KEY_LENGTH and _CONTROL_RE.search(name) is None
            and device.strip() == device and command_key.strip() == command_key)


def upload_command_key(name: str, device_id: str | None) -> str | None:
    """The command key of upload ``name`` if the name belongs to ``device_id``, else None.

    Split with the device id the credentials were minted for rather than on the first ``/``,
    so the answer never depends on guessing where the device id ends.
    """
    if not device_id or not is_upload_name(name) or not name.startswith(device_id + "/"):
        return None
    command_key = name[len(device_id) + 1:]
    return command_key if command_key and "/" not in command_key else None


def content_type_of(header: str | None) -> str:
    """The media type to store for a request body with this ``Content-Type``."""
    value = (header or "").strip()
    # curl --data-binary labels everything as a form; that is never what a file is.
    if not value or value.startswith("application/x-www-form-urlencoded"):
        return "application/octet-stream"
    return value


def new_object_key() -> str:
    return f"objects/{uuid.uuid4().hex}"


class FileMetadata(BaseModel):
    """What the operator tells us about a file; the orchestrator matches devices against it."""

    model_config = ConfigDict(extra="forbid")

    file_type: str = Field(max_length=64,
                           description="TR-069 Download FileType, e.g. '1 Firmware Upgrade Image'")
    oui: str | None = Field(None, description="Manufacturer OUI the file is for (6 hex digits)")
    product_class: str | None = Field(None, max_length=64)
    version: str | None = Field(None, max_length=64, description="Software version inside the image")
    description: str | None = Field(None, max_length=1024)

    @field_validator("file_type")
    @classmethod
    def _file_type(cls, value: str) -> str:
        if value in STANDARD_FILE_TYPES or _VENDOR_FILE_TYPE_RE.match(value):
            return value
        raise ValueError(f"must be one of {', '.join(STANDARD_FILE_TYPES)} or 'X <OUI or vendor> <name>'")

    @field_validator("oui")
    @classmethod
    def _oui(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = value.upper()
        if not _OUI_RE.match(value):
            raise ValueError("an OUI is 6 hexadecimal digits")
        return value

    @field_validator("product_class", "version", "description")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class StoredFile(FileMetadata):
    """A file as the catalog knows it, without where its bytes are (the API shows this)."""

    model_config = ConfigDict(extra="ignore")

    # A CPE upload does not say what it is (the Upload RPC's FileType stays with the
    # orchestrator), so its type is unknown; operator files always have one.
    file_type: str | None = Field(  # type: ignore[assignment]
        None, max_length=64,
        description="TR-069 Download FileType, e.g. '1 Firmware Upgrade Image'; null for CPE uploads")
    name: str
    size: int
    sha256: str
    content_type: str
    uploaded_at: datetime
    uploaded_by: str = Field(description="API key name, or 'cpe:<device id>' for a CPE upload")
    # Documents written before uploads existed have no kind: they are operator files.
    kind: FileKind = Field("file", description="'file' (put by an operator) or 'upload' (put by a CPE)")
    device_id: str | None = Field(None, description="CPE uploads: the device that sent the file")
    command_key: str | None = Field(None, description="CPE uploads: the CommandKey of the Upload RPC")

    @field_validator("file_type")
    @classmethod
    def _file_type(cls, value: str | None) -> str | None:  # type: ignore[override]
        # Same name as FileMetadata's validator, so it replaces it: None is allowed here.
        return None if value is None else FileMetadata._file_type(value)


class FileRecord(StoredFile):
    object_key: str

    def to_document(self) -> dict[str, Any]:
        document = self.model_dump()
        document["_id"] = document.pop("name")
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> FileRecord:
        values = dict(document)
        values["name"] = values.pop("_id")
        uploaded = values["uploaded_at"]
        # MongoDB stores UTC without a zone; the client may hand it back naive or with its own utc.
        values["uploaded_at"] = (uploaded.replace(tzinfo=UTC) if uploaded.tzinfo is None
                                 else uploaded.astimezone(UTC))
        return cls.model_validate(values)


def list_query(*, file_type: str | None = None, oui: str | None = None,
               product_class: str | None = None, version: str | None = None,
               kind: FileKind | None = None, device_id: str | None = None,
               command_key: str | None = None) -> dict[str, Any]:
    """The MongoDB filter for a listing; every given value narrows it."""
    if kind is None and (device_id is not None or command_key is not None):
        # Only uploads have these; saying so lets MongoDB use the partial index on uploads.
        kind = "upload"
    query: dict[str, Any] = {}
    for field, value in (("file_type", file_type), ("oui", oui.upper() if oui else None),
                         ("product_class", product_class), ("version", version),
                         ("device_id", device_id), ("command_key", command_key)):
        if value is not None:
            query[field] = value
    if kind == "upload":
        query["kind"] = "upload"
    elif kind == "file":
        # Matches the documents stored before ``kind`` existed, which are all operator files.
        query["kind"] = {"$ne": "upload"}
    return query


class Catalog:
    def __init__(self, db: AsyncDatabase) -> None:
        self.files = db[FILES]
        self.trash = db[TRASH]

    async def ensure_indexes(self) -> None:
        await self.files.create_index([("file_type", ASCENDING), ("_id", ASCENDING)])
        await self.files.create_index([("oui", ASCENDING), ("product_class", ASCENDING), ("_id", ASCENDING)])
        await self.files.create_index([("version", ASCENDING)])
        # Uploads of one device, in name order (= command key order): the operator's usual query.
        await self.files.create_index([("device_id", ASCENDING), ("_id", ASCENDING)],
                                      partialFilterExpression={"kind": "upload"})
        await self.trash.create_index([("due", ASCENDING)])

    async def get(self, name: str) -> FileRecord | None:
        document = await self.files.find_one({"_id": name})
        return FileRecord.from_document(document) if document else None

    async def list(self, *, file_type: str | None = None, oui: str | None = None,
                   product_class: str | None = None, version: str | None = None,
                   kind: FileKind | None = None, device_id: str | None = None,
                   command_key: str | None = None,
                   after: str | None = None, limit: int = 100,
                   upload_devices: list[str] | None = None) -> list[FileRecord]:
        """Files in name order; ``after`` is the last name of the previous page (keyset paging);
        ``upload_devices``: CPE uploads of these devices only (a scope's), operator files all."""
        query = list_query(file_type=file_type, oui=oui, product_class=product_class, version=version,
                           kind=kind, device_id=device_id, command_key=command_key)
        if after is not None:
            query["_id"] = {"$gt": after}
        if upload_devices is not None:
            visible = {"$or": [{"kind": {"$ne": "upload"}}, {"device_id": {"$in": upload_devices}}]}
            query = {"$and": [query, visible]} if query else visible
        cursor = self.files.find(query).sort("_id", ASCENDING).limit(limit)
        return [FileRecord.from_document(document) async for document in cursor]

    async def put(self, record: FileRecord) -> FileRecord | None:
        """Make ``record`` the current version of its file; return the version it replaced."""
        previous = await self.files.find_one_and_replace(
            {"_id": record.name}, record.to_document(), upsert=True, return_document=ReturnDocument.BEFORE)
        return FileRecord.from_document(previous) if previous else None

    async def delete(self, name: str) -> FileRecord | None:
        document = await self.files.find_one_and_delete({"_id": name})
        return FileRecord.from_document(document) if document else None

    async def discard_object(self, key: str, after: timedelta) -> None:
        """Schedule ``key`` for deletion from S3 once downloads in flight have had time to end."""
        await self.trash.update_one({"_id": key}, {"$set": {"due": datetime.now(UTC) + after}}, upsert=True)

    async def due_objects(self, limit: int = 100) -> list[str]:
        cursor = self.trash.find({"due": {"$lte": datetime.now(UTC)}}, {"_id": 1}).limit(limit)
        return [document["_id"] async for document in cursor]

    async def forget_object(self, key: str) -> None:
        await self.trash.delete_one({"_id": key})
