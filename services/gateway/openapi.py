"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""

from __future__ import annotations

import re
from typing import Any

from .routes import ROUTES

PROBLEM = {
    "type": "object",
    "required": ["title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "The offending field, when one is to blame"},
    },
}

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_ERRORS = {
    "400": "Malformed request (bad JSON, bad query)",
    "401": "Missing or invalid credentials or signature",
    "403": "Not permitted, or denied by policy",
    "404": "Not found (also for other tenants' resources)",
    "409": "Conflict with the resource's state",
    "413": "Body too large",
    "422": "Invalid field",
    "503": "A backing service is unavailable",
    "504": "A backing service did not answer in time",
}


def build_spec() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Problem": PROBLEM}
    paths: dict[str, Any] = {}
    for route in ROUTES:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', route.path.lower()).strip('_')}",
            "responses": {
                str(route.success): {"description": "Success"}
                | ({} if route.success == 204 else {"content": {"application/json": {"schema": {"type": "object"}}}}),
                **{
                    code: {"description": text, "content": {"application/problem+json": {"schema": _PROBLEM_REF}}}
                    for code, text in _ERRORS.items()
                },
            },
        }
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        if params:
            op["parameters"] = params
        if route.auth == "operator":
            op["security"] = [{"bearer": []}]
            op["x-permission"] = route.permission
        elif route.auth == "device":
            op["security"] = [{"httpSignature": []}]
        if route.body is not None:
            schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                schemas[name] = sub
            schemas[route.body.__name__] = schema
            op["requestBody"] = {
                "required": route.success != 200 or route.body.__name__ != "RotateKey",
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Strongroom gateway", "version": "1", "description": "Policy-based key release and custody."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Operator API token"},
                "httpSignature": {
                    "type": "apiKey", "in": "header", "name": "Signature",
                    "description": "RFC 9421 HTTP Message Signature by the device's Ed25519 key "
                                   "(with Signature-Input and Content-Digest)",
                },
            },
        },
    }
