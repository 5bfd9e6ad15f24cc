"""Profiles in MongoDB: the profiles, every version of each, per-device variables, a change counter.

Collections:

- ``profiles``: the current version of each profile (unique ``name``, unique ``priority``: a tie
  is refused by the index itself, so two instances saving at once cannot both win). The selector
  holds ``$`` operators and dotted names, which MongoDB does not take as keys: stored as JSON text.
- ``profile_versions``: every version ever saved (``_id`` = ``<profile id>:<version>``), with who
  changed it, when, and how (created, updated, enabled, disabled, rolled back, deleted).
- ``profile_variables``: per device, the variables its profiles' templates name (``{vars.NAME}``),
  and which of them are secret. Secrets are needed in clear to be sent; they never leave through
  the API, an event or a log line.
- ``profile_meta``: ``generation``, bumped by every change, so that each instance's cache of
  compiled profiles notices changes made through another instance with one tiny read.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.bus.events import utcnow
from services.orchestrator.policies import PolicyMatch
from services.orchestrator.profiles import Profile, ProfileAction, ProfileSet, Variables
from services.orchestrator.store import DEVICES, Store, _policy_from

log = logging.getLogger(__name__)

PROFILES = "profiles"
VERSIONS = "profile_versions"
VARIABLES = "profile_variables"
META = "profile_meta"


class Conflict(Exception):
    """A unique field (name or priority) is taken, or the profile changed since it was read."""


def _document(profile: Profile) -> dict[str, Any]:
    document = profile.model_dump(exclude={"id"})
    document["_id"] = profile.id
    document["selector"] = json.dumps(profile.selector)
    return document


def _profile(document: dict[str, Any]) -> Profile:
    values = dict(document)
    values["id"] = values.pop("_id")
    if isinstance(values.get("selector"), str):
        values["selector"] = json.loads(values["selector"])
    return Profile.model_validate(values)


def _conflict(exc: DuplicateKeyError, profile: Profile) -> Conflict:
    pattern = (exc.details or {}).get("keyPattern", {})
    if "priority" in pattern:
        return Conflict(f"priority {profile.priority} is taken by another profile: priorities are unique, so "
                        f"that which wins per parameter is never a tie; choose another")
    return Conflict(f"a profile named {profile.name!r} exists")


class ProfileStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.profiles = db[PROFILES]
        self.versions = db[VERSIONS]
        self.variables = db[VARIABLES]
        self.meta = db[META]
        self.devices = db[DEVICES]

    async def ensure_indexes(self) -> None:
        await self.profiles.create_index([("name", ASCENDING)], unique=True)
        await self.profiles.create_index([("priority", ASCENDING)], unique=True)
        await self.versions.create_index([("profile_id", ASCENDING), ("version", DESCENDING)])

    async def generation(self) -> int:
        document = await self.meta.find_one({"_id": "generation"})
        return int(document["n"]) if document else 0

    async def _bump(self) -> None:
        await self.meta.update_one({"_id": "generation"}, {"$inc": {"n": 1}}, upsert=True)

    async def list(self) -> list[Profile]:
        return [_profile(d) async for d in self.profiles.find({}).sort([("priority", DESCENDING)])]

    async def get(self, profile_id: str) -> Profile | None:
        document = await self.profiles.find_one({"_id": profile_id})
        return _profile(document) if document else None

    async def _record(self, profile: Profile, change: str, by: str | None, at: datetime) -> None:
        await self.versions.insert_one({"_id": f"{profile.id}:{profile.version}", "profile_id": profile.id,
                                        "version": profile.version, "change": change, "changed_by": by,
                                        "changed_at": at, "profile": _document(profile)})

    async def insert(self, profile: Profile, change: str = "created") -> None:
        try:
            await self.profiles.insert_one(_document(profile))
        except DuplicateKeyError as exc:
            raise _conflict(exc, profile) from None
        await self._record(profile, change, profile.updated_by, profile.updated_at)
        await self._bump()

    async def replace(self, profile: Profile, expect_version: int, change: str) -> None:
        """Store ``profile`` (its version one more than ``expect_version``) if nobody changed it meanwhile."""
        try:
            result = await self.profiles.replace_one({"_id": profile.id, "version": expect_version},
                                                     _document(profile))
        except DuplicateKeyError as exc:
            raise _conflict(exc, profile) from None
        if result.matched_count != 1:
            raise Conflict("the profile changed since it was read (or was deleted); read it again")
        await self._record(profile, change, profile.updated_by, profile.updated_at)
        await self._bump()

    async def delete(self, profile: Profile, by: str | None, at: datetime) -> bool:
        result = await self.profiles.delete_one({"_id": profile.id})
        if result.deleted_count != 1:
            return False
        gone = profile.model_copy(update={"version": profile.version + 1, "updated_by": by, "updated_at": at,
                                          "enabled": False})
        await self._record(gone, "deleted", by, at)
        await self._bump()
        return True

    async def list_versions(self, profile_id: str) -> list[dict[str, Any]]:
        found = self.versions.find({"profile_id": profile_id}, {"profile": 0}).sort([("version", DESCENDING)])
        return [{k: v for k, v in d.items() if k != "_id"} async for d in found]

    async def get_version(self, profile_id: str, version: int) -> Profile | None:
        document = await self.versions.find_one({"_id": f"{profile_id}:{version}"})
        return _profile(document["profile"]) if document else None

    # --- variables ------------------------------------------------------------------------------

    async def import_variables(self, rows: Sequence[tuple[str, dict[str, str]]], secret: Iterable[str],
                               at: datetime) -> int:
        """Set these variables of these devices (others they have are kept)."""
        secret = set(secret)
        writes = [UpdateOne({"_id": device_id}, {"$set": {
            **{f"values.{name}": {"v": value, "s": name in secret} for name, value in values.items()},
            "updated_at": at}}, upsert=True) for device_id, values in rows]
        for start in range(0, len(writes), 1000):
            await self.variables.bulk_write(writes[start:start + 1000], ordered=False)
        return len(writes)

    async def variables_of(self, device_id: str) -> Variables:
        document = await self.variables.find_one({"_id": device_id})
        return _variables(document)

    async def variables_many(self, device_ids: Sequence[str]) -> dict[str, Variables]:
        return {d["_id"]: _variables(d) async for d in self.variables.find({"_id": {"$in": list(device_ids)}})}

    # --- compliance -----------------------------------------------------------------------------

    async def compliance(self, profile_id: str, device_ids: Sequence[str] | None = None) -> dict[str, int]:
        """Devices per state, from each device's last session since the profile applied to it;
        ``device_ids``: among these devices only (a scope's)."""
        key = f"profile_status.{profile_id}.state"
        counts = {"compliant": 0, "pending": 0, "drifted": 0, "failing": 0}
        match: dict[str, Any] = {key: {"$exists": True}}
        if device_ids is not None:
            match["_id"] = {"$in": list(device_ids)}
        rows = await self.devices.aggregate([{"$match": match},
                                             {"$group": {"_id": f"${key}", "n": {"$sum": 1}}}])
        async for row in rows:
            counts[str(row["_id"])] = int(row["n"])
        return counts

    async def failing(self, profile_id: str, limit: int = 20,
                      device_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        key = f"profile_status.{profile_id}"
        query: dict[str, Any] = {f"{key}.state": "failing"}
        if device_ids is not None:
            query["_id"] = {"$in": list(device_ids)}
        found = self.devices.find(query, {key: 1}).limit(limit)
        return [{"device_id": d["_id"], "fault": d["profile_status"][profile_id].get("fault")} async for d in found]

    async def claim_policy(self, policy_id: str, profile_id: str) -> bool:
        """Mark a stored policy migrated (once, whichever instance gets there first); it stops applying."""
        result = await self.db["policies"].find_one_and_update(
            {"_id": policy_id, "migrated_to": {"$exists": False}},
            {"$set": {"migrated_to": profile_id, "enabled": False}}, return_document=ReturnDocument.AFTER)
        return result is not None


def _variables(document: dict[str, Any] | None) -> Variables:
    if not document:
        return Variables()
    values = document.get("values") or {}
    return Variables({k: str(v.get("v", "")) for k, v in values.items()},
                     frozenset(k for k, v in values.items() if v.get("s")))


class ProfileCache:
    """The enabled profiles, compiled, for the Inform path.

    Compiling 1,000 selectors per Inform would cost more than the decision itself, so the compiled
    set is kept and rebuilt only when the profiles changed: a change through this instance
    invalidates it at once, one through another instance is noticed by reading the generation
    counter (one small read) at most every ``check_every`` seconds.
    """

    def __init__(self, store: ProfileStore, check_every: float = 1.0) -> None:
        self.store, self.check_every = store, check_every
        self._set = ProfileSet([], generation=-1)
        self._checked = -float("inf")

    def invalidate(self) -> None:
        self._checked = -float("inf")
        self._set = ProfileSet([], generation=-1)

    async def current(self) -> ProfileSet:
        now = time.monotonic()
        if now - self._checked >= self.check_every:
            generation = await self.store.generation()
            if generation != self._set.generation:
                self._set = ProfileSet(await self.store.list(), generation)
            self._checked = now
        return self._set


def policy_selector(match: PolicyMatch) -> dict[str, Any]:
    """A policy's match criteria as one device query (the language they now share)."""
    clauses: list[dict[str, Any]] = []
    for field_name in ("oui", "product_class", "manufacturer", "software_version"):
        wanted = getattr(match, field_name)
        if wanted:
            clauses.append({field_name: wanted[0] if len(wanted) == 1 else {"$in": list(wanted)}})
    clauses += [{"tags": tag} for tag in match.tags]
    if match.query:
        clauses.append(dict(match.query))
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


async def migrate_policies(store: Store, profiles: ProfileStore) -> list[str]:
    """Move the stored policies into profiles (one profile with one action each), once.

    A policy becomes the profile ``policy-<policy id>`` (so two instances starting together write
    it once) with the policy's name, selector, events and tasks. Policies ran lower priority
    first, profile actions run higher priority first: the priority is mapped to -100 x the
    policy's (lowered further while taken, priorities being unique). The policy is then marked
    ``migrated_to`` and disabled, and stops applying on its own. A policy whose query the shared
    language refuses (``$regex``) is left as it is, with a warning in the log.
    """
    migrated: list[str] = []
    existing = await profiles.list()
    taken = {p.priority for p in existing}
    names = {p.name for p in existing}
    async for document in store.policies.find({"migrated_to": {"$exists": False}}):
        try:
            policy = _policy_from(document)
        except ValidationError:
            log.warning("policy not migrated: its query is not valid in the shared query language",
                        extra={"policy_id": document.get("_id")})
            continue
        profile_id = f"policy-{policy.id}"
        priority = -100 * policy.priority
        while priority in taken:
            priority -= 1
        name = policy.name if policy.name not in names else f"{policy.name} (policy {policy.id[:8]})"
        now = utcnow()
        profile = Profile(id=profile_id, name=name, description=policy.description or f"policy {policy.name}",
                          selector=policy_selector(policy.match), priority=priority, enabled=policy.enabled,
                          actions=[ProfileAction(events=policy.events, tasks=policy.tasks)],
                          created_at=policy.created_at, created_by=policy.created_by, updated_at=now,
                          updated_by="migration")
        try:
            await profiles.insert(profile, change=f"migrated from policy {policy.name}")
        except Conflict as exc:
            if await profiles.get(profile_id) is None:
                log.warning("policy not migrated", extra={"policy_id": policy.id, "error": str(exc)})
                continue
        except DuplicateKeyError:
            pass  # another instance migrated it just now
        taken.add(priority)
        names.add(name)
        if await profiles.claim_policy(policy.id, profile_id):
            migrated.append(policy.id)
            log.info("policy migrated to a profile", extra={"policy_id": policy.id, "profile_id": profile_id})
    return migrated
