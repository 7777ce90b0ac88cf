"""The OpenAPI 3.1 document, generated from the route table and the pydantic models: each route's
path and query parameters, request body and typed success response."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from . import responses as R
from .routes import ROUTES, Route
from .schemas import FACT_VALUE

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
_REF = "#/components/schemas/{model}"
_SUCCESS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 302: "Redirect"}
# Health and readiness answer 503 with their own body, naming what failed, rather than a problem.
_OWN_503 = (R.Health, R.Readiness)


def _models() -> list[type[BaseModel]]:
    found: dict[type[BaseModel], None] = {}
    for route in ROUTES:
        for model in (route.body, route.query, route.response):
            if model is not None:
                found[model] = None
    return list(found)


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter is one left out, never `null`: drop the null branch."""
    branches = [b for b in schema.get("anyOf", []) if b != {"type": "null"}]
    if "anyOf" not in schema or len(branches) == len(schema["anyOf"]):
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**branches[0], **rest} if len(branches) == 1 else {**rest, "anyOf": branches}


# What a field stripped of surrounding whitespace (str_strip_whitespace) must be to keep its minLength.
_TRIMMED = r"^\S(?:[\s\S]*\S)?$"


def _trimmed(schema: dict[str, Any]) -> None:
    """A model that strips whitespace counts a string's length after stripping: say so, for the
    fields with a minimum length and no pattern of their own."""
    for prop in schema.get("properties", {}).values():
        for branch in [prop, *prop.get("anyOf", [])]:
            if branch.get("type") == "string" and branch.get("minLength") and "pattern" not in branch:
                branch["pattern"] = _TRIMMED


def _parameters(route: Route, defs: dict[str, Any], refs: dict[type[BaseModel], str]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    if route.query is not None:
        schema = defs[refs[route.query]]
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            prop = _without_null(prop)
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    return params


def _success(route: Route, refs: dict[type[BaseModel], str]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": _SUCCESS.get(route.success, "Success")}
    if route.success == 204 or not route.produces:
        return answer
    content: dict[str, Any] = {}
    for media in route.produces:
        if media == "application/json" and route.response is not None:
            content[media] = {"schema": {"$ref": _REF.format(model=refs[route.response])}}
        elif media.startswith("text/") or media.endswith("+xml") or media.endswith("ndjson"):
            content[media] = {"schema": {"type": "string"}}
        else:
            content[media] = {"schema": {"type": "string", "format": "binary"}}
    answer["content"] = content
    return answer


def _operation(route: Route, defs: dict[str, Any], refs: dict[type[BaseModel], str]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', route.path.lower()).strip('_')}",
        "responses": {
            str(route.success): _success(route, refs),
            **{
                code: {"description": text, "content": {"application/problem+json": {"schema": _PROBLEM_REF}}}
                for code, text in _ERRORS.items()
            },
        },
    }
    if route.response in _OWN_503:
        op["responses"]["503"] = {"description": "A dependency is failing (named in the body)",
                                  "content": {"application/json": {"schema": {"$ref": _REF.format(model=refs[route.response])}}}}
    params = _parameters(route, defs, refs)
    if params:
        op["parameters"] = params
    if route.auth == "operator":
        op["security"] = [{"bearer": []}]
        op["x-permission"] = route.permission
    elif route.auth == "device":
        op["security"] = [{"httpSignature": []}]
    if route.body is not None:
        op["requestBody"] = {
            "required": not route.body_optional,
            "content": {route.consumes: {"schema": {"$ref": _REF.format(model=refs[route.body])}}},
        }
    return op


def build_spec(deployment: str = "provider") -> dict[str, Any]:
    models = _models()
    keys, top = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    defs: dict[str, Any] = top.get("$defs", {})
    if deployment == "provider":  # sign-in names the tenant (an enterprise has just the one)
        login = defs["Login"]
        login["required"] = sorted({*login.get("required", []), "tenant"})
        login["properties"]["tenant"] = _without_null(login["properties"]["tenant"])
    refs = {m: keys[(m, "validation")]["$ref"].rsplit("/", 1)[1] for m in models}
    for model in models:
        if model.model_config.get("str_strip_whitespace"):
            _trimmed(defs[refs[model]])
    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, defs, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Strongroom gateway", "version": "1", "description": "Policy-based key release and custody."},
        "paths": paths,
        "components": {
            "schemas": {"Problem": PROBLEM, "FactValue": FACT_VALUE, **defs},
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
