"""The orchestrator's calls to its sibling services, one small function each.

- fileserver: what a file is (size, type, version) before a Download is queued;
- inventory: a page of device ids matching a query (bulk jobs) and a device's tags (policies).

Errors come back as :class:`UpstreamError` with a message an API caller can act on, and the HTTP
status the orchestrator's own API should answer with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from services.common.settings import Settings


class UpstreamError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class FileFacts:
    name: str
    size: int
    file_type: str
    version: str | None


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def file_facts(client: httpx.AsyncClient, settings: Settings, name: str) -> FileFacts:
    """``GET {fileserver}/api/v1/files/{name}`` with the admin key."""
    url = f"{settings.fileserver_url.rstrip('/')}/api/v1/files/{quote(name, safe='')}"
    try:
        response = await client.get(url, headers=_headers(settings.admin_api_key), timeout=5.0)
    except httpx.HTTPError as exc:
        raise UpstreamError(503, f"the fileserver did not answer ({type(exc).__name__}); try again") from None
    if response.status_code == 404:
        raise UpstreamError(422, f"no file named {name!r} on the fileserver; upload it first")
    if response.status_code in (401, 403):
        raise UpstreamError(503, "the fileserver refused the orchestrator's key; set ACS_ADMIN_API_KEY "
                                 "to the same value for both services")
    if response.status_code != 200:
        raise UpstreamError(503, f"the fileserver answered {response.status_code} for {name!r}")
    body = response.json()
    return FileFacts(name=name, size=int(body.get("size") or 0),
                     file_type=str(body.get("file_type") or "1 Firmware Upgrade Image"),
                     version=body.get("version"))


async def device_tags(client: httpx.AsyncClient, settings: Settings, device_id: str,
                      within: float = 0.5) -> frozenset[str]:
    """The device's tags from the inventory; on the Inform path, so short and fail-soft."""
    url = f"{settings.inventory_url.rstrip('/')}/api/v1/devices/{quote(device_id, safe='')}"
    response = await client.get(url, params={"fields": "tags"}, headers=_headers(settings.admin_api_key),
                                timeout=within)
    if response.status_code == 404:
        return frozenset()
    response.raise_for_status()
    return frozenset(response.json().get("tags") or [])


async def device_page(client: httpx.AsyncClient, settings: Settings, query: dict[str, Any] | str,
                      api_key: str | None, cursor: str | None, page_size: int = 500) -> tuple[list[str], str | None]:
    """One page of device ids matching an inventory query (``GET /api/v1/devices?q=``), and the
    cursor of the next page (None after the last)."""
    response = await _inventory_get(client, settings, "/api/v1/devices",
                                    _page_params(query, "id", cursor, page_size), api_key, 30.0)
    _check_query_answer(response)
    body = response.json()
    return [str(d["id"]) for d in body.get("devices", []) if "id" in d], body.get("next_cursor") or None


def _query_text(query: dict[str, Any] | str) -> str:
    return query if isinstance(query, str) else json.dumps(query)


def _page_params(query: dict[str, Any] | str, fields: str, cursor: str | None, page_size: int) -> dict[str, Any]:
    params: dict[str, Any] = {"q": _query_text(query), "fields": fields, "limit": page_size}
    if cursor:
        params["cursor"] = cursor
    return params


async def _inventory_get(client: httpx.AsyncClient, settings: Settings, path: str, params: dict[str, Any],
                         api_key: str | None, answer_within: float) -> httpx.Response:
    """A GET of the inventory's API; no answer at all is a 503 to our caller."""
    try:
        return await client.get(f"{settings.inventory_url.rstrip('/')}{path}", params=params,
                                headers=_headers(api_key), timeout=answer_within)
    except httpx.HTTPError as exc:
        raise UpstreamError(503, f"the inventory did not answer ({type(exc).__name__}); try again") from None


def _check_query_answer(response: httpx.Response) -> None:
    """The inventory's answer to a caller's query: its refusals become the caller's errors."""
    if response.status_code == 400:
        raise UpstreamError(422, f"the inventory refused the query: {_detail(response)}")
    if response.status_code in (401, 403):
        raise UpstreamError(response.status_code, f"the inventory refused the key: {_detail(response)}")
    if response.status_code != 200:
        raise UpstreamError(503, f"the inventory answered {response.status_code}: {_detail(response)}")


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]


async def files_of_type(client: httpx.AsyncClient, settings: Settings, file_type: str,
                        limit: int = 200) -> list[dict[str, Any]]:
    """Operator files of one FileType (``GET {fileserver}/api/v1/files?file_type=&kind=file``)."""
    url = f"{settings.fileserver_url.rstrip('/')}/api/v1/files"
    try:
        response = await client.get(url, params={"file_type": file_type, "kind": "file", "limit": limit},
                                    headers=_headers(settings.admin_api_key), timeout=5.0)
    except httpx.HTTPError as exc:
        raise UpstreamError(503, f"the fileserver did not answer ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise UpstreamError(503, f"the fileserver answered {response.status_code} listing files")
    return list(response.json().get("files") or [])


async def device_rows(client: httpx.AsyncClient, settings: Settings, query: dict[str, Any] | str,
                      fields: str, cursor: str | None, page_size: int) -> tuple[list[dict[str, Any]], str | None]:
    """Like :func:`device_page`, with the devices' ``fields`` (campaigns: product class and software
    version), read with the service key (ACS_ADMIN_API_KEY)."""
    response = await _inventory_get(client, settings, "/api/v1/devices",
                                    _page_params(query, fields, cursor, page_size), settings.admin_api_key, 30.0)
    if response.status_code != 200:
        raise UpstreamError(422 if response.status_code == 400 else 503,
                            f"the inventory answered {response.status_code}: {_detail(response)}")
    body = response.json()
    return [d for d in body.get("devices", []) if "id" in d], body.get("next_cursor") or None


async def device_count(client: httpx.AsyncClient, settings: Settings, query: dict[str, Any] | str,
                       api_key: str | None) -> int:
    """``GET /api/v1/devices/count?q=``: how many devices the query matches."""
    response = await _inventory_get(client, settings, "/api/v1/devices/count", {"q": _query_text(query)},
                                    api_key, 60.0)
    _check_query_answer(response)
    return int(response.json()["count"])
