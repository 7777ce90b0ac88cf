"""Stopping services with requests in flight loses nothing: every request completes, and the
audit log holds each event exactly once, in an unbroken chain."""

from __future__ import annotations

import asyncio
from collections import Counter

from shared.audit_chain import ChainHead, verify_chain

from .helpers import EU_FACTS, BareAgent, audit_records, make_tenant


async def _restart(stack, name: str, after: float, down_for: float) -> None:
    await asyncio.sleep(after)
    await stack.stop(name)
    await asyncio.sleep(down_for)
    await stack.start(name)


async def test_services_restarted_mid_stream_lose_and_duplicate_nothing(api, stack):
    tenant = await make_tenant(api)
    agents = [await BareAgent.enroll(tenant, api, f"vm-{i}") for i in range(5)]

    async def agent_loop(agent: BareAgent) -> list[tuple[int, str]]:
        results = []
        for _ in range(12):
            status, out, key = await agent.request(tenant.key_id, EU_FACTS)
            results.append((status, out.get("request_id")))
            await asyncio.sleep(0.02)
        return results

    outcomes = await asyncio.gather(
        *(agent_loop(a) for a in agents),
        _restart(stack, "policysvc", after=0.2, down_for=0.8),
        _restart(stack, "keysvc", after=0.6, down_for=0.8),
        _restart(stack, "auditsvc", after=0.4, down_for=1.0),
    )
    results = [r for per_agent in outcomes[:5] for r in per_agent]
    assert [status for status, _ in results] == [200] * 60, Counter(s for s, _ in results)

    request_ids = {rid for _, rid in results}
    records = await audit_records(tenant.admin, expect_at_least=4 + 5 * 2 + 60 * 3, timeout=30)
    assert len(records) == 4 + tenant.extra_records + 5 * 2 + 60 * 3
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert len({r["event_id"] for r in records}) == len(records)
    per_request = Counter(
        (r["details"].get("request_id"), r["action"]) for r in records if r["action"].startswith("key.re") or r["action"] == "key.decided"
    )
    for rid in request_ids:
        for action in ("key.requested", "key.decided", "key.released"):
            assert per_request[(rid, action)] == 1, (rid, action, per_request[(rid, action)])
    assert verify_chain(records, start=ChainHead.genesis(tenant.tenant_id)).ok
