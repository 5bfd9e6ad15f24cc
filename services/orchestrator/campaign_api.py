"""The campaigns API under /api/v1/campaigns (docs/campaigns.md): create, read, progress, control.

The API stores decisions (a new campaign, a pause, a resume, a cancel, a retry, an approval) in
the campaign document; the runner (campaign_runner.py) acts on them at its next round, under the
engine's lease. Every change is conditional on the state read, so two operators cannot both win.

A scoped principal (services.common.scopes) makes campaigns whose selection is its query within
its scope (``{"$and": [scope, query]}``, stored with the scope) and sees and controls only the
campaigns made within the same scope; any other answers 404, as an unknown one.
"""

# No "from __future__ import annotations": FastAPI resolves the role aliases defined in the function.
import base64
import binascii
import json
import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, status
from pydantic import BaseModel, Field

from services.bus.events import CampaignEvent, new_id, utcnow
from services.common import scopes
from services.common.apikeys import Principal
from services.fileserver.credentials import download_url
from services.orchestrator import campaigns as C
from services.orchestrator import clients
from services.orchestrator.campaign_runner import KIND, SWEEP, TICK
from services.orchestrator.runtime import OrchestratorRuntime
from services.orchestrator.tasks import aware

log = logging.getLogger(__name__)


class WaveOut(BaseModel):
    number: int
    target: int | None = Field(description="eligible devices in the wave; null: the rest of the selection")
    seen: int = Field(description="devices of the selection materialised into the wave (skipped included)")
    taken: int = Field(description="eligible devices materialised into the wave")
    counts: dict[str, int]
    approved: bool
    started_at: datetime | None
    completed_at: datetime | None


class CampaignOut(BaseModel):
    id: str
    name: str
    state: str = Field(description=", ".join(C.CAMPAIGN_STATES))
    paused_by: str | None = Field(None, description="'rule' (a stop rule or a gate) or the operator's key name")
    reason: str = ""
    note: str = Field("", description="why nothing starts now (outside the windows, soaking, approval)")
    query: dict[str, Any] | str
    firmware: list[dict[str, Any]]
    total: int = Field(description="devices the selection matched at creation")
    wave: int = Field(description="the current wave (0: the canary)")
    waves: list[WaveOut]
    counts: dict[str, int] = Field(description="devices per state: " + ", ".join(C.DEVICE_STATES))
    spec: dict[str, Any]
    created_at: datetime
    created_by: str | None
    started_at: datetime | None = None
    completed_at: datetime | None = None


class CampaignList(BaseModel):
    campaigns: list[CampaignOut]
    next_cursor: str | None


class ProgressOut(BaseModel):
    id: str
    state: str
    reason: str
    note: str
    wave: int
    total: int
    counts: dict[str, int]
    downloads_in_flight: int
    waves: list[WaveOut]


class CampaignDevice(BaseModel):
    device_id: str
    wave: int
    state: str
    reason: str = ""
    attempt: int = 0
    from_version: str | None = None
    target_version: str | None = None
    task_id: str | None = None
    fault: dict[str, Any] | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class CampaignDeviceList(BaseModel):
    devices: list[CampaignDevice]
    next_cursor: str | None


