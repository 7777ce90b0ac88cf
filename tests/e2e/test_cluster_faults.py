"""The broker fails under load: the node leading the busiest queues is killed (SIGKILL) in a
three-node cluster of the suite's own, and restarted. Every release completes or is cleanly
refused, every audit record is there exactly once, every chain verifies; the longest stall is printed.

The work queues are quorum queues with a member on each node. Every service is given every node's
URL, node 1 first, and the topology is declared through node 1, so node 1 leads every queue and
carries every service's connection: the kill takes the leaders and all the connections at once,
and each service moves on to node 2 while the queues elect new leaders."""

from __future__ import annotations

import asyncio

import pytest

from shared import topology

from .load import Load


@pytest.fixture(scope="module")
def amqp_url(rabbit_cluster):
    return rabbit_cluster.url


def _shown(node) -> str:
    return node.url.replace(":guest@", ":******@")


def _work_queues(cluster, prefix: str, node=None) -> dict[str, dict]:
    names = {f"{prefix}.{s}": s for s in (*topology.SERVICE_BINDINGS, *map(topology.rpc_queue, topology.RPC_SERVICES))}
    return {names[q["name"]]: q for q in cluster.queues(node) if q["name"] in names}


# A request whose outcome was in flight when the node died is answered 504 at this deadline (the SDK
# reports it; the figures count it as refused) rather than after the default 30 s.
@pytest.mark.stack(gateway={"release_timeout_seconds": 8.0})
async def test_killing_the_leader_node_mid_load_loses_and_duplicates_nothing(api, stack, rabbit_cluster, prefix):
    nodes = rabbit_cluster.nodes
    queues = await asyncio.to_thread(_work_queues, rabbit_cluster, prefix)
    assert set(queues) == {*topology.SERVICE_BINDINGS, *map(topology.rpc_queue, topology.RPC_SERVICES)}
    for queue in queues.values():  # replicated on all three nodes, led from node 1
        assert queue["type"] == "quorum" and sorted(queue["members"]) == sorted(n.name for n in nodes), queue
        assert queue["leader"] == nodes[0].name, queue
    assert all(bus.broker() == _shown(nodes[0]) for bus in stack.buses.values())

    load = await Load.prepare(api)
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop))
    await load.until_confirmed(20)
    await asyncio.to_thread(rabbit_cluster.kill, nodes[0])
    await load.until_confirmed(20)  # served by the surviving majority
    queues = await asyncio.to_thread(_work_queues, rabbit_cluster, prefix, nodes[1])
    assert all(q["leader"] in (nodes[1].name, nodes[2].name) for q in queues.values()), queues
    await asyncio.to_thread(rabbit_cluster.restart, nodes[0])
    await load.until_confirmed(10)
    stop.set()
    await running

    # Every service lost its node and moved on to the next URL in its list.
    assert all(bus.broker() == _shown(nodes[1]) for bus in stack.buses.values())
    await load.check_audit(api, stack, "leader node killed")
