"""The campaign runner: a kind of the durable bulk-work engine (services/orchestrator/jobs.py).

A campaign is a document of the ``jobs`` collection with ``kind: campaign`` and its own
``state`` (campaigns.CAMPAIGN_STATES); while it has ``work``, the engine's instances claim it
under the same lease as a job and call :meth:`CampaignRunner.tick`, which does one bounded round
and gives the lease back with the time of the next round. A round:

1. looks at the devices in progress (their Download task, the version the device reports) and
   stores each outcome (upgraded, failed, or another attempt);
2. recounts the devices per state of the waves still moving (the stored counts answer the
   progress query without a scan);
3. applies the stop rules (the campaign pauses itself with the reason);
4. materialises the current wave lazily, a page of the selection at a time from the stored
   inventory cursor, each device stored as waiting or skipped with its reason; when the wave is
   done, the gate decides: next wave, wait (soak, approval) or pause;
5. inside a maintenance window, starts waiting devices up to the in-flight cap and the
   connection-request rate: each start is stored (device in_progress with its task id) before
   the Download task is inserted and the device woken.

Task ids are derived from (campaign, device, attempt), so a round cut off by a crash and run
again by another instance inserts no second Download. Every write of the campaign document is
conditional on the lease and on the state the round read: an operator's pause or cancel wins.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from services.bus.events import CampaignEvent, utcnow
from services.common.settings import Settings
from services.orchestrator import campaigns as C
from services.orchestrator import clients
from services.orchestrator import tasks as T
from services.orchestrator.connreq import ConnectionRequester
from services.orchestrator.jobs import cancel_open_tasks
from services.orchestrator.store import DEVICES, Store
from services.orchestrator.tasks import Task, aware

if TYPE_CHECKING:
    from services.orchestrator.engine import Publisher

log = logging.getLogger(__name__)

CAMPAIGN_DEVICES = "campaign_devices"
KIND = "campaign"
TICK = "tick"
SWEEP = "sweep"
# Devices in progress looked at per round, at most (the in-flight cap's upper bound, campaigns.Limits).
OBSERVE_LIMIT = 5000
EVENT_TIMEOUT = 5.0

CAMPAIGN_DEVICE_STATES = Gauge("acs_campaign_devices", "Devices of a campaign per state", ["campaign", "state"])
CAMPAIGN_IN_FLIGHT = Gauge("acs_campaign_downloads_in_flight", "Devices of a campaign with a Download in progress",
                           ["campaign"])

Clock = Callable[[], datetime]
Send = Callable[[CampaignEvent], Awaitable[None]]


@dataclass(frozen=True)
class CampaignConfig:
    tick_seconds: float = 2.0
    page_size: int = 500
    # A started device whose Download is still queued this long after its last connection request
    # (it was busy in a session, or the request was lost) is woken again.
    rewake_seconds: float = 30.0
    clock: Clock = utcnow


class CampaignStore:
    """The ``campaign_devices`` collection: one document per (campaign, device) once materialised."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.devices = db[CAMPAIGN_DEVICES]
        self.orchestrator_devices = db[DEVICES]

    async def ensure_indexes(self) -> None:
        await self.devices.create_index([("campaign_id", ASCENDING), ("state", ASCENDING), ("wave", ASCENDING),
                                         ("device_id", ASCENDING)])
        await self.devices.create_index([("campaign_id", ASCENDING), ("wave", ASCENDING), ("state", ASCENDING)])
        await self.devices.create_index([("campaign_id", ASCENDING), ("ended_at", DESCENDING)], sparse=True)

    async def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert materialised devices; one already there (a page worked again) keeps its state."""
        if not rows:
            return
        try:
            await self.devices.insert_many(list(rows), ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise

    async def in_state(self, campaign_id: str, state: str, limit: int, max_wave: int | None = None,
                       ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"campaign_id": campaign_id, "state": state}
        if max_wave is not None:
            query["wave"] = {"$lte": max_wave}
        found = self.devices.find(query).sort([("wave", ASCENDING), ("device_id", ASCENDING)]).limit(limit)
        return [d async for d in found]

    async def count(self, campaign_id: str, state: str) -> int:
        return await self.devices.count_documents({"campaign_id": campaign_id, "state": state})

    async def move(self, row: dict[str, Any], changes: dict[str, Any], inc: dict[str, int] | None = None) -> bool:
        """Change a device's state if it is still as read (state and attempt)."""
        update: dict[str, Any] = {"$set": changes}
        if inc:
            update["$inc"] = inc
        result = await self.devices.update_one({"_id": row["_id"], "state": row["state"],
                                                "attempt": row.get("attempt", 0)}, update)
        return result.matched_count == 1

    async def counts_by_wave(self, campaign_id: str, waves: Sequence[int]) -> dict[int, dict[str, int]]:
        counts = {w: dict.fromkeys(C.STORED_DEVICE_STATES, 0) for w in waves}
        pipeline = [{"$match": {"campaign_id": campaign_id, "wave": {"$in": list(waves)}}},
                    {"$group": {"_id": {"w": "$wave", "s": "$state"}, "n": {"$sum": 1}}}]
        async for row in await self.devices.aggregate(pipeline):
            counts[row["_id"]["w"]][row["_id"]["s"]] = row["n"]
        return counts

    async def open_counts(self, campaign_id: str, waves: Sequence[int]) -> dict[int, dict[str, int]]:
        """Waiting and in-progress devices per wave: bounded by the cap and the lazy materialisation."""
        counts = {w: dict.fromkeys(C.OPEN_DEVICE_STATES, 0) for w in waves}
        pipeline = [{"$match": {"campaign_id": campaign_id, "state": {"$in": list(C.OPEN_DEVICE_STATES)},
                                "wave": {"$in": list(waves)}}},
                    {"$group": {"_id": {"w": "$wave", "s": "$state"}, "n": {"$sum": 1}}}]
        async for row in await self.devices.aggregate(pipeline):
            counts[row["_id"]["w"]][row["_id"]["s"]] = row["n"]
        return counts

    async def recent_outcomes(self, campaign_id: str, since: datetime | None, limit: int) -> list[bool]:
        """The latest ended devices, newest first: True for a failure."""
        query: dict[str, Any] = {"campaign_id": campaign_id, "state": {"$in": ["upgraded", "failed"]},
                                 "ended_at": {"$gte": since} if since else {"$exists": True}}
        found = self.devices.find(query, {"state": 1}).sort("ended_at", DESCENDING).limit(limit)
        return [d["state"] == "failed" async for d in found]

    async def failed_since(self, campaign_id: str, since: datetime | None) -> int:
        query: dict[str, Any] = {"campaign_id": campaign_id, "state": "failed"}
        if since:
            query["ended_at"] = {"$gte": since}
        return await self.devices.count_documents(query)

    async def last_upgrade(self, campaign_id: str, wave: int) -> datetime | None:
        found = await self.devices.find_one({"campaign_id": campaign_id, "wave": wave, "state": "upgraded"},
                                            {"ended_at": 1}, sort=[("ended_at", DESCENDING)])
        return aware(found["ended_at"]) if found and found.get("ended_at") else None

    async def reported_versions(self, device_ids: Sequence[str]) -> dict[str, str | None]:
        found = self.orchestrator_devices.find({"_id": {"$in": list(device_ids)}}, {"software_version": 1})
        return {d["_id"]: d.get("software_version") async for d in found}

    async def retry_failed(self, campaign_id: str) -> list[int]:
        """Failed devices wait again, with their next attempt; the waves they are in."""
        waves = await self.devices.distinct("wave", {"campaign_id": campaign_id, "state": "failed"})
        await self.devices.update_many({"campaign_id": campaign_id, "state": "failed"},
                                       {"$set": {"state": "waiting", "reason": "retried by an operator",
                                                 "fault": None},
                                        "$inc": {"attempt": 1}, "$unset": {"ended_at": ""}})
        return sorted(int(w) for w in waves)

    async def close_open(self, campaign_id: str, reason: str) -> None:
        await self.devices.update_many({"campaign_id": campaign_id, "state": {"$in": list(C.OPEN_DEVICE_STATES)}},
                                       {"$set": {"state": "skipped", "reason": reason, "ended_at": utcnow()}})

    async def page(self, campaign_id: str, state: str | None, limit: int, after: str | None,
                   ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"campaign_id": campaign_id}
        if state:
            query["state"] = state
        if after:
            query["device_id"] = {"$gt": after}
        found = self.devices.find(query, {"_id": 0}).sort("device_id", ASCENDING).limit(limit)
        return [d async for d in found]