def add_campaign_routes(app: FastAPI, runtime: OrchestratorRuntime) -> None:
    settings, store, auth = runtime.settings, runtime.store, runtime.auth
    # Every route limits itself to the caller's scope (campaigns made within the same scope).
    Reader = Annotated[Principal, Depends(auth.require("read-only", scoped=True))]
    Operator = Annotated[Principal, Depends(auth.require("operator", scoped=True))]
    devices = runtime.campaign_devices
    not_found = {404: {"description": "unknown campaign (or one made outside the caller's scope)"}}
    conflict = {**not_found, 409: {"description": "not allowed in the campaign's state"}}

    def visible(principal: Principal | None) -> dict[str, Any]:
        """The condition on campaign documents of what ``principal`` may see."""
        return {} if principal is None or principal.scope is None else {"scope": principal.scope}

    async def campaign_or_404(campaign_id: str, principal: Principal | None = None) -> dict[str, Any]:
        doc = await store.get_job(campaign_id)
        if doc is None or doc.get("kind") != KIND or (
                principal is not None and principal.scope is not None and doc.get("scope") != principal.scope):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no campaign {campaign_id!r}")
        return doc

    async def change(campaign_id: str, allowed: tuple[str, ...], changes: dict[str, Any], what: str,
                     unset: tuple[str, ...] = (), extra: dict[str, Any] | None = None,
                     principal: Principal | None = None) -> dict[str, Any]:
        doc = await campaign_or_404(campaign_id, principal)
        if doc["state"] not in allowed:
            raise HTTPException(status.HTTP_409_CONFLICT, f"a {doc['state']} campaign cannot be {what}")
        update: dict[str, Any] = {"$set": changes}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        update.update(extra or {})
        result = await store.jobs.update_one({"_id": campaign_id, "state": doc["state"]}, update)
        if result.matched_count != 1:
            raise HTTPException(status.HTTP_409_CONFLICT, "the campaign changed meanwhile; read it and try again")
        runtime.jobs.wake()
        return await campaign_or_404(campaign_id)

    async def announce(doc: dict[str, Any], kind: str, **details: Any) -> None:
        event = CampaignEvent(kind=kind, campaign_id=doc["_id"], name=doc["name"], state=doc["state"],  # type: ignore[arg-type]
                              wave=doc.get("wave"), reason=doc.get("reason", ""), counts=C.progress(doc),
                              details=details)
        try:
            await runtime.campaign_event(event)
        except Exception:  # noqa: BLE001 - the decision is stored; an event lost to an outage is only logged
            log.warning("could not publish a campaign event", extra={"campaign_id": doc["_id"], "kind": kind})

    @app.post("/api/v1/campaigns", status_code=201, response_model=CampaignOut, tags=["campaigns"],
              summary="Create a firmware campaign",
              description="The selection is counted now (wave sizes in percent are of that count) and the "
                          "firmware of each product class is looked up in the fileserver's catalogue (it "
                          "needs a version: the target SoftwareVersion). See docs/campaigns.md.",
              responses={422: {"description": "invalid campaign, query or firmware"},
                         503: {"description": "inventory or fileserver down"}})
    async def create_campaign(body: C.CampaignIn, principal: Operator) -> dict[str, Any]:
        try:
            # A scoped caller's campaign selects within its scope, and nothing else.
            query = scopes.job_query(principal, body.query)
        except scopes.QueryError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        try:
            total = await clients.device_count(runtime.http, settings, query, settings.admin_api_key)
            firmware = []
            for entry in body.firmware:
                facts = await clients.file_facts(runtime.http, settings, entry.file_name)
                if not facts.version:
                    raise clients.UpstreamError(422, f"the file {entry.file_name!r} has no version in the "
                                                     "catalogue: the campaign could not check the upgrade")
                firmware.append({"product_class": entry.product_class, "file_name": entry.file_name,
                                 "version": facts.version, "file_type": facts.file_type, "file_size": facts.size,
                                 "url": download_url(settings, entry.file_name)})
        except clients.UpstreamError as exc:
            raise HTTPException(exc.status, exc.message) from None
        now = utcnow()
        targets = C.wave_targets(total, body.canary, body.waves)
        state = "draft" if body.draft else "scheduled"
        doc: dict[str, Any] = {
            "_id": new_id(), "kind": KIND, "name": body.name, "query": query, "scope": principal.scope,
            "firmware": firmware,
            "spec": body.model_dump(mode="json"), "state": state, "paused_by": None, "reason": "", "note": "",
            "total": total, "cursor": None, "selection_done": False, "wave": 0, "active_waves": [],
            "waves": [{"target": t, "seen": 0, "taken": 0, "counts": {}, "approved": False,
                       "started_at": now if i == 0 else None, "completed_at": None} for i, t in enumerate(targets)],
            "start_at": body.start_at, "lease_owner": None, "lease_until": None,
            "created_at": now, "created_by": principal.name}
        if not body.draft:
            doc["work"] = TICK
        await store.insert_job(doc)
        runtime.jobs.wake()
        log.info("campaign created", extra={"campaign_id": doc["_id"], "devices": total, "by": principal.name})
        await announce(doc, "campaign_created")
        return view(doc)

    @app.get("/api/v1/campaigns", response_model=CampaignList, tags=["campaigns"],
             summary="Campaigns, newest first")
    async def list_campaigns(principal: Reader,
                             state: Annotated[str | None, Query(description="a campaign state")] = None,
                             limit: Annotated[int, Query(ge=1, le=200)] = 50,
                             cursor: str | None = None) -> dict[str, Any]:
        query: dict[str, Any] = {"kind": KIND, **visible(principal)}
        if state:
            query["state"] = state
        if cursor:
            created, last = _decode(cursor)
            query["$or"] = [{"created_at": {"$lt": created}}, {"created_at": created, "_id": {"$lt": last}}]
        found = store.jobs.find(query).sort([("created_at", -1), ("_id", -1)]).limit(limit + 1)
        docs = [d async for d in found]
        more = len(docs) > limit
        docs = docs[:limit]
        return {"campaigns": [view(d) for d in docs],
                "next_cursor": _encode(aware(docs[-1]["created_at"]), docs[-1]["_id"]) if more else None}

    @app.get("/api/v1/campaigns/{campaign_id}", response_model=CampaignOut, tags=["campaigns"],
             summary="A campaign", responses=not_found)
    async def get_campaign(campaign_id: str, principal: Reader) -> dict[str, Any]:
        return view(await campaign_or_404(campaign_id, principal))

    @app.get("/api/v1/campaigns/{campaign_id}/progress", response_model=ProgressOut, tags=["campaigns"],
             summary="Devices per state, per wave and in all (read from the campaign's stored counts)",
             responses=not_found)
    async def campaign_progress(campaign_id: str, principal: Reader) -> dict[str, Any]:
        doc = await store.jobs.find_one({"_id": campaign_id, "kind": KIND, **visible(principal)},
                                        {"spec": 0, "firmware": 0})
        if doc is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no campaign {campaign_id!r}")
        counts = C.progress(doc)
        return {"id": doc["_id"], "state": doc["state"], "reason": doc.get("reason", ""),
                "note": doc.get("note", ""), "wave": doc.get("wave", 0), "total": doc.get("total", 0),
                "counts": counts, "downloads_in_flight": counts["in_progress"], "waves": _waves(doc)}

    @app.get("/api/v1/campaigns/{campaign_id}/devices", response_model=CampaignDeviceList, tags=["campaigns"],
             summary="The campaign's materialised devices, by device id", responses=not_found)
    async def campaign_devices(campaign_id: str, principal: Reader,
                               state: Annotated[str | None, Query(description="a device state")] = None,
                               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                               cursor: Annotated[str | None, Query(description="next_cursor of the previous "
                                                                               "page")] = None) -> dict[str, Any]:
        await campaign_or_404(campaign_id, principal)
        rows = await devices.page(campaign_id, state, limit + 1, cursor)
        more = len(rows) > limit
        rows = rows[:limit]
        return {"devices": rows, "next_cursor": rows[-1]["device_id"] if more else None}

    @app.post("/api/v1/campaigns/{campaign_id}/start", response_model=CampaignOut, tags=["campaigns"],
              summary="Schedule a draft (it starts at start_at, or now)", responses=conflict)
    async def start_campaign(campaign_id: str, principal: Operator) -> dict[str, Any]:
        doc = await change(campaign_id, ("draft",), {"state": "scheduled", "work": TICK}, "started",
                           principal=principal)
        return view(doc)

    @app.post("/api/v1/campaigns/{campaign_id}/pause", response_model=CampaignOut, tags=["campaigns"],
              summary="Pause: no device starts; downloads in flight finish and are counted", responses=conflict)
    async def pause_campaign(campaign_id: str, principal: Operator) -> dict[str, Any]:
        doc = await change(campaign_id, ("scheduled", "running"),
                           {"state": "paused", "paused_by": principal.name, "reason": f"paused by {principal.name}",
                            "paused_at": utcnow(), "work": TICK}, "paused", principal=principal)
        await announce(doc, "campaign_paused", paused_by=principal.name)
        return view(doc)

    @app.post("/api/v1/campaigns/{campaign_id}/resume", response_model=CampaignOut, tags=["campaigns"],
              summary="Resume a paused campaign; the stop rules count outcomes from now on", responses=conflict)
    async def resume_campaign(campaign_id: str, principal: Operator) -> dict[str, Any]:
        doc = await change(campaign_id, ("paused",), {"state": "running", "paused_by": None, "reason": "",
                                                      "rules_since": utcnow(), "work": TICK}, "resumed",
                           principal=principal)
        log.info("campaign resumed", extra={"campaign_id": campaign_id, "by": principal.name})
        await announce(doc, "campaign_resumed", by=principal.name)
        return view(doc)

    @app.post("/api/v1/campaigns/{campaign_id}/approve", response_model=CampaignOut, tags=["campaigns"],
              summary="Approve the next wave (gates.manual_approval)", responses=conflict)
    async def approve_wave(campaign_id: str, principal: Operator) -> dict[str, Any]:
        doc = await campaign_or_404(campaign_id, principal)
        following = int(doc.get("wave", 0)) + 1
        if following >= len(doc["waves"]):
            raise HTTPException(status.HTTP_409_CONFLICT, "the campaign is in its last wave")
        return view(await change(campaign_id, ("running", "paused", "scheduled"),
                                 {f"waves.{following}.approved": True}, "approved", principal=principal))

    @app.post("/api/v1/campaigns/{campaign_id}/cancel", response_model=CampaignOut, tags=["campaigns"],
              summary="Cancel: open Downloads are cancelled, waiting devices skipped", responses=conflict)
    async def cancel_campaign(campaign_id: str, principal: Operator) -> dict[str, Any]:
        reason = f"campaign cancelled by {principal.name}"
        doc = await change(campaign_id, ("draft", "scheduled", "running", "paused"),
                           {"state": "cancelled", "reason": reason, "work": SWEEP, "cancelled_at": utcnow()},
                           "cancelled", principal=principal)
        await announce(doc, "campaign_cancelled", by=principal.name)
        return view(doc)

    @app.post("/api/v1/campaigns/{campaign_id}/retry-failed", response_model=CampaignOut, tags=["campaigns"],
              summary="Failed devices wait again (their next attempt, a new Download)", responses=conflict)
    async def retry_failed(campaign_id: str, principal: Operator) -> dict[str, Any]:
        doc = await campaign_or_404(campaign_id, principal)
        if doc["state"] not in ("running", "paused", "completed"):
            raise HTTPException(status.HTTP_409_CONFLICT, f"a {doc['state']} campaign has no devices to retry")
        waves = await devices.retry_failed(campaign_id)
        changes: dict[str, Any] = {"work": TICK, "recount": True}
        if doc["state"] == "completed":
            changes["state"] = "running"
        updated = await change(campaign_id, (doc["state"],), changes, "retried", unset=("completed_at",),
                               extra={"$addToSet": {"active_waves": {"$each": waves}}}, principal=principal)
        log.info("campaign failed devices retried", extra={"campaign_id": campaign_id, "by": principal.name})
        return view(updated)


