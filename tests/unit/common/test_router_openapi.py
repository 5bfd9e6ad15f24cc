"""Merging the services' OpenAPI documents: nothing overwritten, every reference still resolves."""

from __future__ import annotations

from services.router.openapi import merge_documents


def _document(schema_name: str, schema: dict, path: str, tags: list[str] | None = None) -> dict:
    operation = {"responses": {"200": {"content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}}}
    if tags:
        operation["tags"] = tags
    return {"openapi": "3.1.0", "paths": {path: {"get": operation}},
            "components": {"schemas": {schema_name: schema, "Problem": {"type": "object"}}},
            "security": [{"bearer": []}]}


def test_components_that_differ_are_renamed_and_their_references_follow() -> None:
    merged = merge_documents({
        "orchestrator": _document("Page", {"type": "object", "title": "tasks"}, "/api/v1/tasks", ["tasks"]),
        "inventory": _document("Page", {"type": "object", "title": "devices"}, "/api/v1/devices"),
    })
    schemas = merged["components"]["schemas"]
    assert set(schemas) == {"Page", "inventory.Page", "Problem"}  # the identical Problem kept once
    assert schemas["Page"]["title"] == "tasks" and schemas["inventory.Page"]["title"] == "devices"
    ref = merged["paths"]["/api/v1/devices"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ref == {"$ref": "#/components/schemas/inventory.Page"}
    assert [t["name"] for t in merged["tags"]] == ["tasks", "inventory"]  # untagged: grouped by service
    assert merged["security"] == [{"bearer": []}]


def test_only_the_paths_routed_to_a_service_are_taken_from_it() -> None:
    merged = merge_documents(
        {"orchestrator": _document("A", {}, "/api/v1/devices/{id}/tasks"),
         "inventory": _document("B", {}, "/api/v1/devices/{id}/tasks")},
        keep=lambda path, service: service == "orchestrator")
    assert merged["paths"]["/api/v1/devices/{id}/tasks"]["get"]["tags"] == ["orchestrator"]
