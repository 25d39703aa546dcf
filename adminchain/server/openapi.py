"""The OpenAPI 3.1 document at ``/openapi.json``: Litestar's, generated from the handlers'
types, plus the append body, whose schema msgspec generates from the very event types that
validate it (the handler reads the raw body to name the bad line and field itself)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar

from adminchain.server.problems import PROBLEM_TYPE, Problem
from ledger.events import WIRE_EVENT

__all__ = ["document"]

_cache: dict[int, dict[str, Any]] = {}

_ERRORS = {
    "400": "Malformed body or parameters (a bad event names its line and field); nothing stored",
    "401": "No token, or an unknown, revoked or expired token",
    "403": "The token's role does not allow this route or event, or the actor is not the token's",
    "404": "No such resource",
    "409": "A strict append was refused",
    "413": "Body over --max-body or more than --max-events events",
    "415": "Unsupported content type",
    "503": "The ledger cannot commit (Retry-After); nothing stored",
    "504": "A wait or the request timed out",
}


def document(app: Litestar) -> dict[str, Any]:
    """The OpenAPI document of `app` (built once)."""
    key = id(app)
    if key in _cache:
        return _cache[key]
    doc = app.openapi_schema.to_schema()
    (events, problem), components = msgspec.json.schema_components(
        [list[WIRE_EVENT], Problem], ref_template="#/components/schemas/{name}"
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(components)
    problem_content = {PROBLEM_TYPE: {"schema": problem}}
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for code, text in _ERRORS.items():
                responses[code] = {"description": text, "content": problem_content}
            operation["security"] = [] if path in ("/healthz", "/readyz") else [{"bearer": []}]
            if path == "/v1/events" and method == "post":
                line = {"type": "string", "description": "One event as JSON per line"}
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": events},
                        "application/jsonl": {"schema": line},
                        "application/x-ndjson": {"schema": line},
                    },
                }
    doc.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"}
    }
    _cache[key] = doc
    return doc
