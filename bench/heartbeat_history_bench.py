"""What one heartbeat costs policysvc and the store as a device's decision history grows.

Run: python bench/heartbeat_history_bench.py [--history 0,100,2000] [--beats 50]

policysvc's heartbeat handler over the embedded store (its own process): a device is released two
keys, then gains ``history`` more decisions on each (half allowed, half waiting for approval),
written straight to the decisions collection as the decide path records them; then it sends
``beats`` heartbeats in turn. Prints, per history size, the mean wall time, this process's CPU and
the store's CPU per heartbeat, and the store commands per heartbeat by collection. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from procstat import cpu_seconds as process_cpu_seconds
from pymongo import AsyncMongoClient, monitoring
from release_bench import cpu_seconds

from services.policysvc.store import PolicyStore
from shared.embedded_mongo import EmbeddedMongo
from shared.store import service_database
from tests.unit.policysvc_world import EU_FACTS, TENANT, World, eu_rule, policy

KEYS = ("key_1", "key_2")


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def started(self, event: Any) -> None:
        self.counts[f"{event.command_name} {event.command.get(event.command_name)}"] += 1

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


async def grow_history(store: PolicyStore, device_id: str, decisions: int) -> None:
    """``decisions`` more per key, newer than the release, copied from the real releasing decision."""
    for key_id in KEYS:
        released = (await store.decisions.find(TENANT, {"device_id": device_id, "key_id": key_id}))[0]
        docs = []
        for i in range(decisions):
            doc = {k: v for k, v in released.items() if k != "_id"}
            doc.update(request_id=f"req_{device_id}_{key_id}_{i}", decided_at=released["decided_at"] + timedelta(
                milliseconds=i + 1), effect="allow" if i % 2 else "require_approval")
            docs.append(doc)
        for start in range(0, len(docs), 500):
            await store.decisions.insert_many(TENANT, docs[start:start + 500])


async def measure(store: PolicyStore, commands: Commands, store_pid: int, history: int, beats: int) -> dict[str, Any]:
    world = World(store)
    store.published = []
    await world.put_policy(policy(f"eu-{history}", eu_rule()))
    device_id = f"dev_{history}"
    await world.enroll(device_id)
    for key_id in KEYS:
        assert (await world.ask(device_id, key_id, request_id=f"req_{device_id}_{key_id}")).effect == "allow"
    await grow_history(store, device_id, history)
    await world.heartbeat(device_id, EU_FACTS)  # caches warm
    commands.counts = Counter()
    cpu, store_cpu, started = cpu_seconds(), process_cpu_seconds(store_pid), time.perf_counter()
    for _ in range(beats):
        assert (await world.heartbeat(device_id, EU_FACTS)).status == "active"
    return {"history": history, "wall_ms": (time.perf_counter() - started) * 1000 / beats,
            "cpu_ms": (cpu_seconds() - cpu) * 1000 / beats,
            "store_cpu_ms": (process_cpu_seconds(store_pid) - store_cpu) * 1000 / beats,
            "commands": {k: v / beats for k, v in sorted(commands.counts.items())}}


async def run(args: argparse.Namespace) -> None:
    mongo = EmbeddedMongo(":memory:").start()
    commands = Commands()
    client = AsyncMongoClient(mongo.url, tz_aware=True, event_listeners=[commands])

    async def publish(event: Any) -> None:
        pass

    try:
        store = PolicyStore(service_database(client, "policysvc", prefix="hbbench_"), publish=publish)
        await store.create_indexes()
        print(f"{'history':>8} {'wall ms':>8} {'policysvc CPU ms':>16} {'store CPU ms':>12}  store commands per heartbeat")
        for history in (int(n) for n in args.history.split(",")):
            r = await measure(store, commands, mongo.pid, history, args.beats)
            print(f"{r['history']:>8} {r['wall_ms']:>8.2f} {r['cpu_ms']:>16.2f} {r['store_cpu_ms']:>12.2f}  "
                  + ", ".join(f"{k} {v:.2f}" for k, v in r["commands"].items()))
    finally:
        await client.close()
        mongo.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", default="0,100,2000", help="decisions per key before the heartbeats")
    parser.add_argument("--beats", type=int, default=50)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
