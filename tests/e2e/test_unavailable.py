"""A service that is down gives the operator a clear 504 at the gateway's deadline, never a hang,
and the request it missed is not acted on later (it expires with its deadline)."""

from __future__ import annotations

import asyncio

from services.gateway.state import GATEWAY

from .helpers import make_tenant


async def test_request_to_a_stopped_service_times_out_and_is_not_replayed_later(api, stack):
    tenant = await make_tenant(api)
    stack.runner.app[GATEWAY].settings.rpc_timeout_seconds = 1.0
    await stack.stop("keysvc")
    status, problem, ctype = await tenant.admin.call("POST", "/v1/keys", json={"name": "late-key"})
    assert status == 504 and ctype.startswith("application/problem+json"), problem
    # The gateway's own deadline answered (a hang would end in the client's timeout instead): said
    # by the problem, not measured with a clock that a busy box would stretch.
    assert problem["detail"] == "keysvc did not answer within 1s", problem
    await asyncio.sleep(1.0)
    await stack.start("keysvc")
    status, keys, _ = await tenant.admin.call("GET", "/v1/keys")
    assert status == 200
    assert [k["name"] for k in keys["items"]] == ["acme-vol"], "the expired request must not have run"
