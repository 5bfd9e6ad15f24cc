"""Scopes: a role granted on a group of devices, defined by an inventory query.

A principal (services.common.apikeys.Principal) has ``scope`` None (every device) or an inventory
query in canonical JSON, e.g. ``{"tags":"partner-a"}`` or ``{"oui":"00259E"}`` (the query language
of docs/inventory.md). A route that serves scoped principals limits its answer to the devices the
query matches *now* (a device tagged out of the scope is out at once), and answers 404 for anything
outside, as for something that does not exist: a scoped principal learns nothing of the rest.

The device records are the inventory's (collection ``devices``); the orchestrator reads them from
the same database to decide whether a task's device is in a scope.
"""

from __future__ import annotations

import json
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.common.apikeys import Principal
from services.inventory.query import QueryError, compile_query, loads

# The most devices a scoped task list is filtered over (``device_id $in``); a bigger scope lists
# the tasks of the first ones only, and the caller filters by device or job instead.
MAX_SCOPE_DEVICES = 50_000
DEVICES = "devices"


class ScopeError(ValueError):
    """Not a usable scope (not a JSON object of the query language)."""


def canonical(scope: dict[str, Any] | str | None) -> str | None:
    """A scope as stored: canonical JSON of a valid, non-empty query; None for everything."""
    if scope is None:
        return None
    try:
        query = loads(scope, "scope") if isinstance(scope, str) else scope
        if not isinstance(query, dict):
            raise ScopeError("scope: expected a JSON object of conditions")
        if not query:
            raise ScopeError("scope: an empty query would be every device; leave the scope out instead")
        compile_query(query)
    except QueryError as exc:
        raise ScopeError(str(exc).replace("q:", "scope:", 1)) from None
    return json.dumps(query, sort_keys=True, separators=(",", ":"))


def query_of(principal: Principal) -> dict[str, Any] | None:
    """The principal's scope as a query of the language (a dict), None for everything."""
    return None if principal.scope is None else json.loads(principal.scope)


def device_filter(principal: Principal) -> dict[str, Any] | None:
    """The MongoDB filter on ``devices`` of the principal's scope; None for everything."""
    query = query_of(principal)
    return None if query is None else compile_query(query)


def within(principal: Principal, mongo_filter: dict[str, Any]) -> dict[str, Any]:
    """``mongo_filter`` (on ``devices``) limited to the principal's scope."""
    scope = device_filter(principal)
    if scope is None:
        return mongo_filter
    return scope if not mongo_filter else {"$and": [scope, mongo_filter]}


def job_query(principal: Principal, query: dict[str, Any] | str) -> dict[str, Any] | str:
    """A job's query as the job engine runs it: the caller's, within the caller's scope."""
    scope = query_of(principal)
    if scope is None:
        return query
    asked = loads(query, "query") if isinstance(query, str) else query
    return {"$and": [scope, asked]} if asked else scope


async def device_in_scope(db: AsyncDatabase, principal: Principal, device_id: str) -> bool:
    """Is the device in the principal's scope (always, without a scope)?"""
    if principal.scope is None:
        return True
    return await db[DEVICES].find_one(within(principal, {"_id": device_id}), {"_id": 1}) is not None


async def device_ids(db: AsyncDatabase, principal: Principal) -> list[str]:
    """The ids of the devices in a scoped principal's scope (at most MAX_SCOPE_DEVICES)."""
    found = db[DEVICES].find(within(principal, {}), {"_id": 1}, limit=MAX_SCOPE_DEVICES)
    return [str(d["_id"]) async for d in found]