def _waves(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"number": i, "target": w.get("target"), "seen": w.get("seen", 0), "taken": w.get("taken", 0),
             "counts": {s: int((w.get("counts") or {}).get(s, 0)) for s in C.STORED_DEVICE_STATES},
             "approved": bool(w.get("approved")), "started_at": w.get("started_at"),
             "completed_at": w.get("completed_at")} for i, w in enumerate(doc.get("waves", []))]


def view(doc: dict[str, Any]) -> dict[str, Any]:
    return {"id": doc["_id"], "name": doc["name"], "state": doc["state"], "paused_by": doc.get("paused_by"),
            "reason": doc.get("reason", ""), "note": doc.get("note", ""), "query": doc["query"],
            "firmware": doc["firmware"], "total": doc.get("total", 0), "wave": doc.get("wave", 0),
            "waves": _waves(doc), "counts": C.progress(doc), "spec": doc["spec"], "created_at": doc["created_at"],
            "created_by": doc.get("created_by"), "started_at": doc.get("started_at"),
            "completed_at": doc.get("completed_at")}


def _encode(created: datetime, last_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created.isoformat(), last_id]).encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        created, last = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return aware(datetime.fromisoformat(created)), str(last)
    except (ValueError, TypeError, binascii.Error):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid cursor; pass the next_cursor of the previous "
                                                         "page") from None
