"""Read-only fleet figures for the console's Overview: ``GET /api/v1/stats/devices``.

Devices in total, silent (no Inform within ACS_SILENT_AFTER_INTERVALS intervals) and seen within
their interval; Informs of the last minute and the last 5 minutes (every session starts with one);
software versions per product class. Each figure is one query on an indexed field, or (versions)
one aggregation that reads only the indexed fields it groups by. For a scoped principal
(services.common.scopes) every figure counts the devices of its scope only.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.params import Depends
from pydantic import BaseModel, Field
from pymongo.asynchronous.database import AsyncDatabase

from services.common import scopes
from services.common.apikeys import Principal
from services.inventory import store

QUERY_TIMEOUT_MS = 10_000
MAX_VERSIONS = 200


class VersionCount(BaseModel):
    product_class: str | None
    software_version: str | None
    count: int


class DeviceStats(BaseModel):
    total: int
    silent: int = Field(description="devices with silent_since set")
    seen: int = Field(description="devices seen within their inform interval (total - silent)")
    informs_last_minute: int = Field(description="devices whose last Inform is at most 60 s old")
    informs_last_5_minutes: int
    versions: list[VersionCount] = Field(description="devices per product class and software version, "
                                                     f"largest first, at most {MAX_VERSIONS}")
    at: datetime


def _within(scope: dict[str, Any] | None, condition: dict[str, Any]) -> dict[str, Any]:
    if scope is None:
        return condition
    return scope if not condition else {"$and": [scope, condition]}


async def device_stats(db: AsyncDatabase, now: datetime | None = None,
                       scope: dict[str, Any] | None = None) -> dict[str, Any]:
    """The figures; ``scope``: a MongoDB filter on ``devices`` they are limited to (None: all)."""
    now = now or datetime.now(UTC)
    devices = store.devices(db)

    def count(condition: dict[str, Any]) -> Any:
        return devices.count_documents(_within(scope, condition), maxTimeMS=QUERY_TIMEOUT_MS)

    total, silent, minute, five, grouped = await asyncio.gather(
        count({}), count({"silent_since": {"$type": "date"}}),
        count({"last_inform": {"$gte": now - timedelta(minutes=1)}}),
        count({"last_inform": {"$gte": now - timedelta(minutes=5)}}),
        _versions(db, scope))
    return {"total": total, "silent": silent, "seen": total - silent, "informs_last_minute": minute,
            "informs_last_5_minutes": five, "versions": grouped, "at": now}


async def _versions(db: AsyncDatabase, scope: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    pipeline: list[dict[str, Any]] = [] if scope is None else [{"$match": scope}]
    pipeline += [
        {"$group": {"_id": {"p": "$product_class", "v": "$software_version"}, "n": {"$sum": 1}}},
        {"$sort": {"n": -1}},
        {"$limit": MAX_VERSIONS},
    ]
    cursor = await store.devices(db).aggregate(pipeline, maxTimeMS=QUERY_TIMEOUT_MS)
    return [{"product_class": d["_id"].get("p"), "software_version": d["_id"].get("v"), "count": d["n"]}
            async for d in cursor]


def add_routes(app: FastAPI, db: AsyncDatabase, reader: Depends) -> None:
    """``reader``: the read-only dependency that admits scoped principals (it yields the principal)."""

    @app.get("/api/v1/stats/devices", summary="Fleet figures (console Overview); a scoped caller's scope only",
             response_model=DeviceStats, tags=["stats"])
    async def stats(principal: Principal = reader) -> dict[str, Any]:
        return await device_stats(db, scope=scopes.device_filter(principal))
