"""The inventory's MongoDB side: indexes, batched incremental writes, and device reads.

One document per device in ``devices`` (``_id`` = device id). Per batch of inbound messages we do
two round trips whatever the batch size: one ``find`` projecting only the parameters the batch
mentions, and one ordered ``bulk_write`` of field-level updates (and deletes, for deleted devices)
planned by ``changes.plan``. No whole document is ever read or rewritten for an Inform.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DeleteOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from services.inventory.changes import (
    DeviceState,
    Fact,
    Observation,
    PlanConfig,
    Write,
    plan,
    projection_for,
)

log = logging.getLogger(__name__)

DEVICES = "devices"
DUPLICATE_KEY = 11000

# Every filter the API promises to answer without a collection scan has an index here. The
# sortable fields end with _id so that a sorted, cursor-paged query walks the index in order.
INDEXES: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = [
    ("serial_number", [("serial_number", ASCENDING), ("_id", ASCENDING)], {}),
    ("oui_product_class", [("oui", ASCENDING), ("product_class", ASCENDING), ("_id", ASCENDING)], {}),
    ("software_version", [("software_version", ASCENDING), ("_id", ASCENDING)], {}),
    ("last_inform", [("last_inform", ASCENDING), ("_id", ASCENDING)], {}),
    ("first_seen", [("first_seen", ASCENDING), ("_id", ASCENDING)], {}),
    ("tags_id", [("tags", ASCENDING), ("_id", ASCENDING)], {}),
    # Only devices awaiting a silence check carry the field, so the sweep reads a small index.
    ("silent_deadline", [("silent_deadline", ASCENDING)], {"sparse": True}),
]


def devices(db: AsyncDatabase) -> AsyncCollection:
    return db[DEVICES]


async def ensure_indexes(db: AsyncDatabase) -> None:
    collection = devices(db)
    for name, keys, options in INDEXES:
        await collection.create_index(keys, name=name, **options)


@dataclass
class BatchResult:
    facts: list[Fact] = field(default_factory=list)
    writes: int = 0
    skipped: int = 0  # replays, and responses for unknown devices or with nothing new


async def apply_observations(db: AsyncDatabase, observations: Sequence[Observation],
                             config: PlanConfig, lanes: int = 1) -> BatchResult:
    """Apply a batch, in order per device; idempotent, so the caller may retry the whole batch.

    With ``lanes`` > 1 the batch is split by device into that many groups applied concurrently:
    MongoDB works on one group while Python plans the next. A device stays in one lane, so its
    messages keep their order.
    """
    if lanes <= 1 or len(observations) < 2 * lanes:
        return await _apply_lane(db, observations, config)
    groups: list[list[Observation]] = [[] for _ in range(lanes)]
    lane_of: dict[str, int] = {}
    for observation in observations:
        lane = lane_of.setdefault(observation.device_id, len(lane_of) % lanes)
        groups[lane].append(observation)
    # Wait for every lane even when one fails, so that a retry never overlaps a lane still writing.
    results = await asyncio.gather(*(_apply_lane(db, group, config) for group in groups if group),
                                   return_exceptions=True)
    for outcome in results:
        if isinstance(outcome, BaseException):
            raise outcome
    merged = BatchResult()
    for part in results:
        assert isinstance(part, BatchResult)
        merged.facts += part.facts
        merged.writes += part.writes
        merged.skipped += part.skipped
    return merged


async def _apply_lane(db: AsyncDatabase, observations: Sequence[Observation], config: PlanConfig,
                      ) -> BatchResult:
    result = BatchResult()
    if not observations:
        return result
    collection = devices(db)
    ids = list(dict.fromkeys(o.device_id for o in observations))
    states = {device_id: DeviceState(device_id) for device_id in ids}
    async for document in collection.find({"_id": {"$in": ids}}, projection_for(observations)):
        states[document["_id"]] = DeviceState.from_document(document["_id"], document)

    writes: list[Write] = []
    per_device: dict[str, list[Fact]] = defaultdict(list)
    for observation in observations:
        write, facts = plan(states[observation.device_id], observation, config)
        if write is None:
            result.skipped += 1
            continue
        writes.append(write)
        per_device[observation.device_id].extend(facts)
    await _bulk_write(collection, writes)
    result.writes = len(writes)
    # Facts keep per-device order; devices stay in the order they first appeared in the batch.
    result.facts = [fact for device_id in ids for fact in per_device.get(device_id, [])]
    return result


async def _bulk_write(collection: AsyncCollection, writes: list[Write]) -> None:
    """One ordered round trip; a duplicate-key error means "already applied" and is passed over.

    A guarded upsert (``applied: {$ne: id}``) of a message some other consumer already applied
    tries to insert a second document with the same _id, which is how MongoDB says "done".
    """
    operations = [DeleteOne(w.filter) if w.delete else UpdateOne(w.filter, w.update, upsert=w.upsert)
                  for w in writes]
    start = 0
    while start < len(operations):
        try:
            await collection.bulk_write(operations[start:], ordered=True)
            return
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(error.get("code") != DUPLICATE_KEY for error in errors):
                raise
            start += errors[0]["index"] + 1
            log.info("message already applied by another consumer; skipped")


# --- reads and edits for the API -------------------------------------------------------------------


async def find_device(db: AsyncDatabase, device_id: str, projection: dict[str, Any] | None,
                      ) -> dict[str, Any] | None:
    return await devices(db).find_one({"_id": device_id}, projection)


async def delete_device(db: AsyncDatabase, device_id: str) -> bool:
    result = await devices(db).delete_one({"_id": device_id})
    return result.deleted_count == 1


async def add_tag(db: AsyncDatabase, device_id: str, tag: str) -> list[str] | None:
    return await _edit_tags(db, device_id, {"$addToSet": {"tags": tag}})


async def remove_tag(db: AsyncDatabase, device_id: str, tag: str) -> list[str] | None:
    return await _edit_tags(db, device_id, {"$pull": {"tags": tag}})


async def _edit_tags(db: AsyncDatabase, device_id: str, update: dict[str, Any]) -> list[str] | None:
    document = await devices(db).find_one_and_update({"_id": device_id}, update,
                                                     projection={"tags": 1},
                                                     return_document=ReturnDocument.AFTER)
    return None if document is None else list(document.get("tags") or [])


# --- silence ----------------------------------------------------------------------------------------


async def due_silences(db: AsyncDatabase, now: datetime, limit: int) -> list[dict[str, Any]]:
    cursor = devices(db).find({"silent_deadline": {"$lte": now}},
                              {"silent_deadline": 1, "last_inform": 1, "inform_interval": 1},
                              limit=limit).sort("silent_deadline", ASCENDING)
    return [document async for document in cursor]


async def claim_silence(db: AsyncDatabase, device_id: str, deadline: datetime, now: datetime) -> bool:
    """Mark one device silent; True for exactly one caller per silence (several sweepers may run).

    The condition on the deadline we read means a device that informed meanwhile (new deadline)
    or that another sweeper claimed (no deadline) is left alone.
    """
    result = await devices(db).update_one({"_id": device_id, "silent_deadline": deadline},
                                          {"$unset": {"silent_deadline": ""}, "$set": {"silent_since": now}})
    return result.modified_count == 1


async def release_silence(db: AsyncDatabase, device_id: str, deadline: datetime) -> None:
    """Undo a claim whose event could not be published, unless the device informed since."""
    await devices(db).update_one({"_id": device_id, "silent_deadline": {"$exists": False},
                                  "last_inform": {"$lt": deadline}},
                                 {"$set": {"silent_deadline": deadline}, "$unset": {"silent_since": ""}})
