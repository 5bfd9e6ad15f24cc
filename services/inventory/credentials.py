"""Per-device CPE credentials for the gateway's per-device Digest/Basic authentication.

Only Digest HA1 values are stored: ``H(username:realm:password)`` with MD5 and with SHA-256, the
two algorithms RFC 7616 servers offer. That is all a Digest server needs (the ``-sess`` variants
derive from the same HA1), and a Basic check can hash the offered password the same way. The clear
password is never stored, logged or returned. An HA1 is tied to the realm it was computed with,
so each record keeps its realm: changing ACS_CPE_REALM needs a re-import.

Collection ``cpe_credentials``: ``_id`` = username (the CPE's Digest username, conventionally its
device id), ``device_id`` when known, ``realm``, ``ha1_md5``, ``ha1_sha256``, ``updated_at``, and
``source``: ``import`` (through the API) or ``bootstrap`` (set on the device by the ACS itself).

Credentials the ACS sets at bootstrap (ACS_CPE_CREDENTIALS=provisioned) go through two states.
While the SetParameterValues that gives them to the device is under way they are *pending*
(``pending_ha1_md5``, ``pending_ha1_sha256``): the gateway accepts them, and the shared pair
still, since the device switches to its own pair only once it has applied the SPV, and the ACS
cannot know that before the answer is in. The orchestrator *confirms* them when the CPE's
SetParameterValuesResponse arrives: the pending HA1s become ``ha1_*``, and from then on the
device is one that has its own credentials, which the shared pair can no longer speak for.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase

CREDENTIALS = "cpe_credentials"
MAX_ROWS = 100_000
MAX_LENGTH = 256

_FAMILIES = {"MD5": "md5", "MD5-SESS": "md5", "SHA-256": "sha256", "SHA-256-SESS": "sha256"}


def ha1(username: str, realm: str, password: str, family: str) -> str:
    return hashlib.new(family, f"{username}:{realm}:{password}".encode()).hexdigest()


async def lookup_ha1(db: AsyncDatabase, username: str, algorithm: str, realm: str | None = None,
                     ) -> str | None:
    """The HA1 for a Digest ``algorithm`` (MD5, MD5-sess, SHA-256, SHA-256-sess; any case).

    None when the user is unknown, the algorithm unsupported, or (if ``realm`` is given) the
    stored HA1 was computed for another realm and so cannot verify this challenge.
    """
    family = _FAMILIES.get(algorithm.upper())
    if family is None:
        return None
    document = await db[CREDENTIALS].find_one({"_id": username}, {f"ha1_{family}": 1, "realm": 1})
    if document is None or (realm is not None and document.get("realm") != realm):
        return None
    value = document.get(f"ha1_{family}")
    return value if isinstance(value, str) else None


async def lookup_candidates(db: AsyncDatabase, username: str, algorithm: str, realm: str,
                            ) -> tuple[str | None, list[str]]:
    """``(device id, HA1s)`` a Digest or Basic answer of ``username`` may match, confirmed first.

    A pending HA1 (bootstrap under way) is a candidate as well as the confirmed one. Empty when
    the user is unknown, the algorithm unsupported or the HA1s were made for another realm.
    """
    family = _FAMILIES.get(algorithm.upper())
    if family is None:
        return None, []
    document = await db[CREDENTIALS].find_one(
        {"_id": username}, {"device_id": 1, "realm": 1, f"ha1_{family}": 1, f"pending_ha1_{family}": 1,
                            "pending_realm": 1})
    if document is None:
        return None, []
    found = []
    if document.get("realm") == realm and isinstance(document.get(f"ha1_{family}"), str):
        found.append(document[f"ha1_{family}"])
    if document.get("pending_realm") == realm and isinstance(document.get(f"pending_ha1_{family}"), str):
        found.append(document[f"pending_ha1_{family}"])
    device_id = document.get("device_id")
    return (device_id if isinstance(device_id, str) else None), found


async def has_own_credentials(db: AsyncDatabase, device_id: str) -> bool:
    """Whether the device has confirmed credentials of its own (then the shared pair is refused)."""
    found = await db[CREDENTIALS].find_one(
        {"$or": [{"_id": device_id}, {"device_id": device_id}], "ha1_md5": {"$exists": True}}, {"_id": 1})
    return found is not None


async def store_pending(db: AsyncDatabase, username: str, device_id: str, realm: str, password: str) -> None:
    """Credentials the ACS is about to set on the device: accepted from now on, beside the old."""
    await db[CREDENTIALS].update_one({"_id": username}, {
        "$set": {"device_id": device_id, "pending_realm": realm, "updated_at": datetime.now(UTC),
                 "pending_ha1_md5": ha1(username, realm, password, "md5"),
                 "pending_ha1_sha256": ha1(username, realm, password, "sha256")},
        "$setOnInsert": {"source": "bootstrap", "realm": realm}}, upsert=True)


async def confirm(db: AsyncDatabase, username: str, device_id: str, realm: str, password: str) -> None:
    """The device applied the credentials the ACS set: only they (not the shared pair) from now on.

    The HA1s are computed again rather than moved from the pending fields, so that a repeated
    confirmation, or one whose pending write was lost, ends in the same record.
    """
    md5, sha256 = ha1(username, realm, password, "md5"), ha1(username, realm, password, "sha256")
    collection = db[CREDENTIALS]
    await collection.update_one({"_id": username}, {
        "$set": {"device_id": device_id, "realm": realm, "source": "bootstrap", "updated_at": datetime.now(UTC),
                 "ha1_md5": md5, "ha1_sha256": sha256}}, upsert=True)
    # The pending pair goes once it is the confirmed one (a newer pending one stays).
    await collection.update_one({"_id": username, "pending_ha1_md5": md5},
                                {"$unset": {"pending_ha1_md5": "", "pending_ha1_sha256": "", "pending_realm": ""}})


async def forget_provisioned(db: AsyncDatabase, device_id: str) -> int:
    """Drop the credentials the ACS set on a device (it was factory reset): shared pair again."""
    result = await db[CREDENTIALS].delete_many({"device_id": device_id, "source": "bootstrap"})
    return result.deleted_count


async def ensure_indexes(db: AsyncDatabase) -> None:
    await db[CREDENTIALS].create_index([("device_id", ASCENDING)], name="device_id", sparse=True)


@dataclass(frozen=True)
class Row:
    username: str
    password: str
    device_id: str | None


@dataclass(frozen=True)
class RowError:
    row: int
    error: str


def rows_from_json(data: Any) -> tuple[list[Row], list[RowError]]:
    """``[{"device_id" | "username", "password"}, ...]`` or ``{"credentials": [...]}``."""
    if isinstance(data, dict) and "credentials" in data:
        data = data["credentials"]
    if not isinstance(data, list):
        return [], [RowError(0, 'expected a list of {"device_id" or "username", "password"} objects')]
    items = [item if isinstance(item, dict) else None for item in data]
    return _validate(enumerate(items, start=1))


def rows_from_csv(text: str) -> tuple[list[Row], list[RowError]]:
    """CSV with a header naming ``password`` and ``device_id`` and/or ``username``."""
    reader = csv.DictReader(io.StringIO(text))
    header = {name.strip() for name in reader.fieldnames or []}
    if "password" not in header or not header & {"device_id", "username"}:
        return [], [RowError(1, "the header must name a password column and a device_id or "
                                "username column")]
    rows = ({(k or "").strip(): v for k, v in record.items()} for record in reader)
    # Row numbers count the header as row 1, as a spreadsheet shows them.
    return _validate(enumerate(rows, start=2))


def _validate(items: Iterable[tuple[int, dict[str, Any] | None]]) -> tuple[list[Row], list[RowError]]:
    rows: list[Row] = []
    errors: list[RowError] = []
    first_row: dict[str, int] = {}
    for count, (number, item) in enumerate(items, start=1):
        if count > MAX_ROWS:
            errors.append(RowError(number, f"more than {MAX_ROWS} rows; split the import"))
            break
        if item is None:
            errors.append(RowError(number, "expected an object"))
            continue
        device_id = _text(item.get("device_id"))
        username = _text(item.get("username")) or device_id
        password = item.get("password")
        problem = None
        if not username:
            problem = "device_id or username is required"
        elif not isinstance(password, str) or not password:
            problem = "password is required"
        elif any(len(value) > MAX_LENGTH for value in (username, password, device_id or "")):
            problem = f"values are limited to {MAX_LENGTH} characters"
        elif any(not value.isprintable() for value in (username, device_id or "")):
            problem = "username and device_id must be printable"
        elif username in first_row:
            problem = f"username {username!r} already given in row {first_row[username]}"
        if problem:
            errors.append(RowError(number, problem))
            continue
        assert isinstance(password, str) and username
        first_row[username] = number
        rows.append(Row(username, password, device_id))
    return rows, errors


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


async def import_rows(db: AsyncDatabase, rows: list[Row], realm: str) -> int:
    """Store (or replace) the HA1s of ``rows``; returns how many were written."""
    now = datetime.now(UTC)
    operations = [
        ReplaceOne({"_id": row.username}, {
            "device_id": row.device_id, "realm": realm, "updated_at": now, "source": "import",
            "ha1_md5": ha1(row.username, realm, row.password, "md5"),
            "ha1_sha256": ha1(row.username, realm, row.password, "sha256"),
        }, upsert=True)
        for row in rows
    ]
    written = 0
    for start in range(0, len(operations), 1000):
        result = await db[CREDENTIALS].bulk_write(operations[start:start + 1000], ordered=False)
        written += result.upserted_count + result.matched_count
    return written


async def list_credentials(db: AsyncDatabase, after: str | None, limit: int,
                           device_id: str | None = None) -> list[dict[str, Any]]:
    """Who has credentials (never the HA1s), in username order."""
    query: dict[str, Any] = {}
    if after is not None:
        query["_id"] = {"$gt": after}
    if device_id is not None:
        query["device_id"] = device_id
    cursor = db[CREDENTIALS].find(query, {"device_id": 1, "realm": 1, "updated_at": 1, "source": 1,
                                          "ha1_md5": 1, "pending_ha1_md5": 1},
                                  limit=limit).sort("_id", ASCENDING)
    return [_described(document) async for document in cursor]


def _described(document: dict[str, Any]) -> dict[str, Any]:
    """A listing entry: where the credentials come from and whether they are in use yet, no HA1."""
    state = "active" if "ha1_md5" in document else "pending"
    if state == "active" and "pending_ha1_md5" in document:
        state = "active, new pending"
    return {"_id": document["_id"], "device_id": document.get("device_id"), "realm": document.get("realm"),
            "updated_at": document.get("updated_at"), "source": document.get("source", "import"), "state": state}


async def described(db: AsyncDatabase, usernames: list[str]) -> list[dict[str, Any]]:
    """The listing entries of these usernames (never the HA1s), in username order; for the audit."""
    cursor = db[CREDENTIALS].find({"_id": {"$in": usernames}}, {"device_id": 1, "realm": 1, "updated_at": 1,
                                                                 "source": 1, "ha1_md5": 1, "pending_ha1_md5": 1})
    found = [_described(document) async for document in cursor.sort("_id", ASCENDING)]
    return [{"username": d.pop("_id"), **d} for d in found]


async def delete_credentials(db: AsyncDatabase, username: str) -> bool:
    result = await db[CREDENTIALS].delete_one({"_id": username})
    return result.deleted_count == 1


async def delete_device_credentials(db: AsyncDatabase, device_id: str) -> int:
    """Delete a device's credentials (username = device id, or imported with this device_id)."""
    result = await db[CREDENTIALS].delete_many({"$or": [{"_id": device_id}, {"device_id": device_id}]})
    return result.deleted_count


async def has_credentials(db: AsyncDatabase, device_id: str) -> bool:
    """Whether the device has credentials of its own in use (pending ones do not count yet)."""
    return await has_own_credentials(db, device_id)
