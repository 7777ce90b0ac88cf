"""Query keys and body fields named like the gateway's own call arguments (`method`, `service`,
`request`) are data: refused naming the parameter, never a 500."""

from __future__ import annotations

import pytest

from .helpers import make_tenant

PATHS = ["/v1/audit", "/v1/audit/checkpoints", "/v1/audit/archives", "/v1/reports", "/v1/audit/export?format=jsonl"]
KEYWORDS = ["method", "service", "request"]


async def test_query_keys_named_like_call_arguments_are_refused_naming_them(api):
    tenant = await make_tenant(api)
    for path in PATHS:
        for key in KEYWORDS:
            url = f"{path}{'&' if '?' in path else '?'}{key}=x"
            status, problem, ctype = await tenant.admin.call("GET", url)
            assert (status, problem.get("field")) == (400, key), (url, problem)
            assert ctype.startswith("application/problem+json")


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/v1/audit/forwarders",
     {"name": "siem", "kind": "webhook", "url": "http://127.0.0.1:9/hook", "method": "x"}, "method"),
    ("POST", "/v1/audit/forwarders", {"method": "x"}, None),
    ("PUT", "/v1/audit/retention", {"retention_days": 30, "service": "x"}, "service"),
    ("PUT", "/v1/audit/retention", {"service": "x"}, None),
    ("PUT", "/v1/audit/retention", {"retention_days": 30, "request": "x"}, "request"),
])
async def test_body_fields_named_like_call_arguments_are_refused(api, method, path, body, field):
    tenant = await make_tenant(api)
    status, problem, _ = await tenant.admin.call(method, path, json=body)
    assert status == 422, problem
    if field is not None:
        assert problem.get("field") == field, problem
