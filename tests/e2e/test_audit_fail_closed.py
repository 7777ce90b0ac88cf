"""No key leaves unless its release was durably queued for audit: with the audit queue full, a release
is refused at once (503, audit unavailable), never answered with a key, and nothing else stops.

Every claim here rests on the broker's own state, never on a clock: the audit queue's contents are
read until they are what the step needs, and a refusal is told from a timeout by its status (503,
not 504), so a busy box slows these tests without changing what they show."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from shared import events, topology
from shared.bus import PublishRefused

from .helpers import EU_FACTS, BareAgent, audit_records, make_tenant

LIMIT = 60
# A quorum queue's bound is soft by one: it takes the message that crosses the limit and refuses
# the next (and keeps refusing until it is drained to 80% of the limit).
CAPACITY = LIMIT + 1
WAIT = 60.0  # bounds waits for the broker and the services; no claim depends on it
pytestmark = pytest.mark.stack(audit_max_length=LIMIT)


@pytest.fixture
async def audit_queue(amqp_url, stack):
    """Reads the audit queue as its leader counts it: (ready messages, consumers)."""
    connection = await aio_pika.connect(amqp_url)
    name = stack.buses["gateway"].name(topology.AUDIT_SERVICE)

    async def state() -> tuple[int, int]:
        async with connection.channel() as channel:
            declared = (await channel.declare_queue(name, passive=True)).declaration_result
            return declared.message_count, declared.consumer_count

    yield state
    await connection.close()


async def _settled(audit_queue) -> int:
    """The ready count once auditsvc's consumer is gone and what it held unacked is back.

    The broker drops a closed consumer, and requeues its deliveries, after the connection has
    closed; and a quorum queue answers (0, 0) when its leader is too busy to reply within 250 ms.
    So one reading proves nothing: three equal ones in a row do."""
    loop = asyncio.get_running_loop()
    deadline, seen = loop.time() + WAIT, []
    while len(seen) < 3 or len(set(seen[-3:])) > 1 or seen[-1][1] != 0:
        assert loop.time() < deadline, f"the audit queue did not settle: {seen[-3:]}"
        seen.append(await audit_queue())
        await asyncio.sleep(0.1)
    return seen[-1][0]


async def _until_ready(audit_queue, expected: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while (seen := await audit_queue())[0] != expected:
        assert loop.time() < deadline, f"the audit queue holds {seen[0]} ready messages, expected {expected}"
        await asyncio.sleep(0.1)


async def _fill(stack, tenant_id: str, count: int) -> None:
    # Only auditsvc is bound to tenant events, so these land in its queue alone.
    for _ in range(count):
        await stack.buses["gateway"].publish(events.TenantCreated(tenant_id=tenant_id, name="filler"))


async def _released_and_stopped_auditing(api, stack, audit_queue):
    """A tenant whose agent got one key (all of it on the record), and auditsvc stopped."""
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200
    before = await audit_records(tenant.admin, expect_at_least=4 + 2 + 3)
    await stack.stop("auditsvc")
    return tenant, agent, before, await _settled(audit_queue)


async def test_request_refused_at_the_door_when_the_audit_queue_is_full(api, stack, audit_queue):
    tenant, agent, before, _ = await _released_and_stopped_auditing(api, stack, audit_queue)
    # Full by the broker's own word: publish until it refuses.
    with pytest.raises(PublishRefused):
        await _fill(stack, tenant.tenant_id, CAPACITY + 1)
    await _until_ready(audit_queue, CAPACITY)

    status, body, key = await agent.request(tenant.key_id, EU_FACTS)
    # key.requested is refused before anyone acts on it: "audit unavailable" at once, not a timeout.
    assert key is None and "sealed_key" not in body
    assert status == 503, body
    assert "audit log cannot take the record of this request" in body["detail"], body
    assert (await audit_queue())[0] == CAPACITY  # nothing more got in

    await _recovers(stack, tenant, agent, before)


async def test_release_refused_when_its_audit_record_cannot_be_queued(api, stack, audit_queue):
    """Room for the request and the decision only: keysvc cannot queue key.released for audit."""
    tenant, agent, before, ready = await _released_and_stopped_auditing(api, stack, audit_queue)
    await _fill(stack, tenant.tenant_id, CAPACITY - 2 - ready)
    await _until_ready(audit_queue, CAPACITY - 2)
    # policysvc queues key.decided for audit before keysvc hears of it; keysvc is stopped anyway
    # until both records fill the queue, so the claim does not rest on that ordering.
    await stack.stop("keysvc")
    asking = asyncio.create_task(agent.request(tenant.key_id, EU_FACTS))
    await _until_ready(audit_queue, CAPACITY)
    await stack.start("keysvc")
    status, body, key = await asking

    # keysvc cannot queue key.released for audit, so it refuses the release for good and says so:
    # the agent hears "audit unavailable" (503; a timeout would be 504), never a key.
    assert key is None and "sealed_key" not in body
    assert status == 503, body
    assert "audit log cannot take the record of this release" in body["detail"], body
    assert (await audit_queue())[0] == CAPACITY  # key.released did not get in

    await _recovers(stack, tenant, agent, before)


async def _recovers(stack, tenant, agent, before) -> None:
    """Once auditsvc drains its queue, releases resume; the refused request left no key.released."""
    await stack.start("auditsvc")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while (status := (await agent.request(tenant.key_id, EU_FACTS))[0]) != 200:
        assert status == 503 and loop.time() < deadline
        await asyncio.sleep(0.2)
    while True:  # the filler records land too: wait for the recovered release itself
        records = await audit_records(tenant.admin, expect_at_least=len(before) + 3, timeout=WAIT)
        released = [r for r in records if r["action"] == "key.released"]
        if len(released) >= 2 or loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    requested = {r["details"]["request_id"] for r in records if r["action"] == "key.requested"}
    # The refused request was never released, then or later: only the two good releases are.
    assert len(released) == 2
    # Whatever was released was requested on the record first: nothing happened unaudited.
    assert {r["details"]["request_id"] for r in released} <= requested
