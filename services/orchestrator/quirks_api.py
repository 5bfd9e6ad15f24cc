"""The per-vendor quirks API under /api/v1/quirks (docs/quirks.md).

Roles: read-only reads, admin writes (the audit middleware records every write, as for the other
settings). A write bumps the table's generation: every gateway and orchestrator instance uses the
new table within ACS_QUIRKS_REFRESH_SECONDS (this instance at once).
"""

# No "from __future__ import annotations": FastAPI must resolve the role aliases made below.
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from services.bus.events import new_id, utcnow
from services.common import audit
from services.common import quirks as Q
from services.common.apikeys import Principal
from services.orchestrator.quirks_store import QuirkConflict, QuirkStore

QuirkId = Annotated[str, Path(min_length=1, max_length=128)]


class QuirkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    description: str = Field("", max_length=2000)
    match: Q.QuirkMatch
    quirks: Q.Quirks
    # PUT only: refuse the write unless the stored entry is at this version (optimistic locking).
    version: int | None = Field(None, ge=1)


class QuirkOut(BaseModel):
    id: str
    name: str
    description: str
    match: dict[str, Any]
    quirks: dict[str, Any]
    version: int
    created_at: Any = None
    updated_at: Any = None
    updated_by: str | None = None


class QuirkList(BaseModel):
    quirks: list[QuirkOut]


class QuirkMatchOut(BaseModel):
    entry: QuirkOut | None = Field(description="the entry that applies to such a device (None: none does)")
    quirks: dict[str, Any]


def _out(entry: Q.QuirkEntry) -> dict[str, Any]:
    return {**entry.model_dump(exclude={"match", "quirks"}), "match": entry.match.model_dump(exclude_none=True),
            "quirks": entry.quirks.active()}


def add_quirk_routes(app: FastAPI, auth: Any, store: QuirkStore, cache: Q.QuirksCache | None) -> None:
    Reader = Annotated[Principal, Depends(auth.require("read-only"))]
    Admin = Annotated[Principal, Depends(auth.require("admin"))]

    async def refreshed() -> None:
        if cache is not None:
            await cache.reload_if_changed()

    @app.get("/api/v1/quirks", response_model=QuirkList, tags=["quirks"], summary="List the per-vendor quirks")
    async def list_quirks(_: Reader) -> dict[str, Any]:
        return {"quirks": [_out(e) for e in await store.list()]}

    @app.get("/api/v1/quirks/match", response_model=QuirkMatchOut, tags=["quirks"],
             summary="Which entry applies to a device of this OUI, ProductClass and software version")
    async def match_quirks(_: Reader, oui: Annotated[str, Query(max_length=64)],
                           product_class: Annotated[str, Query(max_length=256)] = "",
                           software_version: Annotated[str | None, Query(max_length=256)] = None) -> dict[str, Any]:
        entry = Q.select(await store.list(), oui, product_class, software_version)
        return {"entry": _out(entry) if entry else None, "quirks": entry.quirks.active() if entry else {}}

    @app.get("/api/v1/quirks/{quirk_id}", response_model=QuirkOut, tags=["quirks"],
             responses={404: {"description": "unknown entry"}})
    async def get_quirk(quirk_id: QuirkId, _: Reader) -> dict[str, Any]:
        entry = await store.get(quirk_id)
        if entry is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no quirk entry {quirk_id!r}")
        return _out(entry)

    @app.post("/api/v1/quirks", status_code=201, response_model=QuirkOut, tags=["quirks"],
              summary="Add a quirk entry", responses={409: {"description": "name taken, or the match ties"}})
    async def create_quirk(body: QuirkIn, principal: Admin) -> dict[str, Any]:
        try:
            entry = await store.insert(new_id(), body.name, body.description, body.match, body.quirks,
                                       principal.name, utcnow())
        except QuirkConflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        audit.note_change(None, _out(entry))
        await refreshed()
        return _out(entry)

    @app.put("/api/v1/quirks/{quirk_id}", response_model=QuirkOut, tags=["quirks"],
             summary="Replace a quirk entry (its version goes up by one)",
             responses={404: {"description": "unknown entry"},
                        409: {"description": "name taken, the match ties, or not at the given version"}})
    async def replace_quirk(quirk_id: QuirkId, body: QuirkIn, principal: Admin) -> dict[str, Any]:
        before = await store.get(quirk_id)
        try:
            entry = await store.replace(quirk_id, body.name, body.description, body.match, body.quirks,
                                        principal.name, utcnow(), body.version)
        except QuirkConflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        if entry is None:
            if body.version is not None and await store.get(quirk_id) is not None:
                raise HTTPException(status.HTTP_409_CONFLICT, f"the entry is no longer at version {body.version}")
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no quirk entry {quirk_id!r}")
        audit.note_change(_out(before) if before else None, _out(entry))
        await refreshed()
        return _out(entry)

    @app.delete("/api/v1/quirks/{quirk_id}", status_code=204, tags=["quirks"],
                responses={404: {"description": "unknown entry"}})
    async def delete_quirk(quirk_id: QuirkId, _: Admin) -> Response:
        before = await store.get(quirk_id)
        if not await store.delete(quirk_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no quirk entry {quirk_id!r}")
        audit.note_change(_out(before) if before else None, None)
        await refreshed()
        return Response(status_code=204)
