"""No key leaves unless its release was durably queued for audit: with the audit queue full, a release
is refused at once (503, audit unavailable), never answered with a key, and nothing else stops."""

from __future__ import annotations

import asyncio

import pytest

from shared import events

from .helpers import EU_FACTS, BareAgent, audit_records, make_tenant

LIMIT = 60
pytestmark = pytest.mark.stack(audit_max_length=LIMIT, gateway={"release_timeout_seconds": 3.0})


async def _fill_audit_queue(stack, tenant_id: str, leave_room: int) -> None:
    """Leaves room for exactly `leave_room` more messages. A quorum queue's bound is soft by one:
    it takes the message that crosses the limit and refuses the next."""
    bus = stack.buses["gateway"]
    capacity = LIMIT + 1
    depth = await bus.queue_depth("auditsvc")
    for _ in range(capacity - leave_room - depth):
        # Only auditsvc is bound to tenant events, so these land in its queue alone.
        await bus.publish(events.TenantCreated(tenant_id=tenant_id, name="filler"))
    assert await bus.queue_depth("auditsvc") == capacity - leave_room


# key.requested and key.decided take one place each in the audit queue (an audited publish goes to
# the audit queue first and then past it, to the other consumers): with 2 places left, only
# key.released is refused.
@pytest.mark.parametrize("leave_room", [0, 2], ids=["full", "room-for-request-and-decision-only"])
async def test_release_refused_when_its_audit_record_cannot_be_queued(api, stack, leave_room):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200
    before = await audit_records(tenant.admin, expect_at_least=4 + 2 + 3)

    await stack.stop("auditsvc")
    await _fill_audit_queue(stack, tenant.tenant_id, leave_room)
    started = asyncio.get_running_loop().time()
    status, body, key = await agent.request(tenant.key_id, EU_FACTS)
    assert key is None and "sealed_key" not in body
    # Full: refused at the door, nothing routed to anyone. Room for the request and decision only:
    # keysvc cannot queue key.released for audit, so it refuses the release for good and says so.
    # Either way the agent hears "audit unavailable" at once, never a key, never a timeout.
    assert status == 503, body
    assert "audit log cannot take the record" in body["detail"], body
    assert asyncio.get_running_loop().time() - started < 2

    # Once auditsvc drains its queue, releases resume; the refused one left no key.released behind.
    await stack.start("auditsvc")
    deadline = asyncio.get_running_loop().time() + 20
    while (status := (await agent.request(tenant.key_id, EU_FACTS))[0]) != 200:
        assert status == 503 and asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)
    while True:  # the filler records land too: wait for the recovered release itself
        records = await audit_records(tenant.admin, expect_at_least=len(before) + 3)
        released = [r for r in records if r["action"] == "key.released"]
        if len(released) >= 2 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    requested = {r["details"]["request_id"] for r in records if r["action"] == "key.requested"}
    # The refused request was never released, then or later: only the two good releases are.
    assert len(released) == 2
    # Whatever was released was requested on the record first: nothing happened unaudited.
    assert {r["details"]["request_id"] for r in released} <= requested
