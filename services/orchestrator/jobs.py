"""The durable bulk-work engine: a job's selection walked page by page, surviving any restart.

A job (collection ``jobs``) is the same task for every device an inventory query matches. The
API stores it and leaves the rest here; nothing about it lives only in memory:

- **Decisions are stored before they are acted on.** The job document holds the selection, the
  task, and the inventory cursor of the next page; ``work`` says what is left to do (``page``
  while the selection is walked, ``sweep`` after a cancel).
- **One instance works a job at a time**, under a lease (``lease_owner``, ``lease_until``)
  that a heartbeat extends while it works. An instance that dies stops renewing it; when it
  expires, any instance claims the job and goes on from the stored cursor.
- **A re-run page creates nothing twice.** A task's id is derived from (job, device), so the
  page after the last stored cursor, fetched again after a crash, inserts only what is missing.
- **Progress is a query**: the job's tasks counted by status (``Store.job_counts``).

Every write of a worker is conditional on its lease and on the job still being in the state it
read, so a cancel (the API sets ``status: cancelled`` and ``work: sweep``) is never overwritten;
the worker that notices it sweeps the open tasks itself, and so does whoever takes over the lease.

Firmware campaigns are to run on this engine too (a kind with its own page handler: waves,
gates and windows decide what a page does); jobs are its first kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from services.bus.events import DeviceEvent, new_id, utcnow
from services.common.settings import Settings
from services.orchestrator import clients
from services.orchestrator import tasks as T
from services.orchestrator.connreq import ConnectionRequester
from services.orchestrator.store import Store
from services.orchestrator.tasks import Task

if TYPE_CHECKING:  # the engine publishes task events made here: no import cycle at run time
    from services.orchestrator.engine import Publisher

log = logging.getLogger(__name__)

JOB_PAGES = Counter("acs_orchestrator_job_pages_total", "Pages of job selections worked", ["outcome"])
JOB_TASKS = Counter("acs_orchestrator_job_tasks_total", "Tasks created by jobs")

PAGE = "page"
SWEEP = "sweep"
# Another kind of bulk work (a firmware campaign): a round of it under the lease, and when the next is due.
KindHandler = Callable[[dict[str, Any], asyncio.Event], Awaitable[datetime | None]]
# Connection requests sent at once for one page of a job (the requester rate-limits them too).
WAKE_CONCURRENCY = 20


@dataclass(frozen=True)
class JobConfig:
    page_size: int = 500
    lease_seconds: float = 30.0
    # How often an idle instance looks for work whose lease expired (an instance died).
    claim_interval: float = 5.0
    # Backoff while the inventory does not answer (the job stays "resolving", with the reason).
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> JobConfig:
        return cls(page_size=settings.job_page_size, lease_seconds=settings.job_lease_seconds,
                   claim_interval=min(5.0, settings.job_lease_seconds / 2))


def job_task_id(job_id: str, device_id: str) -> str:
    """The id of a job's task for a device: the same on every run of the page that creates it."""
    return uuid.uuid5(uuid.UUID(hex=job_id), device_id).hex


def cancel_reason(who: str) -> str:
    return f"job cancelled by {who}"


