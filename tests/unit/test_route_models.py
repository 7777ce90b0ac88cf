"""Every route declares what it answers: a JSON route its response model, any other the media
types it produces; a route with a query string its query model. The OpenAPI document is built
from these, so a route added without them fails here, not in a client."""

from __future__ import annotations

import re

from pydantic import BaseModel

from services.gateway.openapi import build_spec
from services.gateway.routes import ROUTES

# Routes whose success body is not JSON, and why (everything else answers a response model).
NOT_JSON = {
    ("GET", "/v1/events/stream"): "server-sent events",
    ("GET", "/v1/audit/export"): "an export streamed in the requested SIEM format",
    ("GET", "/v1/audit/archives/{archive_id}"): "a gzip download",
    ("GET", "/v1/auth/saml/metadata"): "SAML metadata XML",
    ("GET", "/v1/auth/oidc/start"): "a redirect",
    ("GET", "/v1/auth/saml/start"): "a redirect",
    ("GET", "/v1/docs"): "the API reference page",
    ("GET", "/v1/docs/{asset}"): "the reference's scripts, styles and icon",
    ("GET", "/metrics"): "Prometheus's text exposition format",
}
# Views that read the query string (request.query): each such route must declare its model.
QUERY_READERS = re.compile(r"request\.query|_query\(")


def test_every_json_route_has_a_response_model():
    missing = [(r.method, r.path) for r in ROUTES
               if r.success != 204 and "application/json" in r.produces and r.response is None]
    assert missing == [], f"routes without a response model: {missing}"
    odd = [(r.method, r.path) for r in ROUTES if "application/json" not in r.produces and r.success != 204]
    assert sorted(odd) == sorted(NOT_JSON), "a route stopped or started answering JSON: update NOT_JSON with why"


def test_models_are_pydantic_and_queries_are_declared():
    import inspect

    for route in ROUTES:
        for model in (route.body, route.query, route.response):
            assert model is None or issubclass(model, BaseModel), (route.path, model)
        source = inspect.getsource(route.view)  # type: ignore[arg-type]
        if QUERY_READERS.search(source):
            assert route.query is not None, f"{route.method} {route.path} reads its query string but declares no model"


def test_the_document_types_every_success_and_lists_query_parameters():
    spec = build_spec()
    for route in ROUTES:
        op = spec["paths"][route.path][route.method.lower()]
        success = op["responses"][str(route.success)]
        if route.response is not None:
            assert success["content"]["application/json"]["schema"]["$ref"].startswith("#/components/schemas/")
        if route.query is not None:
            documented = {p["name"] for p in op["parameters"] if p["in"] == "query"}
            assert documented == set(route.query.model_fields), route.path
    fmt = next(p for p in spec["paths"]["/v1/audit/export"]["get"]["parameters"] if p["name"] == "format")
    assert fmt["required"] is True and "jsonl" in fmt["schema"]["enum"]
    forwarder = spec["paths"]["/v1/audit/forwarders"]["post"]["requestBody"]["content"]["application/json"]
    assert forwarder["schema"]["$ref"].endswith("/ForwarderSpec")
