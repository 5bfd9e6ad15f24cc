"""Read-only task figures for the console's Overview: ``GET /api/v1/stats/tasks``.

Tasks per status among those written in the last 24 hours (a task's ``updated_at`` is its last
change, so an ended task counts under its outcome, on the day it ended). One count per status,
each on the ``(status, updated_at)`` index. For a scoped principal (services.common.scopes) only
the tasks of the devices of its scope are counted (of its first MAX_SCOPE_DEVICES devices).
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
from services.orchestrator.store import TASKS
from services.orchestrator.tasks import TaskStatus

WINDOW = timedelta(hours=24)


class TaskStats(BaseModel):
    since: datetime
    by_status: dict[str, int] = Field(description="tasks per status, changed within the last 24 h")


async def task_stats(db: AsyncDatabase, now: datetime | None = None,
                     device_ids: list[str] | None = None) -> dict[str, Any]:
    """Tasks per status; ``device_ids``: of these devices only (None: of every device)."""
    since = (now or datetime.now(UTC)) - WINDOW
    statuses = [str(s) for s in TaskStatus]
    among: dict[str, Any] = {} if device_ids is None else {"device_id": {"$in": device_ids}}
    counts = await asyncio.gather(*(db[TASKS].count_documents({"status": s, "updated_at": {"$gte": since}, **among})
                                    for s in statuses))
    return {"since": since, "by_status": dict(zip(statuses, counts, strict=True))}


def add_routes(app: FastAPI, db: AsyncDatabase, reader: Depends) -> None:
    """``reader``: the read-only dependency that admits scoped principals (it yields the principal)."""

    @app.get("/api/v1/stats/tasks", summary="Tasks per outcome over the last 24 h (console Overview); a scoped "
             "caller's devices only", response_model=TaskStats, tags=["stats"])
    async def stats(principal: Principal = reader) -> dict[str, Any]:
        ids = None if principal.scope is None else await scopes.device_ids(db, principal)
        return await task_stats(db, device_ids=ids)
