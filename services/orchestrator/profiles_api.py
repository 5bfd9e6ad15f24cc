"""The profiles API under /api/v1/profiles, per-device variables and desired state (docs/provisioning.md).

Roles: read-only reads; admin writes profiles and imports variables (as for policies). Every write
keeps the previous version (``/versions``), who changed it and when; ``/rollback`` saves an old
version as the newest. Secrets among the variables are never shown back.

Scopes (services.common.scopes): profiles are fleet settings. A scoped principal reads their
definitions and versions, but every figure about devices is limited to its scope (compliance
counts, failing devices, previews), and a device's variables and desired state are read for a
device of its scope only (404 for any other). Writes (profiles, variables) need an unscoped admin:
a profile applies to the whole fleet its selector matches.
"""

# No "from __future__ import annotations": FastAPI must resolve the role aliases made below.
import csv
import io
import json
import logging
from typing import Annotated, Any

import httpx
from fastapi import Body, Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError

from services.bus.events import new_id, utcnow
from services.common import audit, redaction, scopes
from services.common.apikeys import Principal
from services.fileserver.credentials import download_url
from services.inventory.query import device_document
from services.orchestrator import clients
from services.orchestrator import profiles as P
from services.orchestrator.profile_store import Conflict
from services.orchestrator.runtime import OrchestratorRuntime
from services.orchestrator.state import DeviceState

log = logging.getLogger(__name__)

ProfileId = Annotated[str, Path(min_length=1, max_length=128)]
DeviceId = Annotated[str, Path(min_length=1, max_length=256)]
MAX_IMPORT_ROWS = 100_000
PREVIEW_PAGE = 500
PREVIEW_MAX_DEVICES = 100_000
DEVICE_FIELDS = "id,oui,product_class,serial_number,manufacturer,software_version,tags"


class RollbackIn(BaseModel):
    version: int = Field(ge=1, description="the version to bring back (it is saved as a new version)")


class VariablesIn(BaseModel):
    secret: list[str] = Field(default_factory=list, description="variable names whose values are secret")
    devices: list[dict[str, Any]] = Field(description='[{"device_id": ..., "variables": {"NAME": "value"}}]')


