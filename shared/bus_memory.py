"""An in-process bus with RabbitMQ's semantics, for `strongroom dev`.

Same interface and same contract tests as `RabbitBus`: topic routing with `*` and `#`,
per-service work queues that hold messages while nobody consumes, ack/requeue with a
delivery limit, dead-lettering with a reason, request/reply with a deadline. It keeps
nothing across restarts; the dev stack's durable state lives in the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import rpc, topology
from .bus import BusError, BusTimeout, DeadLetter, RpcHandler
from .bus_listen import MemoryListening
from .delivery import Batcher, BatchHandler, Handler, StagedBatchHandler, handle_one
from .events import Event, encode_event
from .progress import ProgressWatch, Tracked
from .topics import topic_matches


@dataclass
class _Message:
    routing_key: str
    body: bytes
    deliveries: int = 0


@dataclass
class _Queue:
    name: str
    patterns: tuple[str, ...]
    items: asyncio.Queue[_Message] = field(default_factory=asyncio.Queue)
    consumers: list[asyncio.Task[None]] = field(default_factory=list)


class _MemoryDelivery:
    def __init__(self, bus: MemoryBus, queue: _Queue, message: _Message):
        self._bus = bus
        self._queue = queue
        self._message = message
        self.body = message.body
        self.routing_key = message.routing_key

    async def ack(self) -> None:
        pass

    async def ack_through(self) -> None:
        pass

    async def requeue(self) -> None:
        if self._message.deliveries >= topology.DELIVERY_LIMIT:
            await self.dead_letter("broker: delivery_limit")
        else:
            self._queue.items.put_nowait(self._message)

    async def dead_letter(self, reason: str) -> None:
        self._bus._dead.append(DeadLetter(self.routing_key, reason, self.body))


class MemoryBus:
    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._dead: list[DeadLetter] = []
        self._rpc: dict[str, RpcHandler] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._batchers: list[Batcher] = []
        self._closed = False
        self._progress = ProgressWatch()

    def stalled(self) -> list[str]:
        return self._progress.stalled()

    def _track(self, service: str):
        if not any(t.get_name() == "progress-watch" for t in self._tasks):
            self._tasks.append(asyncio.create_task(self._progress.run(self.queue_depth), name="progress-watch"))
        return self._progress.track(service)

    def connected(self) -> bool:
        return not self._closed

    async def start(self) -> None:
        for service, patterns in topology.SERVICE_BINDINGS.items():
            self._queue(service, patterns)

    def _queue(self, name: str, patterns: Sequence[str]) -> _Queue:
        if name not in self._queues:
            self._queues[name] = _Queue(name, tuple(patterns))
        return self._queues[name]

    async def close(self) -> None:
        self._closed = True
        for batcher in self._batchers:
            await batcher.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def publish(self, event: Event) -> None:
        if not self._route(event.routing_key, encode_event(event)):
            raise BusError(f"no queue bound for {event.type}")
        await asyncio.sleep(0)

    async def publish_audited(self, event: Event) -> None:
        # One process, unbounded queues: nothing can refuse the audit copy, so one publish suffices.
        await self.publish(event)

    async def queue_depth(self, service: str) -> int | None:
        queue = self._queues.get(service)
        return None if queue is None else queue.items.qsize()

    async def publish_raw(self, routing_key: str, body: bytes) -> None:
        self._route(routing_key, body)

    def _route(self, routing_key: str, body: bytes) -> bool:
        if self._closed:
            raise BusError("bus closed")
        routed = False
        for queue in self._queues.values():
            if any(topic_matches(p, routing_key) for p in queue.patterns):
                queue.items.put_nowait(_Message(routing_key, body))
                routed = True
        return routed

    def _consume(self, queue: _Queue, on_delivery, concurrency: int) -> None:
        async def worker() -> None:
            while True:
                message = await queue.items.get()
                message.deliveries += 1
                await on_delivery(_MemoryDelivery(self, queue, message))

        for _ in range(concurrency):
            self._tasks.append(asyncio.create_task(worker()))

    async def subscribe(self, service: str, handler: Handler, *, prefetch: int = 64) -> None:
        queue = self._queue(service, topology.SERVICE_BINDINGS[service])
        progress = self._track(service)
        self._consume(queue, lambda d: handle_one(Tracked(d, progress), handler), min(prefetch, 16))

    async def subscribe_batch(
        self, service: str, handler: BatchHandler | StagedBatchHandler, *, max_batch: int = 256, max_wait: float = 0.02
    ) -> None:
        queue = self._queue(service, topology.SERVICE_BINDINGS[service])
        batcher = Batcher(handler, max_batch=max_batch, max_wait=max_wait)
        batcher.start()
        self._batchers.append(batcher)

        progress = self._track(service)

        async def put(delivery: _MemoryDelivery) -> None:
            batcher.put(Tracked(delivery, progress))

        self._consume(queue, put, 1)

    async def listen(self, patterns: Sequence[str], handler: Handler) -> MemoryListening:
        queue = self._queue(f"listen.{len(self._queues)}", patterns)
        self._consume(queue, lambda d: handle_one(d, handler), 8)
        return MemoryListening(queue)

    async def serve(self, service: str, handler: RpcHandler) -> None:
        self._rpc[service] = handler

    async def call(self, service: str, request: rpc.RpcRequest, *, timeout: float) -> rpc.RpcReply:
        handler = self._rpc.get(service)
        if handler is None:
            raise BusError(f"no queue bound for rpc {service}.{request.method}")
        # Round-trip through bytes so both buses see exactly the same messages.
        try:
            reply = await asyncio.wait_for(rpc.answer(rpc.encode(request), handler), timeout)
        except TimeoutError:
            raise BusTimeout(f"{service} did not answer within {timeout:g}s") from None
        return rpc.decode_reply(rpc.encode(reply))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        taken, self._dead = self._dead[:limit], self._dead[limit:]
        return taken
