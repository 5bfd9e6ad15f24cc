"""The per-vendor quirks table in MongoDB (collection ``quirks``), owned by the orchestrator.

The model, the matching rules and the readers' cache are in services/common/quirks.py; this is
the writing side: entries with a unique name, a light version (``version``, ``updated_by``,
``updated_at``), and the generation bump after every write that tells every reader to reload.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from services.common import quirks as Q


class QuirkConflict(Exception):
    """The entry's name is taken, or its match ties with another entry's (ties are refused)."""


class QuirkStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.entries = db[Q.COLLECTION]

    async def ensure_indexes(self) -> None:
        await self.entries.create_index([("name", ASCENDING)], unique=True, name="name_unique")

    async def list(self) -> list[Q.QuirkEntry]:
        found = await Q.load_entries(self.db)
        return sorted(found, key=lambda e: e.name)

    async def get(self, entry_id: str) -> Q.QuirkEntry | None:
        doc = await self.entries.find_one({"_id": entry_id})
        return _entry(doc) if doc is not None else None

    async def _check(self, name: str, match: Q.QuirkMatch, own_id: str | None) -> None:
        others = await Q.load_entries(self.db)
        if any(e.name == name and e.id != own_id for e in others):
            raise QuirkConflict(f"a quirk entry named {name!r} exists")
        if tied := Q.conflicts(match, others, own_id):
            names = ", ".join(repr(e.name) for e in tied)
            raise QuirkConflict(f"the match ties with {names}: a device could match both with the same "
                                "specificity; make one of them more specific")

    async def insert(self, entry_id: str, name: str, description: str, match: Q.QuirkMatch, quirks: Q.Quirks,
                     by: str, now: datetime) -> Q.QuirkEntry:
        await self._check(name, match, None)
        doc = {"_id": entry_id, "name": name, "description": description,
               "match": match.model_dump(exclude_none=True), "quirks": quirks.active(), "version": 1,
               "created_at": now, "updated_at": now, "updated_by": by}
        await self.entries.insert_one(doc)
        await Q.bump_generation(self.db)
        return _entry(doc)

    async def replace(self, entry_id: str, name: str, description: str, match: Q.QuirkMatch, quirks: Q.Quirks,
                      by: str, now: datetime, expected_version: int | None = None) -> Q.QuirkEntry | None:
        """The entry rewritten (version + 1); None when it does not exist (or not at ``expected_version``)."""
        await self._check(name, match, entry_id)
        query: dict[str, Any] = {"_id": entry_id}
        if expected_version is not None:
            query["version"] = expected_version
        doc = await self.entries.find_one_and_update(
            query, {"$set": {"name": name, "description": description, "match": match.model_dump(exclude_none=True),
                             "quirks": quirks.active(), "updated_at": now, "updated_by": by},
                    "$inc": {"version": 1}}, return_document=ReturnDocument.AFTER)
        if doc is None:
            return None
        await Q.bump_generation(self.db)
        return _entry(doc)

    async def delete(self, entry_id: str) -> bool:
        result = await self.entries.delete_one({"_id": entry_id})
        if result.deleted_count:
            await Q.bump_generation(self.db)
        return bool(result.deleted_count)


def _entry(doc: dict[str, Any]) -> Q.QuirkEntry:
    return Q.QuirkEntry.model_validate({**doc, "id": doc["_id"]})
