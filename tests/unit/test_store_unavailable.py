"""A store that cannot serve a call is a 503 with Retry-After, in one place for each caller: the
gateway's problem middleware (its own store) and the bus's RPC answer (a service's store)."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pymongo.errors import AutoReconnect, ExecutionTimeout, NetworkTimeout, ServerSelectionTimeoutError

from services.gateway.problems import problem_middleware
from shared import rpc
from shared.events import SYSTEM

FAILURES = [ServerSelectionTimeoutError("no servers"), AutoReconnect("reset"), NetworkTimeout("timed out"),
            ExecutionTimeout("operation exceeded time limit")]


@pytest.mark.parametrize("failure", FAILURES, ids=lambda e: type(e).__name__)
async def test_the_gateway_answers_503_with_retry_after(failure):
    async def view(request: web.Request) -> web.Response:
        raise failure

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/", view)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/")
        assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        body = await resp.json(content_type=None)
        assert body["detail"] == "the store is unavailable; retry later" and "servers" not in str(body)


@pytest.mark.parametrize("failure", FAILURES, ids=lambda e: type(e).__name__)
async def test_a_service_answers_an_rpc_with_503(failure):
    async def handler(request: rpc.RpcRequest) -> rpc.RpcReply:
        raise failure

    request = rpc.RpcRequest(method="m", tenant_id="t", actor=SYSTEM, correlation_id="c", params={})
    reply = await rpc.answer(rpc.encode(request), handler)
    assert reply.problem is not None and reply.problem.status == 503, reply
