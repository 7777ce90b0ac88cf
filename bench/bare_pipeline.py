"""The ceiling a release is measured against: a bare three-hop aio-pika pipeline, nothing else.

A driver process keeps N messages in flight (as N agents keep N requests): it publishes each to
the first queue and waits for it to come back from the last. Two hop processes each consume one
queue and publish to the next, acking after the confirmed publish, as the services do. Same
broker, quorum queues, persistent messages, publisher confirms, manual acks; no store, no
crypto, no decoding. A release makes three such hops (key.requested, key.decided, key.released),
so `releases/s / bare msg/s` at the same concurrency is the share of the ceiling it reaches.

Run alone: python bench/bare_pipeline.py [--inflight 8,32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
from procstat import cpu_seconds, listening_pid
from yarl import URL

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
HOPS = 3  # queues: driver -> q0 -> hop -> q1 -> hop -> q2 -> driver
QUORUM = {"x-queue-type": "quorum"}


def _queue(prefix: str, n: int) -> str:
    return f"{prefix}bare.q{n}"


async def _declare(channel: aio_pika.abc.AbstractChannel, prefix: str) -> None:
    for n in range(HOPS):
        await channel.declare_queue(_queue(prefix, n), durable=True, arguments=QUORUM)


async def hop(url: str, prefix: str, source: int) -> None:
    """Consume queue `source`, publish each message (confirmed) to the next, then ack it."""
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=64)
    await _declare(channel, prefix)
    queue = await channel.get_queue(_queue(prefix, source))
    target = _queue(prefix, source + 1)

    async def forward(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await channel.default_exchange.publish(
            aio_pika.Message(message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             correlation_id=message.correlation_id), routing_key=target, mandatory=True)
        await message.ack()

    await queue.consume(forward)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
    await connection.close()


async def drive(url: str, prefix: str, inflight: int, seconds: float) -> dict[str, Any]:
    """N closed loops through the pipeline; messages per second and latency percentiles."""
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=256)
    await _declare(channel, prefix)
    waiting: dict[str, asyncio.Future[None]] = {}

    async def back(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = waiting.pop(message.correlation_id or "", None)
        if future is not None:
            future.set_result(None)
        await message.ack()

    await (await channel.get_queue(_queue(prefix, HOPS - 1))).consume(back)
    latencies: list[float] = []
    body = b"x" * 600  # about a key.requested's size

    async def loop(deadline: float) -> None:
        while time.perf_counter() < deadline:
            sent, cid = time.perf_counter(), uuid.uuid4().hex
            waiting[cid] = asyncio.get_running_loop().create_future()
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, correlation_id=cid),
                routing_key=_queue(prefix, 0), mandatory=True)
            await waiting[cid] if cid in waiting else None
            latencies.append(time.perf_counter() - sent)

    await asyncio.gather(*(loop(time.perf_counter() + 1.0) for _ in range(inflight)))  # warm-up
    latencies.clear()
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(loop(started + seconds) for _ in range(inflight)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await connection.close()
    ms = sorted(v * 1000 for v in latencies)
    return {"inflight": inflight, "rate": len(ms) / elapsed, "messages": len(ms), "driver_cpu": cpu,
            "p50_ms": ms[len(ms) // 2] if ms else None,
            "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else None}


class BarePipeline:
    """The two hop processes, started once per bench run; `measure` runs a driver process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"bench{uuid.uuid4().hex[:10]}_"
        self.hops: list[asyncio.subprocess.Process] = []
        # The broker's CPU per message, when it runs here (it serves every client, so keep it quiet).
        broker = URL(url.split(",")[0])
        self.broker_pid = listening_pid(broker.port or 5672) if broker.host in ("127.0.0.1", "localhost") else None

    async def _child(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

    async def start(self) -> BarePipeline:
        for source in range(HOPS - 1):
            process = await self._child("--hop", str(source), "--amqp-url", self.url, "--prefix", self.prefix)
            assert process.stdout is not None
            if (await process.stdout.readline()).strip() != b"ready":
                raise SystemExit("bare pipeline hop failed to start")
            self.hops.append(process)
        return self

    async def measure(self, inflight: int, seconds: float) -> dict[str, Any]:
        """Messages per second through all three hops, and the client processes' CPU per message
        (driver and hops, from /proc; the broker is shared, so its CPU is not counted)."""
        process = await self._child("--drive", str(inflight), "--seconds", str(seconds), "--amqp-url", self.url,
                                    "--prefix", self.prefix)
        hops_before, broker_before = sum(cpu_seconds(p.pid) for p in self.hops), cpu_seconds(self.broker_pid)
        out, _ = await process.communicate()
        result = json.loads(out.decode().strip().splitlines()[-1])
        # The hops' (and the broker's) CPU also covers the driver's 1 s warm-up: scaled to the measured part.
        share = seconds / (seconds + 1.0)
        hops = sum(cpu_seconds(p.pid) for p in self.hops) - hops_before
        result["cpu_ms_per_msg"] = (hops * share + result["driver_cpu"]) * 1000 / max(result["messages"], 1)
        result["broker_cpu_ms_per_msg"] = ((cpu_seconds(self.broker_pid) - broker_before) * share * 1000
                                           / max(result["messages"], 1)) if self.broker_pid else None
        return result

    async def stop(self) -> None:
        for process in self.hops:
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
        connection = await aio_pika.connect_robust(self.url)
        channel = await connection.channel()
        for n in range(HOPS):
            await channel.queue_delete(_queue(self.prefix, n))
        await connection.close()


async def _main(args: argparse.Namespace) -> None:
    if args.hop is not None:
        await hop(args.amqp_url, args.prefix, args.hop)
    elif args.drive is not None:
        print(json.dumps(await drive(args.amqp_url, args.prefix, args.drive, args.seconds)))
    else:
        pipeline = await BarePipeline(args.amqp_url).start()
        try:
            for inflight in (int(n) for n in args.inflight.split(",")):
                r = await pipeline.measure(inflight, args.seconds)
                print(f"{inflight:>4} in flight: {r['rate']:.0f} msg/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                      f"client CPU {r['cpu_ms_per_msg']:.2f} ms/msg"
                      + ("" if r["broker_cpu_ms_per_msg"] is None else f", broker CPU {r['broker_cpu_ms_per_msg']:.2f} ms/msg"))
        finally:
            await pipeline.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inflight", default="8,32")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--hop", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--drive", type=int, default=None, help=argparse.SUPPRESS)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
