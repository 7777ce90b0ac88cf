"""The gateway's store stops answering mid-run (its process is paused, as a hung or partitioned
store looks): agents and operators get 503 + Retry-After within the store timeouts, never a 500 and
never a request held for the outage; health says so; service resumes when the store is back.

The gateway gets a store process of its own for this, so pausing it disturbs neither the other
services' store nor the shared RabbitMQ."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from services.gateway.state import GATEWAY
from shared.embedded_mongo import EmbeddedMongo
from shared.store import connect_with

from .conftest import Api
from .helpers import EU_FACTS, BareAgent, make_tenant
from .processes import store_paused

TIMEOUTS = {"store_timeout_seconds": 1.0, "store_operation_timeout_seconds": 2.0}


@pytest.fixture
async def gateway_store():
    server = EmbeddedMongo(":memory:").start()
    yield server
    if server.pid is not None:
        os.kill(server.pid, signal.SIGCONT)  # whatever the test did, it can be stopped
    server.stop()


@pytest.fixture
async def own_store_api(stack, gateway_store, http):
    """The stack's gateway restarted on its own store process, with short store timeouts."""
    shared_client = stack.client
    client = connect_with(gateway_store.url, stack.gateway_settings.model_copy(update=TIMEOUTS))
    await stack.stop("gateway")
    stack.client, stack.gateway_settings = client, stack.gateway_settings.model_copy(update=TIMEOUTS)
    await stack.start("gateway")
    stack.client = shared_client  # any other service (re)started keeps the shared store
    yield Api(http, stack.url, stack.bootstrap, stack.mailbox)
    await stack.stop("gateway")
    await client.close()


async def _timed(coro):
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


async def _raw(api: Api, method: str, path: str, **kwargs) -> tuple[int, dict, dict]:
    async with api.session.request(method, api.url + path, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


async def test_a_paused_store_gives_503_with_retry_after_and_service_resumes(own_store_api, gateway_store, stack):
    api = own_store_api
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    status, out, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200, out
    officer = await tenant.team.for_permission("devices.read")
    status, health, _ = await _raw(api, "GET", "/v1/health")
    assert status == 200 and health["store"] == "ok" and health["bus"] == "ok", health

    async with store_paused(gateway_store.pid):
        body, _ = agent.request_body(tenant.key_id, EU_FACTS)
        (agent_answer, agent_s), (operator_answer, operator_s), (health_answer, health_s) = await asyncio.gather(
            _timed(_raw(api, "POST", "/v1/agent/key-requests", data=body, headers=agent.signed(body))),
            _timed(_raw(api, "GET", "/v1/devices", headers={"Authorization": f"Bearer {officer.token}"})),
            _timed(_raw(api, "GET", "/v1/health")),
        )
    print(f"answers with the store paused: agent {agent_s:.2f}s, operator {operator_s:.2f}s, health {health_s:.2f}s")
    for status, problem, headers in (agent_answer, operator_answer):
        assert status == 503, problem
        assert headers["Content-Type"].startswith("application/problem+json") and int(headers["Retry-After"]) > 0
        assert problem["detail"] == "the store is unavailable; retry later", problem
    status, health, headers = health_answer
    assert status == 503 and health["store"] == "unavailable" and health["bus"] == "ok", health
    assert int(headers["Retry-After"]) > 0
    # Bounded by the store timeouts, whatever the outage's length: the store was paused until
    # all three had answered, so none of them waited for it to come back.

    # The store is back: service resumes without restarting anything.
    deadline = time.monotonic() + 30
    while True:
        status, out, key = await agent.request(tenant.key_id, EU_FACTS)
        if status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert status == 200 and key, out
    status, devices, _ = await officer.call("GET", "/v1/devices")
    assert status == 200 and [d["device_id"] for d in devices["items"]] == [agent.device_id]
    status, health, _ = await _raw(api, "GET", "/v1/health")
    assert status == 200 and health["status"] == "ok", health
    assert stack.runner.app[GATEWAY].settings.store_timeout_seconds == 1.0