def add_profile_routes(app: FastAPI, runtime: OrchestratorRuntime) -> None:
    auth, pstore, cache = runtime.auth, runtime.profile_store, runtime.profiles
    # Reads limit themselves to the caller's scope (see the module's docstring).
    Reader = Annotated[Principal, Depends(auth.require("read-only", scoped=True))]
    Admin = Annotated[Principal, Depends(auth.require("admin"))]

    async def scope_ids(principal: Principal) -> list[str] | None:
        """The devices of a scoped principal's scope; None for everything."""
        return None if principal.scope is None else await scopes.device_ids(runtime.db, principal)

    async def reachable(principal: Principal, device_id: str) -> None:
        if not await scopes.device_in_scope(runtime.db, principal, device_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r} has informed this ACS")

    async def one(profile_id: str) -> P.Profile:
        profile = await pstore.get(profile_id)
        if profile is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no profile {profile_id!r}")
        return profile

    async def resolved(body: P.ProfileBody) -> P.ProfileBody:
        """A firmware's file is looked up now, so that sessions have what a Download needs."""
        if body.firmware is None:
            return body
        try:
            facts = await clients.file_facts(runtime.http, runtime.settings, body.firmware.file_name)
        except clients.UpstreamError as exc:
            raise HTTPException(exc.status, f"firmware: {exc.message}") from None
        version = body.firmware.version or facts.version
        if not version:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"firmware: the file {facts.name!r} has no "
                                "version; give firmware.version (the SoftwareVersion it installs)")
        return body.model_copy(update={"firmware": body.firmware.model_copy(update={
            "version": version, "file_type": body.firmware.file_type or facts.file_type, "file_size": facts.size,
            "url": download_url(runtime.settings, body.firmware.file_name)})})

    async def save(current: P.Profile, body: dict[str, Any], principal: Principal, change: str) -> dict[str, Any]:
        try:
            validated = P.ProfileBody.model_validate(body)
        except ValidationError as exc:
            raise _invalid(exc) from None
        if validated.firmware is not None and validated.firmware != current.firmware:
            validated = await resolved(validated)
        now = utcnow()
        updated = P.Profile(**validated.model_dump(), id=current.id, version=current.version + 1,
                            created_at=current.created_at, created_by=current.created_by, updated_at=now,
                            updated_by=principal.name)
        try:
            await pstore.replace(updated, current.version, change)
        except Conflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        cache.invalidate()
        log.info("profile saved", extra={"profile_id": updated.id, "profile_version": updated.version,
                                         "change": change, "by": principal.name})
        audit.note_change(current.model_dump(mode="json"), updated.model_dump(mode="json"))
        return updated.model_dump(mode="json")

    @app.post("/api/v1/profiles", status_code=201, tags=["profiles"], summary="Create a configuration profile",
              responses={409: {"description": "the name or the priority is taken (ties are refused)"}})
    async def create_profile(body: P.ProfileBody, principal: Admin) -> dict[str, Any]:
        body = await resolved(body)
        now = utcnow()
        profile = P.Profile(**body.model_dump(), id=new_id(), created_at=now, created_by=principal.name,
                            updated_at=now, updated_by=principal.name)
        try:
            await pstore.insert(profile)
        except Conflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        cache.invalidate()
        log.info("profile created", extra={"profile_id": profile.id, "by": principal.name})
        audit.note_change(None, profile.model_dump(mode="json"))
        return profile.model_dump(mode="json")

    @app.get("/api/v1/profiles", tags=["profiles"], summary="The profiles, highest priority first")
    async def list_profiles(_: Reader) -> dict[str, Any]:
        return {"profiles": [p.model_dump(mode="json") for p in await pstore.list()]}

    @app.get("/api/v1/profiles/{profile_id}", tags=["profiles"], summary="A profile, with its compliance counts",
             responses={404: {"description": "unknown profile"}})
    async def get_profile(profile_id: ProfileId, principal: Reader) -> dict[str, Any]:
        profile = await one(profile_id)
        return {**profile.model_dump(mode="json"),
                "compliance": await pstore.compliance(profile_id, await scope_ids(principal))}

    @app.put("/api/v1/profiles/{profile_id}", tags=["profiles"], summary="Replace a profile (a new version)",
             responses={404: {"description": "unknown profile"}, 409: {"description": "name or priority taken"}})
    async def put_profile(profile_id: ProfileId, body: P.ProfileBody, principal: Admin) -> dict[str, Any]:
        return await save(await one(profile_id), body.model_dump(), principal, "updated")

    @app.patch("/api/v1/profiles/{profile_id}", tags=["profiles"],
               summary="Change some fields of a profile (a new version)",
               responses={404: {"description": "unknown profile"}, 409: {"description": "name or priority taken"}})
    async def patch_profile(profile_id: ProfileId, principal: Admin,
                            body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        current = await one(profile_id)
        unknown = set(body) - set(P.ProfileBody.model_fields)
        if unknown:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"unknown fields: {', '.join(sorted(unknown))}; a profile has "
                                f"{', '.join(P.ProfileBody.model_fields)}")
        return await save(current, {**current.body(), **body}, principal, "updated")

    @app.post("/api/v1/profiles/{profile_id}/enable", tags=["profiles"], summary="Enable a profile")
    async def enable_profile(profile_id: ProfileId, principal: Admin) -> dict[str, Any]:
        current = await one(profile_id)
        return await save(current, {**current.body(), "enabled": True}, principal, "enabled")

    @app.post("/api/v1/profiles/{profile_id}/disable", tags=["profiles"], summary="Disable a profile")
    async def disable_profile(profile_id: ProfileId, principal: Admin) -> dict[str, Any]:
        current = await one(profile_id)
        return await save(current, {**current.body(), "enabled": False}, principal, "disabled")

    @app.delete("/api/v1/profiles/{profile_id}", status_code=204, tags=["profiles"],
                summary="Delete a profile (its versions are kept)")
    async def delete_profile(profile_id: ProfileId, principal: Admin) -> Response:
        current = await one(profile_id)
        if not await pstore.delete(current, principal.name, utcnow()):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no profile {profile_id!r}")
        cache.invalidate()
        audit.note_change(current.model_dump(mode="json"), None)
        return Response(status_code=204)

    @app.get("/api/v1/profiles/{profile_id}/versions", tags=["profiles"],
             summary="Every version of a profile, newest first: who changed it, when, how")
    async def profile_versions(profile_id: ProfileId, _: Reader) -> dict[str, Any]:
        versions = await pstore.list_versions(profile_id)
        if not versions:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no profile {profile_id!r}")
        return {"versions": [_json(v) for v in versions]}

    @app.get("/api/v1/profiles/{profile_id}/versions/{version}", tags=["profiles"], summary="One version")
    async def profile_version(profile_id: ProfileId, version: int, _: Reader) -> dict[str, Any]:
        old = await pstore.get_version(profile_id, version)
        if old is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"profile {profile_id!r} has no version {version}")
        return old.model_dump(mode="json")

    @app.post("/api/v1/profiles/{profile_id}/rollback", tags=["profiles"],
              summary="Save an earlier version as the newest one")
    async def rollback_profile(profile_id: ProfileId, body: RollbackIn, principal: Admin) -> dict[str, Any]:
        current = await one(profile_id)
        old = await pstore.get_version(profile_id, body.version)
        if old is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"profile {profile_id!r} has no version {body.version}")
        return await save(current, old.body(), principal, f"rolled back to version {body.version}")

    @app.get("/api/v1/profiles/{profile_id}/compliance", tags=["profiles"],
             summary="Devices compliant, pending, drifted and failing (with the CPE's fault)")
    async def profile_compliance(profile_id: ProfileId, principal: Reader) -> dict[str, Any]:
        await one(profile_id)
        ids = await scope_ids(principal)
        return {"profile_id": profile_id, "counts": await pstore.compliance(profile_id, ids),
                "failing": await pstore.failing(profile_id, device_ids=ids)}

    @app.post("/api/v1/profiles/{profile_id}/preview", tags=["profiles"],
              summary="What the profile would do, without touching a device",
              description="Matches the selector in the inventory, merges with the other enabled profiles as a "
                          "session would (this one counted as enabled), and compares with what each device "
                          "accepted so far. Answers the counts, the changes per parameter and a sample of "
                          "the RPCs per device (secret values masked).")
    async def preview_profile(profile_id: ProfileId, principal: Reader,
                              sample: Annotated[int, Query(ge=0, le=100)] = 5) -> dict[str, Any]:
        profile = (await one(profile_id)).model_copy(update={"enabled": True})
        others = [p for p in await pstore.list() if p.id != profile_id]
        pset = P.ProfileSet([*others, profile])
        counts = {"matched": 0, "would_change": 0, "unchanged": 0, "unresolved": 0}
        changes: dict[str, int] = {}
        samples: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            # A scoped caller previews the devices of its scope only.
            selector = scopes.job_query(principal, profile.selector)
            page, cursor = await _inventory_page(runtime, selector, principal, cursor)
            ids = [str(d["id"]) for d in page]
            states = {d["_id"]: DeviceState.from_document(d)
                      async for d in runtime.store.devices.find({"_id": {"$in": ids}})}
            variables = await pstore.variables_many(ids) if pset.uses_variables else {}
            for device in page:
                counts["matched"] += 1
                rpcs = _preview_device(pset, device, states.get(str(device["id"])),
                                       variables.get(str(device["id"]), P.Variables()), profile.id)
                if rpcs is None:
                    counts["unresolved"] += 1
                    continue
                if rpcs:
                    counts["would_change"] += 1
                    for rpc in rpcs:
                        for entry in rpc.get("parameters", []):
                            changes[entry["name"]] = changes.get(entry["name"], 0) + 1
                    if len(samples) < sample:
                        samples.append({"device_id": device["id"], "rpcs": rpcs})
                else:
                    counts["unchanged"] += 1
            if cursor is None or counts["matched"] >= PREVIEW_MAX_DEVICES:
                break
        return {"profile_id": profile_id, "version": profile.version, "mode": profile.mode, **counts,
                "changes": dict(sorted(changes.items())), "sample": samples,
                "truncated": cursor is not None}

    # --- per-device variables and desired state ------------------------------------------------

    @app.post("/api/v1/profiles/variables", tags=["profiles"],
              summary="Import per-device variables (CSV or JSON)",
              description="CSV: a header row `device_id,NAME,...`, one row per device; `?secret=NAME,...` names "
                          "the secret columns. JSON: {\"secret\": [...], \"devices\": [{\"device_id\": ..., "
                          "\"variables\": {...}}]}. Existing variables of a device that a row does not name are "
                          "kept. Values are never shown back in full: secret ones not at all.",
              openapi_extra={"requestBody": {"content": {
                  "text/csv": {"schema": {"type": "string"}},
                  "application/json": {"schema": VariablesIn.model_json_schema()}}}})
    async def import_variables(request: Request, principal: Admin,
                               secret: Annotated[str, Query(description="CSV: secret columns, comma-separated")] = "",
                               ) -> dict[str, Any]:
        raw = await request.body()
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        rows, secret_names, errors = _parse_variables(raw, kind, secret)
        # The audit keeps which devices and variables, never a value of a secret one.
        audit.note_body({"secret": sorted(secret_names), "devices": [
            {"device_id": device_id,
             "variables": {k: (redaction.REDACTED if k in secret_names else v) for k, v in values.items()}}
            for device_id, values in rows]})
        if errors:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "; ".join(errors[:20]))
        count = await pstore.import_variables(rows, secret_names, utcnow())
        log.info("profile variables imported", extra={"devices": count, "by": principal.name})
        return {"imported": count, "secret": sorted(secret_names)}

    @app.get("/api/v1/devices/{device_id}/variables", tags=["profiles"],
             summary="A device's variables (secret ones masked)")
    async def device_variables(device_id: DeviceId, principal: Reader) -> dict[str, Any]:
        await reachable(principal, device_id)
        variables = await pstore.variables_of(device_id)
        return {"device_id": device_id, "variables": {
            k: (P.REDACTED if k in variables.secret else v) for k, v in sorted(variables.values.items())},
            "secret": sorted(variables.secret)}

    @app.get("/api/v1/devices/{device_id}/desired", tags=["profiles"],
             summary="The device's effective desired state and where each value comes from")
    async def device_desired(device_id: DeviceId, principal: Reader) -> dict[str, Any]:
        device = await runtime.store.get_device(device_id)
        if device is None or not await scopes.device_in_scope(runtime.db, principal, device_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r} has informed this ACS")
        # The profiles its last session found applicable (selectors on Inform parameters included).
        applicable = [p for p in await pstore.list() if p.id in device.profile_status and p.enabled]
        pset = P.ProfileSet(applicable)
        try:
            tags = await clients.device_tags(runtime.http, runtime.settings, device_id, within=2.0)
        except (httpx.HTTPError, ValueError):
            tags = frozenset()
        facts = _facts(device, tags)
        eff = P.effective(pset.all, facts, device.data_model, await pstore.variables_of(device_id))
        applied = device.profile_applied
        return {"device_id": device_id, "parameters": [
            {**d.public(), "applied": applied.get(P.encode_name(d.name)) == d.digest()}
            for d in sorted(eff.values.values(), key=lambda d: d.name)],
            "attributes": [{"name": a.name, "notification": a.notification, "access_list": a.access_list,
                            "profile_id": a.profile_id} for a in eff.attributes.values()],
            "objects": [{**o.public(), "applied": applied.get("#" + o.id) == o.digest(),
                         "instance": applied.get("+" + o.id)} for o in eff.objects.values()],
            "unresolved": eff.unresolved, "overridden": eff.overridden,
            "profiles": [{"profile_id": pid, **_json(s)} for pid, s in device.profile_status.items()]}


