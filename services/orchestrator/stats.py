"""Read-only task figures for the console's Overview: ``GET /api/v1/stats/tasks``.

Tasks per status among those written in the last 24 hours (a task's ``updated_at`` is its last
change, so an ended task counts under its outcome, on the day it ended). One count per status,
each on the ``(status, updated_at)`` index.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.params import Depends
from pydantic import BaseModel, Field
from pymongo.asynchronous.database import AsyncDatabase

from services.orchestrator.store import TASKS
from services.orchestrator.tasks import TaskStatus

WINDOW = timedelta(hours=24)


class TaskStats(BaseModel):
    since: datetime
    by_status: dict[str, int] = Field(description="tasks per status, changed within the last 24 h")


async def task_stats(db: AsyncDatabase, now: datetime | None = None) -> dict[str, Any]:
    since = (now or datetime.now(UTC)) - WINDOW
    statuses = [str(s) for s in TaskStatus]
    counts = await asyncio.gather(*(db[TASKS].count_documents({"status": s, "updated_at": {"$gte": since}})
                                    for s in statuses))
    return {"since": since, "by_status": dict(zip(statuses, counts, strict=True))}


def add_routes(app: FastAPI, db: AsyncDatabase, reader: Depends) -> None:
    @app.get("/api/v1/stats/tasks", summary="Tasks per outcome over the last 24 h (console Overview)",
             dependencies=[reader], response_model=TaskStats, tags=["stats"])
    async def stats() -> dict[str, Any]:
        return await task_stats(db)
