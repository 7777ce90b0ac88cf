"""Load shedding: while a queue on the release path is over its limit, the gateway answers key
requests 503 + Retry-After and queues nothing more; the agent SDK waits as told and retries, and
gets its key once the backlog is worked off."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import pytest

from agent.client import AgentClient
from agent.identity import AgentIdentity
from services.gateway.state import GATEWAY

from .helpers import EU_FACTS, BareAgent, audit_records_until, make_tenant

LIMIT = 3


async def _until(predicate, timeout: float = 30.0, every: float = 0.1):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await predicate()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(every)
    return result


@pytest.mark.stack(gateway={"queue_depth_limit": LIMIT, "queue_depth_refresh_seconds": 0.1,
                            "queue_depth_retry_after_seconds": 1})
async def test_a_deep_queue_sheds_key_requests_and_the_sdk_retries_until_served(api, stack):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    status, _, key = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and key
    gateway_bus = stack.buses["gateway"]
    await stack.stop("policysvc")  # its queue now only grows

    accepted: list[asyncio.Task] = []
    shed: list[tuple[int, dict, str]] = []

    async def shedding() -> bool:
        body, _ = agent.request_body(tenant.key_id, EU_FACTS)
        async with api.session.post(api.url + "/v1/agent/key-requests", data=body, headers=agent.signed(body)) as resp:
            if resp.status == 503:
                shed.append((resp.status, await resp.json(content_type=None), resp.headers["Retry-After"]))
                return True
        return False

    # Requests pile up in policysvc's queue (each waits for its decision) until the gateway's
    # cached depth passes the limit; from then on it refuses at once.
    for _ in range(LIMIT + 1):
        accepted.append(asyncio.create_task(agent.request(tenant.key_id, EU_FACTS)))
    backlog = stack.runner.app[GATEWAY].backlog

    async def over_limit() -> bool:
        return backlog.over_limit() is not None

    await _until(over_limit)
    await _until(shedding)
    status, problem, retry_after = shed[0]
    assert problem["status"] == 503 and problem["detail"] == "too much work is waiting; retry later", problem
    assert retry_after == "1"
    assert backlog.over_limit() == "policysvc"
    queued = await gateway_bus.queue_depth("policysvc")

    # The SDK, refused while the backlog lasts, waits and retries; policysvc comes back, works the
    # queue off, and the SDK's request is served.
    identity = AgentIdentity(gateway_url=api.url, tenant_id=agent.tenant_id, device_id=agent.device_id,
                             key_id=agent.key_id, private_key=agent.signing_key)
    answers: list[tuple[int, str | None]] = []  # what the SDK got, attempt by attempt

    async def on_request_end(session, context, params: aiohttp.TraceRequestEndParams) -> None:
        answers.append((params.response.status, params.response.headers.get("Retry-After")))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)

    async def refused_twice() -> bool:
        return len(answers) >= 2

    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        client = AgentClient(identity, session=session, retries=30, max_retry_wait_seconds=5.0)
        sdk = asyncio.create_task(client.request_key(tenant.key_id, facts=EU_FACTS))
        await _until(refused_twice)
        assert answers[:2] == [(503, "1"), (503, "1")], answers
        assert await gateway_bus.queue_depth("policysvc") == queued, "a refused request was queued"
        await stack.start("policysvc")
        released = await asyncio.wait_for(sdk, 60)
    assert answers[-1][0] == 200 and {status for status, _ in answers[:-1]} == {503}, answers
    print(f"the SDK was refused {len(answers) - 1} times before its key was released")
    assert released.key_id == tenant.key_id and len(released.key) == 32
    outcomes = Counter(status for status, _, _ in await asyncio.gather(*accepted))
    assert outcomes == {200: len(accepted)}, outcomes

    # Nothing refused was recorded as requested: one key.requested per request that got in.
    served = 1 + len(accepted) + 1
    records = await audit_records_until(
        tenant.admin, lambda rs: sum(r["action"] == "key.released" for r in rs) >= served, timeout=30)
    actions = Counter(r["action"] for r in records)
    assert actions["key.requested"] == actions["key.released"] == served, actions
    assert stack.runner.app[GATEWAY].backlog.over_limit() is None
