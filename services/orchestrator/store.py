"""The orchestrator's MongoDB collections, and the only code that queries them.

- ``tasks``: one document per task; ``version`` makes every update conditional, so an operator's
  cancel and a session's progress cannot silently overwrite each other.
- ``orchestrator_devices``: per-device state the planner needs (data model root, connection
  request address and credentials).
- ``orchestrator_sessions``: live sessions (what each planned RPC was for); a TTL index drops
  those whose end was never reported.
- ``orchestrator_walks``: the items of discovery walks (queued RPCs, what each answer found),
  so that no answer of a walk rewrites a document that grows with the data model; a TTL index
  drops those of walks that never finished.
- ``policies``.
- ``jobs``: bulk jobs, worked by services.orchestrator.jobs: the selection's stored cursor, the
  lease of the instance working it, and its status; progress is a query on ``tasks``.

Policy queries contain ``$`` operators and dotted parameter names, which MongoDB does not take
well as keys; they are stored as JSON text.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from pymongo import ASCENDING, DESCENDING, ReplaceOne, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure

from services.common import workdue
from services.orchestrator.policies import Policy
from services.orchestrator.state import DeviceState, SessionState
from services.orchestrator.tasks import OPEN, TERMINAL, Task, TaskStatus, aware

log = logging.getLogger(__name__)

TASKS = "tasks"
DEVICES = "orchestrator_devices"
SESSIONS = "orchestrator_sessions"
POLICIES = "policies"
JOBS = "jobs"
WALKS = "orchestrator_walks"
# The items of a walk that never finished, or of a big walk's result the API reads, are kept this long.
WALK_TTL_SECONDS = 7 * 24 * 3600
# A session whose SessionEnded never came is forgotten after this long (the device's next Inform
# closes it anyway; this only keeps the collection small).
SESSION_TTL_SECONDS = 24 * 3600
# Bound on the open tasks loaded per Inform: a device with more has a runaway producer upstream.
MAX_OPEN_TASKS = 500
WAIT_STEP_MS = 250


@dataclass(frozen=True)
class InformView:
    device: DeviceState | None
    open_tasks: list[Task]
    sessions: list[SessionState]


@dataclass(frozen=True)
class SessionView:
    session: SessionState
    device: DeviceState | None
    tasks: list[Task]


class CursorError(ValueError):
    """A paging cursor that this API did not produce."""


class Store:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.tasks = db[TASKS]
        self.devices = db[DEVICES]
        self.sessions = db[SESSIONS]
        self.policies = db[POLICIES]
        self.jobs = db[JOBS]
        self.walks = db[WALKS]

    async def ensure_indexes(self) -> None:
        await self.tasks.create_index([("device_id", ASCENDING), ("status", ASCENDING), ("created_at", ASCENDING)])
        await self.tasks.create_index([("device_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)])
        await self.tasks.create_index([("created_at", DESCENDING), ("_id", DESCENDING)])
        await self.tasks.create_index([("status", ASCENDING), ("created_at", DESCENDING)])
        await self.tasks.create_index([("job_id", ASCENDING), ("status", ASCENDING)], sparse=True)
        await self.tasks.create_index([("device_id", ASCENDING), ("command_key", ASCENDING)], sparse=True)
        # The sweep's three questions, each answered from an index.
        await self.tasks.create_index([("status", ASCENDING), ("expires_at", ASCENDING)])
        await self.tasks.create_index([("status", ASCENDING), ("completion_deadline", ASCENDING)])
        await self.tasks.create_index([("status", ASCENDING), ("updated_at", ASCENDING)])
        await self.walks.create_index([("walk", ASCENDING), ("type", ASCENDING), ("seq", ASCENDING)])
        await self.walks.create_index([("at", ASCENDING)], expireAfterSeconds=WALK_TTL_SECONDS)
        await self.sessions.create_index([("device_id", ASCENDING)])
        await self.sessions.create_index([("updated_at", ASCENDING)], expireAfterSeconds=SESSION_TTL_SECONDS)
        await self.policies.create_index([("name", ASCENDING)], unique=True)
        await self.jobs.create_index([("created_at", DESCENDING), ("_id", DESCENDING)])
        await self.jobs.create_index([("status", ASCENDING), ("created_at", DESCENDING)])
        # What an engine instance looks for: work to do whose lease is free.
        await self.jobs.create_index([("work", ASCENDING), ("lease_until", ASCENDING)], sparse=True)

    # --- tasks -----------------------------------------------------------------------------

    async def insert_tasks(self, tasks: Sequence[Task]) -> None:
        if tasks:
            await self.tasks.insert_many([t.to_document() for t in tasks], ordered=False)
            # After the insert: the device's next Inform goes to the orchestrator (workdue.py).
            await workdue.mark_due(self.db, (t.device_id for t in tasks))

    async def insert_new_tasks(self, tasks: Sequence[Task]) -> list[str]:
        """Insert the tasks whose id is not taken yet; the ids inserted (a re-run page adds none twice)."""
        if not tasks:
            return []
        try:
            await self.tasks.insert_many([t.to_document() for t in tasks], ordered=False)
            inserted = [t.id for t in tasks]
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise
            taken = {tasks[e["index"]].id for e in errors}
            inserted = [t.id for t in tasks if t.id not in taken]
        await workdue.mark_due(self.db, (t.device_id for t in tasks))
        return inserted

    async def get_task(self, task_id: str) -> Task | None:
        document = await self.tasks.find_one({"_id": task_id})
        return Task.from_document(document) if document else None

    async def task_by_command_key(self, device_id: str, command_key: str) -> Task | None:
        # Matched per device: a CPE must not be able to settle another device's task.
        document = await self.tasks.find_one({"device_id": device_id, "command_key": command_key})
        return Task.from_document(document) if document else None

    async def list_tasks(self, *, device_id: str | None = None, status: str | None = None,
                         name: str | None = None, job_id: str | None = None, limit: int = 50,
                         cursor: str | None = None, device_ids: list[str] | None = None,
                         ) -> tuple[list[Task], str | None]:
        """Newest first, keyset-paged: ``cursor`` is the previous page's ``next_cursor``.
        ``device_ids``: only tasks of these devices (a scope's)."""
        query: dict[str, Any] = {} if device_ids is None else {"device_id": {"$in": device_ids}}
        for field, value in (("device_id", device_id), ("status", status), ("name", name), ("job_id", job_id)):
            if value is not None:
                query[field] = value
        if cursor:
            created, last_id = _decode_cursor(cursor)
            query["$or"] = [{"created_at": {"$lt": created}}, {"created_at": created, "_id": {"$lt": last_id}}]
        found = self.tasks.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).limit(limit + 1)
        tasks = [Task.from_document(d) async for d in found]
        more = len(tasks) > limit
        tasks = tasks[:limit]
        return tasks, (_encode_cursor(tasks[-1]) if more else None)

    async def save_task(self, task: Task) -> Task | None:
        """Write ``task`` if nobody changed it since it was loaded; the saved task, or None."""
        saved = task.model_copy(update={"version": task.version + 1})
        result = await self.tasks.replace_one({"_id": task.id, "version": task.version}, saved.to_document())
        return saved if result.matched_count else None

    async def save_tasks(self, tasks: Sequence[Task]) -> list[str]:
        """Write each task conditionally, in one round trip; return the ids that lost a race."""
        if not tasks:
            return []
        # The token tells our writes from another writer's that reached the same version number.
        token = uuid.uuid4().hex
        writes = [ReplaceOne({"_id": t.id, "version": t.version},
                             {**t.model_copy(update={"version": t.version + 1}).to_document(), "write_id": token})
                  for t in tasks]
        result = await self.tasks.bulk_write(writes, ordered=False)
        if result.matched_count == len(tasks):
            return []
        ids = [t.id for t in tasks]
        ours = {d["_id"] async for d in self.tasks.find({"_id": {"$in": ids}, "write_id": token}, {"_id": 1})}
        return [i for i in ids if i not in ours]

    async def sweep_candidates(self, now: datetime, stale_before: datetime, limit: int = 500) -> list[Task]:
        query = {"$or": [
            {"status": TaskStatus.PENDING.value, "expires_at": {"$lte": now}},
            {"status": TaskStatus.PENDING_COMPLETION.value, "completion_deadline": {"$lte": now}},
            {"status": TaskStatus.IN_PROGRESS.value, "updated_at": {"$lte": stale_before}},
        ]}
        return [Task.from_document(d) async for d in self.tasks.find(query).limit(limit)]

    async def job_counts(self, job_id: str) -> dict[str, int]:
        return (await self.job_counts_many([job_id]))[job_id]

    async def job_counts_many(self, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Tasks per status of each job, in one aggregation (answered from the job_id+status index)."""
        pipeline = [{"$match": {"job_id": {"$in": list(job_ids)}}},
                    {"$group": {"_id": {"job": "$job_id", "status": "$status"}, "n": {"$sum": 1}}}]
        counts = {job_id: {status.value: 0 for status in TaskStatus} for job_id in job_ids}
        async for row in await self.tasks.aggregate(pipeline):
            counts[row["_id"]["job"]][row["_id"]["status"]] = row["n"]
        return counts

    async def running_job_ids(self, limit: int) -> list[str]:
        """Running jobs, the least recently checked first (each check moves a job to the back)."""
        found = self.jobs.find({"status": "running"}, {"_id": 1}).sort([("checked_at", ASCENDING)]).limit(limit)
        ids = [d["_id"] async for d in found]
        if ids:
            await self.jobs.update_many({"_id": {"$in": ids}}, {"$currentDate": {"checked_at": True}})
        return ids

    async def job_has_open_tasks(self, job_id: str) -> bool:
        return await self.tasks.find_one({"job_id": job_id, "status": {"$in": [s.value for s in OPEN]}},
                                         {"_id": 1}) is not None

    async def wait_for_end(self, task_id: str, seconds: float) -> Task | None:
        """The task once it has ended, or None if it has not within ``seconds``.

        Waits on a change stream of the task (any orchestrator instance's write wakes it); where
        MongoDB has none (a standalone server), polls with a backoff from 50 ms to 1 s.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            # Each wait on the stream is short, so the deadline is kept to within WAIT_STEP_MS.
            stream = await self.tasks.watch([{"$match": {"documentKey._id": task_id}}],
                                            full_document="updateLookup", max_await_time_ms=WAIT_STEP_MS)
        except OperationFailure:
            stream = None
        try:
            # Read after the stream is open: a change between the insert and the watch is not lost.
            task = await self.get_task(task_id)
            delay = 0.05
            while task is not None and task.status not in TERMINAL:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                if stream is None:
                    await asyncio.sleep(min(delay, remaining))
                    delay = min(delay * 2, 1.0)
                    task = await self.get_task(task_id)
                    continue
                change = await stream.try_next()
                if change is not None and change.get("fullDocument"):
                    task = Task.from_document(change["fullDocument"])
            return task
        finally:
            if stream is not None:
                await stream.close()

    # --- what an Inform needs --------------------------------------------------------------

    async def inform_views(self, device_ids: Sequence[str]) -> dict[str, InformView]:
        """Per device: its state, its open tasks (oldest first) and its unended sessions.

        One aggregation for all the devices, not three queries each: on the Inform path, each
        round trip costs more client CPU than MongoDB spends answering it. A device need not exist
        yet (tasks may wait for a device that has never informed), hence the pipeline starts from
        literal documents.
        """
        ids = list(dict.fromkeys(device_ids))
        pipeline: list[dict[str, Any]] = [
            {"$documents": [{"_id": device_id} for device_id in ids]},
            # known_names: a name cache that earlier versions kept per device (never read now).
            {"$lookup": {"from": DEVICES, "localField": "_id", "foreignField": "_id", "as": "device",
                         "pipeline": [{"$project": {"known_names": 0}}]}},
            {"$lookup": {"from": TASKS, "localField": "_id", "foreignField": "device_id", "as": "tasks",
                         "pipeline": [{"$match": {"status": {"$in": [s.value for s in OPEN]}}},
                                      {"$sort": {"created_at": ASCENDING}}, {"$limit": MAX_OPEN_TASKS}]}},
            {"$lookup": {"from": SESSIONS, "localField": "_id", "foreignField": "device_id", "as": "sessions"}},
        ]
        cursor = await self.db.aggregate(pipeline)
        return {row["_id"]: InformView(
                    device=DeviceState.from_document(row["device"][0]) if row["device"] else None,
                    open_tasks=[Task.from_document(d) for d in row["tasks"]],
                    sessions=[SessionState.from_document(d) for d in row["sessions"]])
                async for row in cursor}

    async def session_view(self, session_id: str) -> SessionView | None:
        """A live session with its device's state and its tasks (in the session's order)."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {"_id": session_id}},
            {"$lookup": {"from": DEVICES, "localField": "device_id", "foreignField": "_id", "as": "_device",
                         "pipeline": [{"$project": {"known_names": 0}}]}},
            {"$lookup": {"from": TASKS, "localField": "task_ids", "foreignField": "_id", "as": "_tasks"}},
        ]
        rows = await (await self.sessions.aggregate(pipeline)).to_list(1)
        if not rows:
            return None
        row = rows[0]
        session = SessionState.from_document(row)
        found = {d["_id"]: Task.from_document(d) for d in row["_tasks"]}
        return SessionView(session=session,
                           device=DeviceState.from_document(row["_device"][0]) if row["_device"] else None,
                           tasks=[found[i] for i in session.task_ids if i in found])

    # --- devices ---------------------------------------------------------------------------

    async def get_device(self, device_id: str) -> DeviceState | None:
        document = await self.devices.find_one({"_id": device_id})
        return DeviceState.from_document(document) if document else None

    async def save_device(self, device: DeviceState) -> None:
        # Only the consumer writes this collection, one event of a device at a time: no race.
        await self.devices.replace_one({"_id": device.id}, device.to_document(), upsert=True)

    async def forget_device(self, device_id: str) -> None:
        """Drop the device's sessions, then its state (a deleted device: see Engine.on_device_deleted)."""
        await self.sessions.delete_many({"device_id": device_id})
        await self.devices.delete_one({"_id": device_id})

    async def open_tasks_of(self, device_id: str, limit: int = MAX_OPEN_TASKS) -> list[Task]:
        """Open tasks of one device, oldest first, up to ``limit``."""
        found = self.tasks.find({"device_id": device_id, "status": {"$in": [s.value for s in OPEN]}})
        return [Task.from_document(d) async for d in found.sort("created_at", ASCENDING).limit(limit)]

    async def open_heals(self, device_id: str) -> list[Task]:
        """The device's open self-heal walks (a 9005 is healed once per subtree)."""
        found = self.tasks.find({"device_id": device_id, "status": {"$in": [s.value for s in OPEN]},
                                 "origin": "self-heal"})
        return [Task.from_document(d) async for d in found.limit(MAX_OPEN_TASKS)]

    async def tasks_awaiting_heal(self, device_id: str, healer_id: str) -> list[Task]:
        """Pending tasks of the device that wait for the self-heal walk ``healer_id``."""
        found = self.tasks.find({"device_id": device_id, "status": TaskStatus.PENDING.value,
                                 "progress.heal.waiting": healer_id})
        return [Task.from_document(d) async for d in found.limit(MAX_OPEN_TASKS)]

    # --- sessions --------------------------------------------------------------------------

    async def save_session(self, session: SessionState, before: SessionState | None = None) -> None:
        """Write the session; given the session as it was loaded, only the fields that changed."""
        document = session.to_document()
        if before is None:
            await self.sessions.replace_one({"_id": session.session_id}, document, upsert=True)
            return
        old = before.to_document()
        changes = {k: v for k, v in document.items() if k not in ("_id", "rpcs") and old.get(k) != v}
        changes.update({f"rpcs.{i}": ref for i, ref in document["rpcs"].items() if old["rpcs"].get(i) != ref})
        gone = {f"rpcs.{i}": "" for i in old["rpcs"] if i not in document["rpcs"]}
        update: dict[str, Any] = {}
        if changes:
            update["$set"] = changes
        if gone:
            update["$unset"] = gone
        if update:
            await self.sessions.update_one({"_id": session.session_id}, update)

    # --- walks -----------------------------------------------------------------------------

    async def insert_walk_items(self, items: Sequence[dict[str, Any]]) -> None:
        """Insert walk items; an item already there (a decision made again) is left as it is."""
        if not items:
            return
        now = datetime.now(UTC)
        try:
            await self.walks.insert_many([{**item, "at": now} for item in items], ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise

    async def walk_upcoming(self, cursors: dict[str, int], limit: int) -> dict[str, list[dict[str, Any]]]:
        """Per walk: its next ``limit`` queued RPC items from the cursor on."""
        out: dict[str, list[dict[str, Any]]] = {}
        for walk_id, taken in cursors.items():
            found = self.walks.find({"walk": walk_id, "type": "rpc", "seq": {"$gte": taken}}, {"at": 0})
            out[walk_id] = [d async for d in found.sort("seq", ASCENDING).limit(limit)]
        return out

    async def walk_records(self, walk_id: str) -> list[dict[str, Any]]:
        found = self.walks.find({"walk": walk_id, "type": "rec"}, {"at": 0}).sort("seq", ASCENDING)
        return [d async for d in found]

    async def finish_walk(self, walk_id: str, *, keep_records: bool) -> None:
        """A walk ended well: its queue goes, and its records too unless its result refers to them."""
        query: dict[str, Any] = {"walk": walk_id}
        if keep_records:
            query["type"] = "rpc"
        await self.walks.delete_many(query)

    async def delete_sessions(self, session_ids: Sequence[str]) -> None:
        if session_ids:
            await self.sessions.delete_many({"_id": {"$in": list(session_ids)}})

    # --- policies --------------------------------------------------------------------------

    async def insert_policy(self, policy: Policy) -> None:
        await self.policies.insert_one(_policy_document(policy))
        await workdue.mark_due(self.db)  # a policy may concern any device

    async def list_policies(self) -> list[Policy]:
        found: list[Policy] = []
        async for document in self.policies.find({}).sort([("priority", ASCENDING), ("name", ASCENDING)]):
            try:
                found.append(_policy_from(document))
            except ValidationError as exc:
                # Saved under an older query language ($regex, natural order): it no longer applies,
                # and must not stop every other policy; the log says which and why.
                log.warning("stored policy skipped: its query is not valid any more",
                            extra={"policy_id": document.get("_id"), "error": str(exc).splitlines()[-1]})
        return found

    async def get_policy(self, policy_id: str) -> Policy | None:
        document = await self.policies.find_one({"_id": policy_id})
        return _policy_from(document) if document else None

    async def delete_policy(self, policy_id: str) -> bool:
        deleted = (await self.policies.delete_one({"_id": policy_id})).deleted_count > 0
        if deleted:
            await workdue.mark_due(self.db)
        return deleted

    # --- jobs ------------------------------------------------------------------------------

    async def insert_job(self, job: dict[str, Any]) -> None:
        await self.jobs.insert_one(job)

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        return await self.jobs.find_one({"_id": job_id})

    async def list_jobs(self, *, status: str | None = None, limit: int = 50, cursor: str | None = None,
                        scope: str | None = None, scoped: bool = False) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first, keyset-paged like the tasks (campaigns, another kind in the collection, left
        out); ``scoped``: only the jobs made in ``scope``."""
        query: dict[str, Any] = {"kind": {"$ne": "campaign"}}
        if status is not None:
            query["status"] = status
        if scoped:
            query["scope"] = scope
        if cursor:
            created, last_id = _decode_cursor(cursor)
            query["$or"] = [{"created_at": {"$lt": created}}, {"created_at": created, "_id": {"$lt": last_id}}]
        found = self.jobs.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).limit(limit + 1)
        jobs = [d async for d in found]
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return jobs, (_cursor_of(aware(jobs[-1]["created_at"]), jobs[-1]["_id"]) if more else None)

    async def claim_job(self, owner: str, now: datetime, until: datetime) -> dict[str, Any] | None:
        """Take the lease of the oldest job with work to do whose lease is free (expired or never taken)."""
        return await self.jobs.find_one_and_update(
            {"work": {"$exists": True}, "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]},
            {"$set": {"lease_owner": owner, "lease_until": until}},
            sort=[("created_at", ASCENDING)], return_document=ReturnDocument.AFTER)

    async def renew_job_lease(self, job_id: str, owner: str, until: datetime) -> bool:
        result = await self.jobs.update_one({"_id": job_id, "lease_owner": owner}, {"$set": {"lease_until": until}})
        return result.matched_count == 1

    async def advance_job(self, job_id: str, owner: str, expect: dict[str, Any], changes: dict[str, Any],
                          unset: Sequence[str] = ()) -> bool:
        """Write ``changes`` if we still hold the lease and the job still matches ``expect``."""
        update: dict[str, Any] = {"$set": changes}
        if unset:
            update["$unset"] = {name: "" for name in unset}
        result = await self.jobs.update_one({"_id": job_id, "lease_owner": owner, **expect}, update)
        return result.matched_count == 1

    async def release_job(self, job_id: str, owner: str, retry_at: datetime | None = None) -> None:
        """Give the lease back; ``retry_at`` keeps every instance off the job until then (a backoff)."""
        await self.jobs.update_one({"_id": job_id, "lease_owner": owner},
                                   {"$set": {"lease_owner": None, "lease_until": retry_at}})

    async def update_job(self, job_id: str, changes: dict[str, Any], *, expect: dict[str, Any] | None = None,
                         unset: Sequence[str] = ()) -> bool:
        update: dict[str, Any] = {"$set": changes}
        if unset:
            update["$unset"] = {name: "" for name in unset}
        return (await self.jobs.update_one({"_id": job_id, **(expect or {})}, update)).matched_count == 1

    async def open_job_tasks(self, job_id: str, limit: int = 500) -> list[Task]:
        found = self.tasks.find({"job_id": job_id, "status": {"$in": [s.value for s in OPEN]}}).limit(limit)
        return [Task.from_document(d) async for d in found]


def _policy_document(policy: Policy) -> dict[str, Any]:
    document = policy.to_document()
    document["match"]["query"] = json.dumps(document["match"]["query"])
    return document


def _policy_from(document: dict[str, Any]) -> Policy:
    values = dict(document)
    match = dict(values.get("match") or {})
    if isinstance(match.get("query"), str):
        match["query"] = json.loads(match["query"])
    values["match"] = match
    return Policy.from_document(values)


def _encode_cursor(task: Task) -> str:
    return _cursor_of(task.created_at, task.id)


def _cursor_of(created_at: datetime, last_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), last_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, task_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return aware(datetime.fromisoformat(created)), str(task_id)
    except (ValueError, TypeError, binascii.Error):
        raise CursorError("invalid cursor; pass the next_cursor of the previous page") from None
