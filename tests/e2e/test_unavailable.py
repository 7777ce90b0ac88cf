"""A service that is down gives the operator a clear 504 within the deadline, never a hang,
and the request it missed is not acted on later (it expires with its deadline)."""

from __future__ import annotations

import asyncio

from services.gateway.state import GATEWAY

from .helpers import make_tenant


async def test_request_to_a_stopped_service_times_out_and_is_not_replayed_later(api, stack):
    tenant = await make_tenant(api)
    stack.runner.app[GATEWAY].settings.rpc_timeout_seconds = 1.0
    await stack.stop("keysvc")
    started = asyncio.get_running_loop().time()
    status, problem, ctype = await tenant.admin.call("POST", "/v1/keys", json={"name": "late-key"})
    elapsed = asyncio.get_running_loop().time() - started
    assert status == 504 and ctype.startswith("application/problem+json"), problem
    assert elapsed < 5
    await asyncio.sleep(1.0)
    await stack.start("keysvc")
    status, keys, _ = await tenant.admin.call("GET", "/v1/keys")
    assert status == 200
    assert [k["name"] for k in keys["items"]] == ["acme-vol"], "the expired request must not have run"
