"""One OpenAPI document from the services' own: paths, components and tags merged.

Pure: the router fetches the documents and calls :func:`merge_documents`. A path goes in only
from the service the router sends it to (``keep``), so the document describes what answers at
the entry point. Components of the same name that differ between services are renamed
``<service>.<name>`` in the document of the service they come from (its ``$ref``s follow), so
nothing is silently overwritten; identical ones (the problem shape) are kept once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

# Service name -> the setting that holds its base URL; the merged document lists them in this order.
UPSTREAMS = {"orchestrator": "orchestrator_url", "inventory": "inventory_url", "fileserver": "fileserver_url"}
TAG_DESCRIPTIONS = {"orchestrator": "Tasks, jobs, policies and API keys (the orchestrator)",
                    "inventory": "Devices, queries, tags and CPE credentials (the inventory)",
                    "fileserver": "Firmware and configuration files (the fileserver)"}


def merge_documents(documents: dict[str, dict[str, Any]],
                    keep: Callable[[str, str], bool] = lambda path, service: True) -> dict[str, Any]:
    """Merge ``{service: openapi document}``; ``keep(path, service)`` picks which paths go in."""
    merged: dict[str, Any] = {
        "openapi": next((d.get("openapi") for d in documents.values() if d.get("openapi")), "3.1.0"),
        "info": {"title": "TR-069 ACS northbound API", "version": "1",
                 "description": "Every route of /api/v1, from the services that serve them: "
                                + ", ".join(documents) + ". Authenticate with an API key "
                                "(Authorization: Bearer, or X-API-Key). Errors are RFC 9457 problems."},
        "paths": {},
        "components": {},
        "tags": [],
    }
    components: dict[str, dict[str, Any]] = merged["components"]
    tags: dict[str, dict[str, Any]] = {}
    security: list[Any] | None = None
    for service, original in documents.items():
        document = _renamed(service, copy.deepcopy(original), components)
        for kind, entries in document.get("components", {}).items():
            components.setdefault(kind, {}).update(entries)
        for tag in document.get("tags", []):
            tags.setdefault(tag["name"], tag)
        for path, item in document.get("paths", {}).items():
            if not keep(path, service) or path in merged["paths"]:
                continue
            for operation in item.values():
                if isinstance(operation, dict) and "responses" in operation:
                    # Untagged operations are grouped under their service.
                    operation.setdefault("tags", [service])
                    for tag in operation["tags"]:
                        tags.setdefault(tag, {"name": tag, **({"description": TAG_DESCRIPTIONS[tag]}
                                                               if tag in TAG_DESCRIPTIONS else {})})
            merged["paths"][path] = item
        security = security or document.get("security")
    merged["tags"] = list(tags.values())
    if security:
        merged["security"] = security
    for kind in list(components):
        components[kind] = dict(sorted(components[kind].items()))
    return merged


def _renamed(service: str, document: dict[str, Any], taken: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``document`` with its components renamed where one of that name, but different, is taken."""
    renames: dict[str, str] = {}
    for kind, entries in document.get("components", {}).items():
        for name, value in list(entries.items()):
            if name in taken.get(kind, {}) and taken[kind][name] != value:
                new = f"{service}.{name}"
                entries[new] = entries.pop(name)
                renames[f"#/components/{kind}/{name}"] = f"#/components/{kind}/{new}"
    return _rewrite_refs(document, renames) if renames else document


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: (renames.get(v, v) if k == "$ref" and isinstance(v, str) else _rewrite_refs(v, renames))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(v, renames) for v in node]
    return node
