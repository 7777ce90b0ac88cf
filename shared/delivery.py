"""Consumer semantics shared by both buses: decode, dead-letter, handle, then ack.

Written once so the RabbitMQ bus and the in-memory bus cannot drift apart: a malformed
message is dead-lettered with its reason and the consumer goes on; a handler failure is
requeued (the queue's delivery limit dead-letters a poison message); a message is acked
only after its handler's durable effect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from .events import Event, MalformedEvent, decode_event

log = structlog.get_logger("strongroom.bus")

Handler = Callable[[Event], Awaitable[None]]
BatchHandler = Callable[[Sequence[Event]], Awaitable[None]]


class Delivery(Protocol):
    body: bytes
    routing_key: str

    async def ack(self) -> None: ...
    async def ack_through(self) -> None:
        """Acknowledge this delivery and every earlier one of its consumer (one frame for a batch)."""
        ...
    async def requeue(self) -> None: ...
    async def dead_letter(self, reason: str) -> None: ...


async def _decode_or_dead_letter(delivery: Delivery) -> Event | None:
    try:
        return decode_event(delivery.body)
    except MalformedEvent as exc:
        reason = f"malformed event: {exc}"
        log.warning("message_dead_lettered", routing_key=delivery.routing_key, reason=reason)
        await delivery.dead_letter(reason)
        return None


async def handle_one(delivery: Delivery, handler: Handler) -> None:
    event = await _decode_or_dead_letter(delivery)
    if event is None:
        return
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        correlation_id=event.correlation_id, event_id=event.event_id, event_type=event.type, tenant_id=event.tenant_id
    )
    try:
        await handler(event)
    except asyncio.CancelledError:
        await delivery.requeue()
        raise
    except Exception:
        log.exception("handler_failed")
        await delivery.requeue()
        return
    await delivery.ack()


class Batcher:
    """Collects deliveries into batches (by count or by wait) for one batch handler."""

    def __init__(self, handler: BatchHandler, *, max_batch: int, max_wait: float):
        self._handler = handler
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._pending: asyncio.Queue[Delivery] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def put(self, delivery: Delivery) -> None:
        self._pending.put_nowait(delivery)

    async def _run(self) -> None:
        while True:
            batch = [await self._pending.get()]
            deadline = asyncio.get_running_loop().time() + self._max_wait
            while len(batch) < self._max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0 and self._pending.empty():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._pending.get(), max(timeout, 0)))
                except TimeoutError:
                    break
            await self._flush(batch)

    async def _flush(self, batch: list[Delivery]) -> None:
        good: list[tuple[Delivery, Event]] = []
        for delivery in batch:
            event = await _decode_or_dead_letter(delivery)
            if event is not None:
                good.append((delivery, event))
        if not good:
            return
        try:
            await self._handler([e for _, e in good])
        except asyncio.CancelledError:
            for delivery, _ in good:
                await delivery.requeue()
            raise
        except Exception:
            log.exception("batch_handler_failed", size=len(good))
            for delivery, _ in good:
                await delivery.requeue()
            return
        # Batches are taken in delivery order and every earlier delivery is already settled, so one
        # cumulative ack settles the batch.
        await good[-1][0].ack_through()
