"""JSON nested past any sane depth is a 400 naming the body, never a 500 (RecursionError in the
parser), on unauthenticated and authenticated routes alike; an unknown method is a 405 with Allow."""

from __future__ import annotations

import pytest

from .helpers import make_tenant


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("depth", [5_000, 65])  # 5,000: past the parser's recursion limit, within the body limit
async def test_deeply_nested_bodies_are_refused_naming_the_body(api, http, stack, depth):
    tenant = await make_tenant(api)
    headers = {"Content-Type": "application/json"}
    for path in ("/v1/auth/login", "/v1/agent/enroll"):
        async with http.post(stack.url + path, data=nested(depth), headers=headers) as resp:
            problem = await resp.json(content_type=None)
            assert (resp.status, problem.get("field")) == (400, "body"), (path, resp.status, problem)
    for path in ("/v1/policies", "/v1/policies/simulate", "/v1/keys"):
        status, problem, ctype = await tenant.admin.call("POST", path, data=nested(depth), headers=headers)
        assert (status, problem.get("field")) == (400, "body"), (path, status, problem)
        assert ctype.startswith("application/problem+json")


async def test_a_body_at_the_depth_limit_is_read(api):
    tenant = await make_tenant(api)
    # 64 levels of nesting parse; the model then refuses the shape, naming a field (a 422, not a 400).
    status, problem, _ = await tenant.admin.call("POST", "/v1/keys", data=nested(63),
                                                 headers={"Content-Type": "application/json"})
    assert status == 422, problem


async def test_an_unknown_method_is_405_with_allow(http, stack):
    async with http.request("TRACE", stack.url + "/v1/keys") as resp:
        assert resp.status == 405
        allow = {m.strip() for m in resp.headers.get("Allow", "").split(",")}
        assert {"GET", "POST"} <= allow, resp.headers