class JobEngine:
    """Claims jobs with work to do and works them; one ``run`` loop per orchestrator instance."""

    def __init__(self, settings: Settings, store: Store, publisher: Publisher, http: Any,
                 requester: ConnectionRequester, *, config: JobConfig | None = None,
                 max_attempts: int = 5) -> None:
        self.settings, self.store, self.publisher, self.http = settings, store, publisher, http
        self.requester = requester
        self.config = config or JobConfig()
        self.max_attempts = max_attempts
        self.owner = f"orchestrator-{new_id()[:12]}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures: dict[str, int] = {}
        self._kinds: dict[str, KindHandler] = {}

    def register(self, kind: str, handler: KindHandler) -> None:
        """Work documents of ``kind`` (field ``kind``) with ``handler`` instead of paging a job's selection."""
        self._kinds[kind] = handler

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="orchestrator-jobs")

    async def stop(self) -> None:
        """Stop working; a job in hand keeps its stored cursor and its lease is given back."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """New work was stored (a job created or cancelled here): look now, not at the next interval."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                worked = await self.work_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("job engine round failed; trying again", exc_info=True)
                worked = False
            if not worked:
                with contextlib.suppress(Exception):
                    await self.settle_finished()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.claim_interval):
                        await self._wake.wait()

    async def work_once(self) -> bool:
        """Claim one job with work and work it; False when there was none."""
        now = utcnow()
        job = await self.store.claim_job(self.owner, now, self._lease_end(now))
        if job is None:
            return False
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(job["_id"], lost))
        retry_at: datetime | None = None
        try:
            handler = self._kinds.get(str(job.get("kind") or "job"))
            if handler is not None:
                retry_at = await handler(job, lost)
            elif job.get("work") == SWEEP:
                await self._sweep(job)
            else:
                retry_at = await self._walk(job, lost)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.release_job(job["_id"], self.owner, retry_at))
        return True

    async def settle_finished(self, limit: int = 100) -> int:
        """Store ``finished`` on running jobs whose every task ended (so that a status filter finds them)."""
        settled = 0
        for job_id in await self.store.running_job_ids(limit):
            if not await self.store.job_has_open_tasks(job_id):
                settled += await self.store.update_job(job_id, {"status": "finished", "finished_at": utcnow()},
                                                       expect={"status": "running"})
        return settled

    # --- walking the selection -------------------------------------------------------------

    async def _walk(self, job: dict[str, Any], lost: asyncio.Event) -> datetime | None:
        """Page through the selection from the stored cursor; a backoff time if the inventory failed."""
        job_id = job["_id"]
        cursor: str | None = job.get("cursor")
        while not lost.is_set():
            try:
                ids, next_cursor = await clients.device_page(self.http, self.settings, job["query"],
                                                             self.settings.admin_api_key, cursor,
                                                             self.config.page_size)
            except clients.UpstreamError as exc:
                JOB_PAGES.labels("error").inc()
                return await self._upstream_failed(job, exc)
            self._failures.pop(job_id, None)
            created = await self.store.insert_new_tasks(self._tasks_for(job, ids))
            JOB_TASKS.inc(len(created))
            done = next_cursor is None
            changes: dict[str, Any] = {"cursor": next_cursor, "pages": int(job.get("pages", 0)) + 1, "reason": ""}
            if done:
                changes.update(status="running", resolved_at=utcnow())
            advanced = await self.store.advance_job(job_id, self.owner, {"status": "resolving"}, changes,
                                                    unset=("work",) if done else ())
            if not advanced:
                # Cancelled meanwhile (or the lease was lost): what this page added must not stay open.
                JOB_PAGES.labels("interrupted").inc()
                current = await self.store.get_job(job_id)
                if current is not None and current.get("work") == SWEEP:
                    await self._sweep(current)
                return None
            JOB_PAGES.labels("ok").inc()
            job["pages"] = changes["pages"]
            if job.get("connection_request") and created:
                fresh = set(created)
                await self._wake_devices([d for d in ids if job_task_id(job_id, d) in fresh])
            if done:
                log.info("job resolved", extra={"job_id": job_id, "pages": changes["pages"]})
                return None
            cursor = next_cursor
        return None

    def _tasks_for(self, job: dict[str, Any], device_ids: list[str]) -> list[Task]:
        now = utcnow()
        spec = job["task"]
        return [Task(id=job_task_id(job["_id"], device_id), device_id=device_id, name=spec["name"],
                     args=dict(spec.get("args") or {}), origin=f"job:{job['_id']}", job_id=job["_id"],
                     created_by=job.get("created_by"), created_at=now, updated_at=now,
                     expires_at=job.get("task_expires_at"), max_attempts=job.get("max_attempts", self.max_attempts))
                for device_id in dict.fromkeys(device_ids)]

    async def _upstream_failed(self, job: dict[str, Any], exc: clients.UpstreamError) -> datetime | None:
        job_id = job["_id"]
        if exc.status != 503:
            # The query or the key was refused: asking again will not help.
            await self.store.advance_job(job_id, self.owner, {"status": "resolving"},
                                         {"status": "failed", "reason": exc.message}, unset=("work",))
            log.warning("job failed", extra={"job_id": job_id, "reason": exc.message})
            return None
        failures = self._failures[job_id] = self._failures.get(job_id, 0) + 1
        delay = T.backoff_seconds(failures, self.config.retry_base_seconds, self.config.retry_max_seconds)
        delay *= random.uniform(0.8, 1.2)  # instances that all saw the outage do not retry in step
        await self.store.advance_job(job_id, self.owner, {"status": "resolving"},
                                     {"reason": f"{exc.message}; retrying in {delay:.0f} s"})
        return utcnow() + timedelta(seconds=delay)

    async def _wake_devices(self, device_ids: list[str]) -> None:
        gate = asyncio.Semaphore(WAKE_CONCURRENCY)

        async def wake(device_id: str) -> None:
            async with gate:
                await self.requester.wake(await self.store.get_device(device_id))

        await asyncio.gather(*(wake(d) for d in device_ids), return_exceptions=True)

    # --- cancelling ------------------------------------------------------------------------

    async def _sweep(self, job: dict[str, Any]) -> None:
        await cancel_open_tasks(self.store, self.publisher, job["_id"], job.get("reason") or "job cancelled")
        await self.store.advance_job(job["_id"], self.owner, {"work": SWEEP}, {}, unset=("work",))

    # --- the lease -------------------------------------------------------------------------

    def _lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.config.lease_seconds)

    async def _heartbeat(self, job_id: str, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            try:
                if not await self.store.renew_job_lease(job_id, self.owner, self._lease_end(utcnow())):
                    lost.set()
                    return
            except Exception:
                log.warning("could not renew a job lease", extra={"job_id": job_id}, exc_info=True)


async def cancel_open_tasks(store: Store, publisher: Publisher, job_id: str, reason: str,
                            rounds: int = 1000) -> int:
    """Cancel every open task of a job, a batch at a time; announce each. The number cancelled."""
    cancelled = 0
    for _ in range(rounds):
        batch = await store.open_job_tasks(job_id)
        if not batch:
            break
        now = utcnow()
        changed = [T.cancel(t, now, reason) for t in batch]
        lost = set(await store.save_tasks(changed))
        saved = [t for t in changed if t.id not in lost]
        cancelled += len(saved)
        await publisher.device_events([task_event(t) for t in saved])
    return cancelled


def task_event(task: Task) -> DeviceEvent:
    """The device event for a task that ended outside a session (cancelled or expired)."""
    kind = {T.TaskStatus.CANCELLED: "task_cancelled", T.TaskStatus.EXPIRED: "task_expired",
            T.TaskStatus.SUCCEEDED: "task_succeeded"}.get(task.status, "task_failed")
    details: dict[str, Any] = {"task_id": task.id, "name": task.name, "origin": task.origin, "reason": task.reason}
    if task.job_id:
        details["job_id"] = task.job_id
    return DeviceEvent(kind=kind, device_id=task.device_id, details=details)  # type: ignore[arg-type]