def _facts(device: DeviceState, tags: frozenset[str]) -> dict[str, Any]:
    return {"id": device.id, "device_id": device.id, "oui": device.oui, "product_class": device.product_class,
            "serial_number": device.serial_number, "manufacturer": device.manufacturer,
            "software_version": device.software_version, "tags": tags}


def _preview_device(pset: P.ProfileSet, found: dict[str, Any], state: DeviceState | None,
                    variables: P.Variables, profile_id: str) -> list[dict[str, Any]] | None:
    """The RPCs a session of this device would get from its profiles now (None: this profile's
    values cannot be resolved for it)."""
    tags = frozenset(found.get("tags") or ())
    fields = {k: found.get(k) for k in ("id", "oui", "product_class", "serial_number", "manufacturer",
                                        "software_version")}
    fields["tags"] = sorted(tags)
    device = state or DeviceState(id=str(found["id"]))
    if device.software_version:
        # The orchestrator's own word (from the device's last Inform), which its sessions decide on.
        fields["software_version"] = device.software_version
    document = device_document(fields)
    root = device.data_model
    out = P.decide(pset, document, {**fields, "device_id": fields["id"], "tags": tags}, root,
                   P.ProfileState(dict(device.profile_applied), dict(device.profile_status), device.profile_failed),
                   {}, variables, set(), [], utcnow())
    if not any(c.profile.id == profile_id for c in out.effective.profiles):
        # The inventory matched it on parameters the orchestrator does not see here: decide as if it did.
        out = P.decide(P.ProfileSet([c.profile for c in pset.all if c.profile.id == profile_id]), document,
                       {**fields, "device_id": fields["id"], "tags": tags}, root, P.ProfileState(
                           dict(device.profile_applied)), {}, variables, set(), [], utcnow(), match_all=True)
    if any(u["profile_name"] == c.profile.name for u in out.effective.unresolved for c in out.effective.profiles
           if c.profile.id == profile_id):
        return None
    rpcs: list[dict[str, Any]] = []
    secret = {d.name for d in out.effective.values.values() if d.secret}
    for name, args in out.tasks:
        if name == "setParameterValues":
            rpcs.append({"method": "SetParameterValues", "parameters": [
                {**v, "value": P.REDACTED if v["name"] in secret else v["value"]} for v in args["parameter_values"]]})
        elif name == "profileObjects":
            # What it sends depends on the table the CPE answers: a read, then AddObject and
            # SetParameterValues for a missing instance, SetParameterValues for one that differs,
            # DeleteObject for each unwanted one.
            rpcs.append({"method": "GetParameterValues", "parameters": [{"name": p} for p in
                                                                         sorted({o["path"] for o in args["objects"]})]})
            rpcs.append({"method": "AddObject/SetParameterValues/DeleteObject", "objects": [
                o.public() for o in out.effective.objects.values()
                if o.id in {e["id"] for e in args["objects"]}]})
        elif name == "download":
            rpcs.append({"method": "Download", "file_name": args["file_name"], "version": args["version"],
                         "file_type": args["file_type"]})
        else:
            rpcs.append({"method": "SetParameterAttributes", "parameters": args["parameters"]})
    return rpcs


