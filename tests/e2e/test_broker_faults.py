"""The broker fails under load: the node leading the busiest queues is killed (SIGKILL) in a
three-node cluster of the suite's own, and restarted. Every release completes or is cleanly
refused, every audit record is there exactly once, every chain verifies; the longest stall is printed.

The work queues are quorum queues with a member on each node. Each service is given every node's
URL, starting with a different one, the way a deployment spreads its clients over a cluster;
the topology is declared through node 1, so node 1 leads every queue and carries policysvc."""

from __future__ import annotations

import asyncio

import pytest

from shared import topology
from shared.bus import RabbitBus

from .load import Load

FIRST_NODE = {"policysvc": 0, "keysvc": 1, "auditsvc": 2, "gateway": 1}


@pytest.fixture(scope="module")
def amqp_url(rabbit_cluster):
    return rabbit_cluster.url


@pytest.fixture
async def amqp_url_for(rabbit_cluster, prefix):
    nodes = rabbit_cluster.nodes
    bus = RabbitBus(nodes[0].url, prefix=f"{prefix}.")
    await bus.start()  # declares every queue, so each quorum queue's leader starts on node 1
    await bus.close()

    def url_for(service: str) -> str:
        first = FIRST_NODE[service]
        return ",".join(n.url for n in nodes[first:] + nodes[:first])

    return url_for


def _shown(node) -> str:
    return node.url.replace(":guest@", ":******@")


def _work_queues(cluster, prefix: str, node=None) -> dict[str, dict]:
    names = {f"{prefix}.{s}": s for s in (*topology.SERVICE_BINDINGS, *map(topology.rpc_queue, topology.RPC_SERVICES))}
    return {names[q["name"]]: q for q in cluster.queues(node) if q["name"] in names}


async def test_killing_the_leader_node_mid_load_loses_and_duplicates_nothing(api, stack, rabbit_cluster, prefix):
    nodes = rabbit_cluster.nodes
    queues = await asyncio.to_thread(_work_queues, rabbit_cluster, prefix)
    assert set(queues) == {*topology.SERVICE_BINDINGS, *map(topology.rpc_queue, topology.RPC_SERVICES)}
    for name, queue in queues.items():  # replicated on all three nodes; the work queues led from node 1
        assert queue["type"] == "quorum" and sorted(queue["members"]) == sorted(n.name for n in nodes), queue
        assert queue["leader"] == nodes[0].name or name not in topology.SERVICE_BINDINGS, queue
    assert stack.buses["policysvc"].broker() == _shown(nodes[0])

    load = await Load.prepare(api)
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop))
    await load.until_confirmed(20)
    await asyncio.to_thread(rabbit_cluster.kill, nodes[0])
    await load.until_confirmed(20)  # served by the surviving majority
    queues = await asyncio.to_thread(_work_queues, rabbit_cluster, prefix, nodes[1])
    assert all(queues[s]["leader"] in (nodes[1].name, nodes[2].name) for s in topology.SERVICE_BINDINGS), queues
    await asyncio.to_thread(rabbit_cluster.restart, nodes[0])
    await load.until_confirmed(10)
    stop.set()
    await running

    # policysvc lost its node and moved on to the next URL in its list.
    assert stack.buses["policysvc"].broker() == _shown(nodes[1])
    await load.check_audit(api, stack, "leader node killed")
