"""The served OpenAPI document is valid 3.1 and describes every route the gateway answers."""

from __future__ import annotations

from openapi_spec_validator import validate

from services.gateway.routes import ROUTES


async def test_openapi_document_is_valid_and_complete(api, stack):
    status, spec, _ = await api.as_(None).call("GET", "/v1/openapi.json")
    assert status == 200
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    for route in ROUTES:
        operation = spec["paths"][route.path][route.method.lower()]
        assert str(route.success) in operation["responses"]
        assert "422" in operation["responses"] and "401" in operation["responses"]
        if route.body is not None:
            ref = operation["requestBody"]["content"][route.consumes]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in spec["components"]["schemas"]
        if route.response is not None:  # a typed success body, never a bare object
            ref = operation["responses"][str(route.success)]["content"]["application/json"]["schema"]["$ref"]
            assert spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]
        if route.query is not None:
            assert {p["name"] for p in operation["parameters"] if p["in"] == "query"} == set(route.query.model_fields)
    # The web console (/console, HTML for browsers; its own table in console/routes.py) is no part of the API.
    served = {(r.method, r.resource.canonical) for r in stack.runner.app.router.routes()
              if r.method != "HEAD" and not r.resource.canonical.startswith("/console")}
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert served == documented