async def _inventory_page(runtime: OrchestratorRuntime, selector: dict[str, Any] | str, principal: Principal,
                          cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    settings = runtime.settings
    query = selector if isinstance(selector, str) else json.dumps(selector)
    params: dict[str, Any] = {"q": query, "fields": DEVICE_FIELDS, "limit": PREVIEW_PAGE}
    if cursor:
        params["cursor"] = cursor
    try:
        response = await runtime.http.get(f"{settings.inventory_url.rstrip('/')}/api/v1/devices", params=params,
                                          headers={"Authorization": f"Bearer {settings.admin_api_key}"},
                                          timeout=30.0)
    except httpx.HTTPError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"the inventory did not answer ({type(exc).__name__}); try again") from None
    if response.status_code == 400:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"the inventory refused the selector: "
                                                                  f"{response.text[:300]}")
    if response.status_code != 200:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the inventory answered {response.status_code}")
    body = response.json()
    return list(body.get("devices", [])), body.get("next_cursor") or None


def _parse_variables(raw: bytes, kind: str, secret_param: str
                     ) -> tuple[list[tuple[str, dict[str, str]]], set[str], list[str]]:
    errors: list[str] = []
    rows: list[tuple[str, dict[str, str]]] = []
    secret = {s.strip() for s in secret_param.split(",") if s.strip()}
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], secret, ["the body is not UTF-8"]
    if kind == "application/json":
        try:
            body = VariablesIn.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            return [], secret, [f"not a variables document: {str(exc).splitlines()[0]}"]
        secret |= set(body.secret)
        for i, entry in enumerate(body.devices):
            device_id, values = entry.get("device_id"), entry.get("variables")
            if not isinstance(device_id, str) or not device_id or not isinstance(values, dict):
                errors.append(f"devices[{i}]: needs device_id (text) and variables (an object)")
                continue
            rows.append((device_id, {str(k): _text(v) for k, v in values.items()}))
    elif kind in ("text/csv", "text/plain"):
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if not header or header[0].strip() != "device_id" or len(header) < 2:
            return [], secret, ["row 1: the header must be device_id followed by variable names"]
        names = [h.strip() for h in header[1:]]
        for number, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                errors.append(f"row {number}: {len(row)} columns, the header has {len(header)}")
                continue
            rows.append((row[0].strip(), {n: v for n, v in zip(names, row[1:], strict=True)}))
    else:
        return [], secret, ["send text/csv or application/json"]
    for device_id, values in rows:
        bad = [n for n in values if not P.VARIABLE_NAME.match(n)]
        if bad:
            errors.append(f"{device_id}: bad variable names {bad[:3]} (letters, digits, _ and -)")
            break
    if len(rows) > MAX_IMPORT_ROWS:
        errors.append(f"more than {MAX_IMPORT_ROWS} devices in one import")
    return rows, secret, errors


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, default=lambda o: o.isoformat() if hasattr(o, "isoformat") else str(o)))


def _invalid(exc: ValidationError) -> HTTPException:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{where}: {first.get('msg')}")
