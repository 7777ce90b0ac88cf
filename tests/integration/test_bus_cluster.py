"""The bus over a three-node cluster of the suite's own: work queues are quorum queues with a
member on every node, and when the node a bus is connected to dies (SIGKILL), the bus moves on to
the next URL in its list; every event published (confirmed) is handled."""

from __future__ import annotations

import asyncio
import contextlib

from shared.bus import BusError, RabbitBus
from shared.topology import POLICY_SERVICE

from .test_consumer_recovery import key_requested, wait_for


async def _publish_all(bus: RabbitBus, events) -> int:
    """Publishes each event until the broker confirms it; returns how many attempts failed."""
    failures = 0
    for event in events:
        while True:
            try:
                await bus.publish(event)
                break
            except BusError:
                failures += 1
                await asyncio.sleep(0.2)
    return failures


async def test_the_bus_fails_over_to_the_next_node_and_loses_nothing(rabbit_cluster, prefix):
    nodes = rabbit_cluster.nodes
    consumer = RabbitBus(rabbit_cluster.url, prefix=f"{prefix}.")
    publisher = RabbitBus(",".join(n.url for n in nodes[1:] + nodes[:1]), prefix=f"{prefix}.")
    await consumer.start()  # on node 1, which declares the queues and so leads them
    await publisher.start()  # on node 2
    seen: set[str] = set()

    async def handle(event):
        await asyncio.sleep(0.005)
        seen.add(event.event_id)

    try:
        queue = next(q for q in await asyncio.to_thread(rabbit_cluster.queues) if q["name"] == f"{prefix}.{POLICY_SERVICE}")
        assert queue["type"] == "quorum" and sorted(queue["members"]) == sorted(n.name for n in nodes), queue
        assert queue["leader"] == nodes[0].name and consumer.broker() == nodes[0].url.replace(":guest@", ":******@")
        await consumer.subscribe(POLICY_SERVICE, handle, prefetch=16)
        first = [key_requested(n) for n in range(300)]
        await _publish_all(publisher, first)
        await wait_for(lambda: len(seen) >= 20, timeout=30)
        await asyncio.to_thread(rabbit_cluster.kill, nodes[0])
        later = [key_requested(1000 + n) for n in range(100)]
        failures = await _publish_all(publisher, later)
        await wait_for(lambda: seen >= {e.event_id for e in first + later}, timeout=60)
        assert consumer.broker() == nodes[1].url.replace(":guest@", ":******@")
        queue = next(q for q in await asyncio.to_thread(rabbit_cluster.queues, nodes[1])
                     if q["name"] == f"{prefix}.{POLICY_SERVICE}")
        assert queue["leader"] in (nodes[1].name, nodes[2].name), queue
        print(f"failover: {len(first) + len(later)} confirmed, all handled; {failures} publish attempts refused")
    finally:
        await asyncio.to_thread(rabbit_cluster.restart, nodes[0])
        await publisher.destroy()
        await publisher.close()
        await consumer.close()


async def _publish_audited_until_confirmed(bus: RabbitBus, event, timeout: float) -> int:
    """Publishes (audit first) until the broker confirms; returns how many attempts were refused."""
    deadline = asyncio.get_running_loop().time() + timeout
    refused = 0
    while True:
        try:
            await asyncio.wait_for(bus.publish_audited(event), 30)
            return refused
        except BusError:
            refused += 1
            assert asyncio.get_running_loop().time() < deadline, f"still refused after {refused} attempts"
            await asyncio.sleep(0.2)


async def test_publishing_resumes_on_a_channel_that_published_while_the_audit_queue_had_no_leader(rabbit_cluster, prefix):
    """The audit queue's leader's node dies while the rest of the cluster is not yet a majority, and a
    bus on a surviving node publishes: refused. Once the queue has a leader again its publishes go
    through. (RabbitMQ refused every later publish of that channel to the audit queue, so a
    service that published in the gap never recorded anything again until it reconnected.)"""
    nodes = rabbit_cluster.nodes
    declarer = RabbitBus(nodes[0].url, prefix=f"{prefix}.")
    await declarer.start()  # declared through node 1, so node 1 leads the audit queue
    await declarer.close()
    bus = RabbitBus(",".join(n.url for n in nodes[1:] + nodes[:1]), prefix=f"{prefix}.")
    await bus.start()  # on node 2
    try:
        await asyncio.to_thread(rabbit_cluster.ctl, nodes[2], "stop_app")
        await asyncio.to_thread(rabbit_cluster.kill, nodes[0])  # node 2 alone: no majority, no leader
        with contextlib.suppress(BusError):
            await asyncio.wait_for(bus.publish_audited(key_requested(1)), 30)
            raise AssertionError("a publish with no leader for the audit queue was confirmed")
        await asyncio.to_thread(rabbit_cluster.ctl, nodes[2], "start_app")  # nodes 2 and 3: a majority again
        refused = await _publish_audited_until_confirmed(bus, key_requested(2), timeout=60)
        await _publish_audited_until_confirmed(bus, key_requested(3), timeout=5)
        print(f"audit publish resumed after {refused} refused attempts")
    finally:
        await asyncio.to_thread(rabbit_cluster.restart, nodes[0])
        await bus.destroy()
        await bus.close()