def device_row_id(campaign_id: str, device_id: str) -> str:
    return f"{campaign_id}\n{device_id}"


class CampaignRunner:
    """One round of a campaign under the engine's lease (see the module's docstring)."""

    def __init__(self, settings: Settings, store: Store, devices: CampaignStore, http: Any,
                 requester: ConnectionRequester, publisher: Publisher, send: Send, *,
                 config: CampaignConfig | None = None, wake: Callable[[], None] | None = None) -> None:
        self.settings, self.store, self.devices, self.http = settings, store, devices, http
        self.requester, self.publisher, self.send = requester, publisher, send
        self.config = config or CampaignConfig()
        self.wake = wake
        self._timers: set[asyncio.TimerHandle] = set()

    def now(self) -> datetime:
        return self.config.clock()

    # --- the round ---------------------------------------------------------------------------

    async def tick(self, doc: dict[str, Any], lost: asyncio.Event) -> datetime | None:
        """Work the campaign once; when to come back (None: no more work until someone stores some)."""
        owner = doc["lease_owner"]
        cid = doc["_id"]
        if doc.get("work") == SWEEP:
            await self._sweep(doc, owner)
            return None
        state = doc.get("state")
        now = self.now()
        if state == "scheduled":
            start_at = aware(doc["start_at"]) if doc.get("start_at") else None
            if start_at is not None and now < start_at:
                return self._later(min(start_at, now + timedelta(seconds=60)), now)
            if not await self._advance(doc, owner, {"state": "running", "started_at": now, "reason": ""}):
                return None
            doc["state"] = state = "running"
            await self._event(doc, "campaign_started")
        if state not in ("running", "paused"):
            await self.store.advance_job(cid, owner, {"state": state}, {}, unset=("work",))
            return None
        spec = C.CampaignIn.model_validate(doc["spec"])
        await self._observe(doc, spec, now)
        await self._recount(doc, owner)
        if state == "paused" or lost.is_set():
            if state == "paused" and not any(w.get("counts", {}).get("in_progress") for w in doc["waves"]):
                # Nothing moves while paused: the next round is the one a resume stores.
                await self.store.advance_job(cid, owner, {"state": "paused"}, {}, unset=("work",))
                return None
            return self._later(now + timedelta(seconds=self.config.tick_seconds), now)
        reason = C.stop_reason(spec.stop, await self.devices.recent_outcomes(cid, doc.get("rules_since"),
                                                                              spec.stop.window),
                               await self.devices.failed_since(cid, doc.get("rules_since")))
        if reason:
            await self._pause(doc, owner, reason)
            return self._later(now + timedelta(seconds=self.config.tick_seconds), now)
        if not await self._waves(doc, spec, owner, now):
            return self._later(now + timedelta(seconds=self.config.tick_seconds), now)
        if doc.get("state") == "running":
            await self._start(doc, spec, owner, now)
            await self._recount(doc, owner)
        return self._later(now + timedelta(seconds=self.config.tick_seconds), now)

    def _later(self, when: datetime, now: datetime) -> datetime:
        """The next round's time, on the wall clock of the leases (the campaign's clock may be another);
        this instance also wakes its engine then (the others poll).

        The delay counts from the round's own ``now``, not from a fresh reading: a clock stepped back
        during the round (NTP, or a test's clock) must not push the next round hours away."""
        delay = max(0.0, (when - now).total_seconds())
        if self.wake is not None:
            handle = asyncio.get_running_loop().call_later(delay, self._fire)
            self._timers.add(handle)
        return utcnow() + timedelta(seconds=delay)

    def _fire(self) -> None:
        now = asyncio.get_running_loop().time()
        self._timers = {h for h in self._timers if h.when() > now}
        if self.wake is not None:
            self.wake()

    def cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    # --- 1. devices in progress ------------------------------------------------------------------

    async def _observe(self, doc: dict[str, Any], spec: C.CampaignIn, now: datetime) -> None:
        cid = doc["_id"]
        rows = await self.devices.in_state(cid, "in_progress", OBSERVE_LIMIT)
        if not rows:
            return
        tasks = {t.id: t for t in await self._tasks([r["task_id"] for r in rows])}
        versions = await self.devices.reported_versions([r["device_id"] for r in rows])
        missing: list[dict[str, Any]] = []
        to_cancel: list[Task] = []
        rewake: list[dict[str, Any]] = []
        again = timedelta(seconds=self.config.rewake_seconds)
        for row in rows:
            task = tasks.get(row["task_id"])
            if task is None:
                missing.append(row)  # the start was stored, the task not yet: create it now
                continue
            if task.status is T.TaskStatus.PENDING and now - aware(row.get("woken_at") or row["started_at"]) >= again:
                rewake.append(row)
            target = row["target_version"]
            outcome, why = C.device_outcome(task.status.value, task.reason, versions.get(row["device_id"]),
                                            target, now, aware(row["deadline"]), int(row.get("attempt", 0)),
                                            spec.limits.retries)
            if outcome == "in_progress":
                continue
            if task.open:
                to_cancel.append(T.cancel(task, now, why))
            fault = task.faults[-1].model_dump(mode="json") if task.faults else None
            if outcome == "upgraded":
                if await self.devices.move(row, {"state": "upgraded", "ended_at": now, "reason": ""}):
                    self._ended(doc, row, "upgraded")
            elif outcome == "retry":
                await self.devices.move(row, {"state": "waiting", "reason": f"trying again after: {why}",
                                              "fault": fault}, inc={"attempt": 1})
            elif await self.devices.move(row, {"state": "failed", "ended_at": now, "reason": why, "fault": fault}):
                self._ended(doc, row, "failed")
        if to_cancel:
            await self.store.save_tasks(to_cancel)
        ended = {t.id for t in to_cancel}
        rate = spec.limits.connection_requests_per_second
        rewake = [r for r in rewake if r["task_id"] not in ended][:max(1, math.ceil(rate * self.config.tick_seconds))]
        if rewake:
            await self.devices.devices.update_many({"_id": {"$in": [r["_id"] for r in rewake]}},
                                                   {"$set": {"woken_at": now}})
            await self._wake_devices([r["device_id"] for r in rewake], rate)
        if missing:
            created = set(await self.store.insert_new_tasks([self._task(doc, row, now) for row in missing]))
            await self._wake_devices([r["device_id"] for r in missing if r["task_id"] in created],
                                     spec.limits.connection_requests_per_second)

    async def _tasks(self, ids: list[str]) -> list[Task]:
        found = self.store.tasks.find({"_id": {"$in": ids}})
        return [Task.from_document(d) async for d in found]

    # --- 2. counts -------------------------------------------------------------------------------

    async def _recount(self, doc: dict[str, Any], owner: str, full: Sequence[int] = ()) -> None:
        """Store the counts of the waves that still move.

        Waiting and in-progress devices are counted every round (few: the cap and the lazy
        materialisation bound them); the ended states are kept by the round that ends devices, and
        counted afresh (``full``) when a wave is done, after a retry, and after a cancel: a round
        cut off between its device writes and this one is off by at most its own devices until then.
        """
        current = int(doc.get("wave", 0))
        active = sorted({current, *[int(w) for w in doc.get("active_waves", [])]})
        active = [w for w in active if w < len(doc["waves"])]
        full = sorted(set(full) | (set(active) if doc.get("recount") else set()))
        exact = await self.devices.counts_by_wave(doc["_id"], full) if full else {}
        open_ = await self.devices.open_counts(doc["_id"], active)
        counts: dict[int, dict[str, int]] = {}
        for w in {*active, *full}:
            if w in exact:
                counts[w] = exact[w]
            else:
                counts[w] = {**dict.fromkeys(C.STORED_DEVICE_STATES, 0), **(doc["waves"][w].get("counts") or {}),
                             **open_[w]}
        changes: dict[str, Any] = {f"waves.{w}.counts": c for w, c in counts.items()}
        # A wave other than the current one leaves the active set once nothing in it moves.
        still = [w for w in active if w == current or counts[w]["waiting"] or counts[w]["in_progress"]]
        changes["active_waves"] = still
        if await self.store.advance_job(doc["_id"], owner, {}, changes, unset=("recount",) if doc.get("recount")
                                        else ()):
            for w, c in counts.items():
                doc["waves"][w]["counts"] = c
            doc["active_waves"] = still
            doc.pop("recount", None)
        totals = C.progress(doc)
        for state, n in totals.items():
            CAMPAIGN_DEVICE_STATES.labels(doc["_id"], state).set(n)
        CAMPAIGN_IN_FLIGHT.labels(doc["_id"]).set(totals["in_progress"])

    def _ended(self, doc: dict[str, Any], row: dict[str, Any], state: str) -> None:
        """A device of this round ended: its wave's stored count follows at the round's recount."""
        counts = doc["waves"][int(row["wave"])].setdefault("counts", {})
        counts[state] = int(counts.get(state, 0)) + 1

    # --- 3. pausing ------------------------------------------------------------------------------

    async def _pause(self, doc: dict[str, Any], owner: str, reason: str) -> None:
        if await self._advance(doc, owner, {"state": "paused", "paused_by": "rule", "reason": reason,
                                            "paused_at": self.now()}):
            doc.update(state="paused", paused_by="rule", reason=reason)
            log.warning("campaign paused", extra={"campaign_id": doc["_id"], "reason": reason})
            await self._event(doc, "campaign_paused", details={"paused_by": "rule"})

    # --- 4. waves --------------------------------------------------------------------------------

    async def _waves(self, doc: dict[str, Any], spec: C.CampaignIn, owner: str, now: datetime) -> bool:
        """Materialise the current wave as far as needed; move on when it is done. False: stop here."""
        cid = doc["_id"]
        w = int(doc.get("wave", 0))
        wave = doc["waves"][w]
        target = wave.get("target")
        counts = wave.get("counts") or {}
        # Lazily: only as many waiting devices as the next rounds can start.
        want = max(self.config.page_size, 2 * spec.limits.max_in_flight)
        while (not doc.get("selection_done") and (target is None or int(wave.get("taken", 0)) < target)
               and counts.get("waiting", 0) < want):
            if not await self._materialise(doc, spec, owner, w):
                return False
            counts = doc["waves"][w].get("counts") or {}
            wave = doc["waves"][w]
        full = doc.get("selection_done") or (target is not None and int(wave.get("taken", 0)) >= target)
        still_open = any((doc["waves"][a].get("counts") or {}).get(s, 0)
                         for a in {w, *doc.get("active_waves", [])} for s in C.OPEN_DEVICE_STATES)
        if not full or still_open:
            return True
        # The wave is done: counted afresh (once), then the gate decides.
        if not wave.get("completed_at"):
            await self._recount(doc, owner, full=[w])
            counts = doc["waves"][w].get("counts") or {}
            if counts.get("waiting") or counts.get("in_progress"):
                return True
        if not wave.get("completed_at"):
            if not await self._advance(doc, owner, {f"waves.{w}.completed_at": now}):
                return False
            wave["completed_at"] = now
            await self._event(doc, "campaign_wave_completed", wave=w)
        if doc.get("selection_done") or w + 1 >= len(doc["waves"]):
            # No device left to materialise: every later wave would be empty.
            if await self._advance(doc, owner, {"state": "completed", "completed_at": now, "reason": ""},
                                   unset=("work",)):
                doc["state"] = "completed"
                log.info("campaign completed", extra={"campaign_id": cid})
                await self._event(doc, "campaign_completed")
            return False
        result, why = C.gate(spec.gates, counts, await self.devices.last_upgrade(cid, w), now,
                             bool(doc["waves"][w + 1].get("approved")))
        if result == "fail":
            await self._pause(doc, owner, why)
            return False
        if result == "wait":
            if doc.get("note") != why:
                await self._advance(doc, owner, {"note": why})
                doc["note"] = why
            return False
        changes = {"wave": w + 1, f"waves.{w + 1}.started_at": now, "note": "",
                   "active_waves": sorted({w + 1, *doc.get("active_waves", [])} - {w})}
        if not await self._advance(doc, owner, changes):
            return False
        doc["wave"] = w + 1
        doc["waves"][w + 1]["started_at"] = now
        doc["active_waves"] = changes["active_waves"]
        log.info("campaign wave started", extra={"campaign_id": cid, "wave": w + 1})
        await self._event(doc, "campaign_wave_started", wave=w + 1)
        return True

    async def _materialise(self, doc: dict[str, Any], spec: C.CampaignIn, owner: str, w: int) -> bool:
        """One page of the selection into wave ``w``: each device waiting or skipped with its reason."""
        cid = doc["_id"]
        wave = doc["waves"][w]
        target = wave.get("target")
        size = self.config.page_size if target is None else min(self.config.page_size,
                                                                 max(1, target - int(wave.get("taken", 0))))
        cursor = doc.get("cursor")
        try:
            rows, next_cursor = await clients.device_rows(self.http, self.settings, doc["query"],
                                                          "id,product_class,software_version", cursor, size)
        except clients.UpstreamError as exc:
            await self._advance(doc, owner, {"note": f"the inventory did not answer: {exc.message}"})
            return False
        targets = {f["product_class"]: f["version"] for f in doc["firmware"]}
        now = self.now()
        new: list[dict[str, Any]] = []
        taken = 0
        for row in rows:
            ok, why = C.eligible(row.get("product_class"), row.get("software_version"), targets, spec.eligibility)
            taken += ok
            new.append({"_id": device_row_id(cid, row["id"]), "campaign_id": cid, "device_id": row["id"],
                        "wave": w, "state": "waiting" if ok else "skipped", "reason": why, "attempt": 0,
                        "product_class": row.get("product_class"), "from_version": row.get("software_version"),
                        "target_version": targets.get(row.get("product_class") or ""),
                        **({} if ok else {"ended_at": now})})
        await self.devices.insert(new)
        counts = {**dict.fromkeys(C.STORED_DEVICE_STATES, 0), **(wave.get("counts") or {})}
        counts["waiting"] += taken
        counts["skipped"] += len(rows) - taken
        # The page's counts are stored with its cursor: a page counts once.
        changes: dict[str, Any] = {"cursor": next_cursor, "selection_done": next_cursor is None,
                                   f"waves.{w}.seen": int(wave.get("seen", 0)) + len(rows),
                                   f"waves.{w}.taken": int(wave.get("taken", 0)) + taken,
                                   f"waves.{w}.counts": counts}
        # Conditional on the cursor read: a page worked twice (after a lost lease) counts once.
        if not await self._advance(doc, owner, changes, expect={"cursor": cursor}):
            return False
        doc["cursor"], doc["selection_done"] = next_cursor, next_cursor is None
        wave["seen"], wave["taken"] = changes[f"waves.{w}.seen"], changes[f"waves.{w}.taken"]
        wave["counts"] = counts
        return True

    # --- 5. starting devices ---------------------------------------------------------------------

    async def _start(self, doc: dict[str, Any], spec: C.CampaignIn, owner: str, now: datetime) -> None:
        cid = doc["_id"]
        if not C.in_window(spec.windows, now):
            opens = C.next_window_start(spec.windows, now)
            note = (f"outside the maintenance windows ({C.window_description(spec.windows)})"
                    + (f"; the next opens at {opens.isoformat()}" if opens else ""))
            if doc.get("note") != note:
                await self._advance(doc, owner, {"note": note})
                doc["note"] = note
            return
        in_flight = await self.devices.count(cid, "in_progress")
        rate = spec.limits.connection_requests_per_second
        budget = min(spec.limits.max_in_flight - in_flight, max(1, math.ceil(rate * self.config.tick_seconds)))
        if budget <= 0:
            return
        rows = await self.devices.in_state(cid, "waiting", budget, max_wave=int(doc.get("wave", 0)))
        started: list[dict[str, Any]] = []
        timeout = timedelta(seconds=spec.limits.device_timeout_seconds)
        for row in rows:
            attempt = int(row.get("attempt", 0))
            task_id = C.campaign_task_id(cid, row["device_id"], attempt)
            # The decision first: the device is in progress with this task, then the task exists.
            changes = {"state": "in_progress", "task_id": task_id, "started_at": now, "deadline": now + timeout,
                       "reason": ""}
            if await self.devices.move(row, changes):
                started.append({**row, **changes})
        if not started:
            return
        if doc.get("note"):
            await self._advance(doc, owner, {"note": ""})
            doc["note"] = ""
        await self.store.insert_new_tasks([self._task(doc, row, now) for row in started])
        await self._wake_devices([row["device_id"] for row in started], rate)

    def _task(self, doc: dict[str, Any], row: dict[str, Any], now: datetime) -> Task:
        firmware = next(f for f in doc["firmware"] if f["product_class"] == row["product_class"])
        args = {"file_name": firmware["file_name"], "file_type": firmware["file_type"], "target_file_name": "",
                "delay_seconds": 0, "file_size": firmware["file_size"], "url": firmware["url"],
                "version": firmware["version"]}
        return Task(id=row["task_id"], device_id=row["device_id"], name="download", args=args,
                    origin=f"campaign:{doc['_id']}", job_id=doc["_id"], created_by=doc.get("created_by"),
                    created_at=now, updated_at=now, expires_at=aware(row["deadline"]),
                    # The campaign counts attempts itself (limits.retries): one Download per attempt.
                    max_attempts=1)

    async def _wake_devices(self, device_ids: list[str], rate: float) -> None:
        """Connection requests at ``rate`` per second at most."""
        gap = 1.0 / rate
        pending: list[asyncio.Task[Any]] = []
        for device_id in device_ids:
            device = await self.store.get_device(device_id)
            pending.append(asyncio.create_task(self.requester.wake(device)))
            await asyncio.sleep(gap)
        await asyncio.gather(*pending, return_exceptions=True)

    # --- cancelling ------------------------------------------------------------------------------

    async def _sweep(self, doc: dict[str, Any], owner: str) -> None:
        reason = doc.get("reason") or "campaign cancelled"
        await self.devices.close_open(doc["_id"], reason)
        await cancel_open_tasks(self.store, self.publisher, doc["_id"], reason)
        await self._recount_all(doc, owner)
        await self.store.advance_job(doc["_id"], owner, {"work": SWEEP}, {}, unset=("work",))

    async def _recount_all(self, doc: dict[str, Any], owner: str) -> None:
        counts = await self.devices.counts_by_wave(doc["_id"], list(range(len(doc["waves"]))))
        await self.store.advance_job(doc["_id"], owner, {}, {f"waves.{w}.counts": c for w, c in counts.items()})

    # --- helpers ---------------------------------------------------------------------------------

    async def _advance(self, doc: dict[str, Any], owner: str, changes: dict[str, Any],
                       expect: dict[str, Any] | None = None, unset: Sequence[str] = ()) -> bool:
        """Store ``changes`` if the lease is ours and the campaign is still in the state read."""
        return await self.store.advance_job(doc["_id"], owner, {"state": doc.get("state"), **(expect or {})},
                                            changes, unset=unset)

    async def _event(self, doc: dict[str, Any], kind: str, wave: int | None = None,
                     details: dict[str, Any] | None = None) -> None:
        event = CampaignEvent(kind=kind, campaign_id=doc["_id"], name=doc.get("name", ""),  # type: ignore[arg-type]
                              state=doc.get("state", ""), wave=wave, reason=doc.get("reason", ""),
                              counts=C.progress(doc), details=details or {})
        # The decision is stored already; a broker that does not answer must not hold the round.
        try:
            async with asyncio.timeout(EVENT_TIMEOUT):
                await self.send(event)
        except Exception:  # noqa: BLE001 - logged; the event is lost, the campaign goes on
            log.warning("could not publish a campaign event", extra={"campaign_id": doc["_id"], "kind": kind})
