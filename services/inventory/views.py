"""Device documents as the API shows them: API field names, decoded parameter names, no internals
(the applied-message marker and the silence deadline stay private)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.common import redaction
from services.inventory.params import decode_name
from services.inventory.query import FIELDS, Projection


def render_device(document: dict[str, Any], projection: Projection) -> dict[str, Any]:
    device: dict[str, Any] = {"id": document["_id"]}
    for name in projection.fields:
        device[name] = _json(document.get(FIELDS[name].path))
    if projection.all_parameters or projection.names or projection.prefixes:
        parameters = {}
        for key, entry in sorted((document.get("params") or {}).items()):
            if isinstance(entry, dict):
                name = decode_name(key)
                parameters[name] = render_parameter(name, entry)
        device["parameters"] = parameters
    return device


def render_parameter(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    if "v" in entry:
        rendered["value"] = redaction.value(name, entry["v"])
        rendered["type"] = entry.get("t", "xsd:string")
    if "w" in entry:
        rendered["writable"] = entry["w"]
    if "ts" in entry:
        rendered["timestamp"] = _json(entry["ts"])
    if entry.get("r"):
        rendered["applied_after_reboot"] = True
    if name.endswith("."):
        rendered["object"] = True
    return rendered


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        # MongoDB keeps UTC; a client not opened with tz_aware returns naive datetimes.
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value
