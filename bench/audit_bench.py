"""Audit figures: ingestion rate through RabbitMQ into the chained store, export rate per format,
and forwarder lag under a steady event rate.

Run: python bench/audit_bench.py [--events 20000] [--tenants 4] [--rate 1000] [--seconds 10]

auditsvc runs alone over RabbitMQ (throwaway prefix, deleted at the end) and the embedded
MongoDB-compatible store in memory (or MONGODB_URL). Ingestion: the events are queued while
auditsvc is stopped, then it starts and drains them: records per second into the chain,
measured until the last record is stored (so the figure is never bound by the publisher, whose
own rate, with confirms, is printed beside it). Export: `export_page` through request/reply, page by
page, per format. Forwarder lag: a syslog forwarder to a local TCP sink while events are
published at --rate per second; lag is the time from publish to arrival at the sink.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.auditsvc import app as auditsvc
from services.auditsvc.settings import AuditSettings
from services.auditsvc.store import AuditStore
from shared import events, rpc, runtime
from shared.bus import RabbitBus
from shared.store import connect, service_database


def _event(tenant: str, i: int) -> events.Event:
    return events.KeyCreated(tenant_id=tenant, key_id=f"key_{i}", name=f"vol-{i}", algorithm="AES-256")


async def _count(store: AuditStore, tenants) -> int:
    """Records stored so far: each fresh tenant's recorded chain head (one small read)."""
    heads = await store.heads.raw.find({"_id": {"$in": list(tenants)}}).to_list(None)
    return sum(h["seq"] for h in heads)


async def run(args: argparse.Namespace) -> None:
    logging.disable(logging.CRITICAL)
    server = None
    url = os.environ.get("MONGODB_URL")
    if url is None:
        from shared.embedded_mongo import EmbeddedMongo

        server = EmbeddedMongo(":memory:").start()
        url = server.url
    client = connect(url)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    db_prefix = f"bench{uuid.uuid4().hex[:8]}_"
    settings = AuditSettings(bus_prefix=prefix, db_prefix=db_prefix, batch_size=args.batch,
                             checkpoint_every_records=10_000, forwarder_poll_seconds=0.05,
                             forwarder_batch_size=500, archive_dir=str(Path("/tmp") / f"{db_prefix}archive"))
    publisher = RabbitBus(args.amqp_url, prefix=prefix)
    await publisher.start()
    store = AuditStore(service_database(client, "auditsvc", prefix=db_prefix))
    tenants = [f"ten_bench{i}" for i in range(args.tenants)]
    try:
        # --- ingestion ------------------------------------------------------------------
        sem = asyncio.Semaphore(1024)  # confirms in flight: the publisher, not the broker, is the limit

        async def publish(e: events.Event) -> None:
            async with sem:
                await publisher.publish(e)

        started = time.perf_counter()
        await asyncio.gather(*(publish(_event(tenants[i % len(tenants)], i)) for i in range(args.events)))
        publish_rate = args.events / (time.perf_counter() - started)
        svc_bus = RabbitBus(args.amqp_url, prefix=prefix)
        await svc_bus.start()
        started = time.perf_counter()
        running = await auditsvc.start(settings, bus=svc_bus, client=client)
        while await _count(store, tenants) < args.events:
            await asyncio.sleep(0.05)
        ingest_seconds = time.perf_counter() - started
        print(f"ingestion: {args.events} events, {args.tenants} tenants, batch {args.batch}: "
              f"{args.events / ingest_seconds:,.0f} records/s into the chain "
              f"(publishing with confirms: {publish_rate:,.0f}/s)")

        # --- export ---------------------------------------------------------------------
        for fmt in ("cef", "leef", "syslog", "jsonl", "records"):
            started, total, after = time.perf_counter(), 0, 0
            while True:
                reply = await publisher.call("auditsvc", rpc.RpcRequest(
                    method="export_page", tenant_id=tenants[0], params={"format": fmt, "after": after, "limit": 1000}),
                    timeout=30)
                page = reply.result
                total += len(page["lines"])
                if page["next"] is None:
                    break
                after = page["next"]
            print(f"export {fmt:7}: {total / (time.perf_counter() - started):,.0f} records/s ({total} records)")

        # --- forwarder lag --------------------------------------------------------------
        arrivals: dict[int, float] = {}

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                try:
                    length = int((await reader.readuntil(b" "))[:-1])
                    message = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ValueError):
                    return
                seq = int(message.split(b' seq="', 1)[1].split(b'"', 1)[0])
                arrivals[seq] = time.perf_counter()

        sink_server = await asyncio.start_server(sink, "127.0.0.1", 0)
        port = sink_server.sockets[0].getsockname()[1]
        lag_tenant = f"ten_lag{secrets.token_hex(4)}"
        reply = await publisher.call("auditsvc", rpc.RpcRequest(
            method="create_forwarder", tenant_id=lag_tenant,
            params={"name": "bench", "kind": "syslog_tcp", "host": "127.0.0.1", "port": port, "format": "syslog"}),
            timeout=10)
        assert reply.problem is None, reply.problem
        sent: list[float] = []
        publishes: list[asyncio.Task] = []  # held until done, so none is collected mid-flight
        interval = 1.0 / args.rate
        start = time.perf_counter()
        for i in range(int(args.rate * args.seconds)):
            target = start + i * interval
            if (delay := target - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            publishes.append(asyncio.create_task(publisher.publish(_event(lag_tenant, i))))
            sent.append(time.perf_counter())
        achieved = len(sent) / (time.perf_counter() - start)
        await asyncio.gather(*publishes)
        deadline = time.perf_counter() + 30
        # seq 1 is the forwarder.created record; event i lands at seq i + 2.
        while len(arrivals) < len(sent) + 1 and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        lags = sorted(arrivals[i + 2] - sent[i] for i in range(len(sent)) if i + 2 in arrivals)
        if lags:
            q = statistics.quantiles(lags, n=100)
            print(f"forwarder lag at {achieved:,.0f} events/s for {args.seconds}s: "
                  f"p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms; "
                  f"{len(lags)}/{len(sent)} arrived")
        sink_server.close()
        await running.stop()
        await svc_bus.close()
    finally:
        await publisher.destroy()
        await publisher.close()
        for name in await client.list_database_names():
            if name.startswith(db_prefix):
                await client.drop_database(name)
        await client.close()
        if server is not None:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--amqp-url", default=os.environ.get("STRONGROOM_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    runtime.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
