"""Consumer semantics shared by both buses: decode, dead-letter, handle, then ack.

Written once so the RabbitMQ bus and the in-memory bus cannot drift apart: a malformed
message is dead-lettered with its reason and the consumer goes on; a handler failure is
requeued (the queue's delivery limit dead-letters a poison message); a message is acked
only after its handler's durable effect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from .events import Event, MalformedEvent, decode_event
from .service import stop_if_cancelled
from .store import STORE_UNAVAILABLE

log = structlog.get_logger("strongroom.bus")

class Unavailable(Exception):
    """Raised by a handler when a dependency is away for now (the broker failing over)."""


# A handler failing with one of these is retried in place, its message held, with a growing pause,
# for up to about RETRY_IN_PLACE_SECONDS, and only then requeued: a broker failover or a store
# restart lasting seconds would otherwise spin every held message through its queue's delivery
# limit (each requeue counts) and dead-letter events that were never poison.
TRANSIENT: tuple[type[BaseException], ...] = (Unavailable, *STORE_UNAVAILABLE)
RETRY_IN_PLACE_SECONDS = 60.0
_MAX_PAUSE_SECONDS = 2.0

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
        await _settle(lambda: delivery.dead_letter(reason), "dead_letter")
        return None


async def handle_one(delivery: Delivery, handler: Handler) -> None:
    event = await _decode_or_dead_letter(delivery)
    if event is None:
        return
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        correlation_id=event.correlation_id, event_id=event.event_id, event_type=event.type, tenant_id=event.tenant_id
    )
    waited, pause = 0.0, 0.1
    while True:
        try:
            await handler(event)
            break
        except asyncio.CancelledError:
            await _settle(delivery.requeue, "requeue")
            raise
        except TRANSIENT as exc:
            if waited >= RETRY_IN_PLACE_SECONDS:
                log.warning("handler_gave_up_retrying", error=type(exc).__name__, waited=round(waited, 1))
                await _settle(delivery.requeue, "requeue")
                return
            log.warning("handler_retrying", error=type(exc).__name__, in_seconds=pause)
            await asyncio.sleep(pause)
            waited, pause = waited + pause, min(_MAX_PAUSE_SECONDS, pause * 2)
        except Exception:
            log.exception("handler_failed")
            await _settle(delivery.requeue, "requeue")
            return
    await _settle(delivery.ack, "ack")


async def _settle(step: Callable[[], Awaitable[None]], what: str, size: int = 1) -> bool:
    """Ack or requeue; False if the channel it came on is gone.

    A delivery's channel can close under it (a broker restart, a closed connection): the broker
    has then requeued every unacknowledged delivery of that channel, and redelivers them on the
    new one, where handlers' idempotency by event id absorbs the repeat. So a failed ack or
    requeue is logged and the consumer goes on; it must never end a consumer's loop.
    """
    try:
        await step()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("delivery_settle_failed", step=what, size=size, error=type(exc).__name__)
        return False
    return True


Commit = Callable[[], Awaitable[None]]


class StagedBatchHandler(Protocol):
    """A batch handler in two steps, so that the next batch is prepared while this one is written.

    `prepare` does the work that needs no durable effect (decoding, deduplication, hashing) and
    returns the write; writes run one at a time, in batch order. A prepared batch may build on
    the one still being written (a chain's head, say): if that write fails, the Batcher requeues
    both and calls `abandon`, which must drop whatever state the unwritten batches left behind.
    """

    async def prepare(self, events: Sequence[Event]) -> Commit: ...
    def abandon(self) -> None: ...


class _OneStep:
    """A plain batch handler as a staged one: all of its work is the write."""

    def __init__(self, handler: BatchHandler):
        self._handler = handler

    async def prepare(self, events: Sequence[Event]) -> Commit:
        return lambda: self._handler(events)

    def abandon(self) -> None:
        pass


class Batcher:
    """Collects deliveries into batches (by count or by wait) for one batch handler.

    With a staged handler, batch N+1 is collected and prepared while batch N is written, so the
    handler's CPU work and the store's overlap; at most one write is in flight, and acks follow
    batch order.
    """

    def __init__(self, handler: BatchHandler | StagedBatchHandler, *, max_batch: int, max_wait: float):
        self._handler: StagedBatchHandler = handler if hasattr(handler, "prepare") else _OneStep(handler)  # type: ignore[arg-type]
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._pending: asyncio.Queue[Delivery] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[bool] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for task in (self._task, self._writing):
            if task:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def put(self, delivery: Delivery) -> None:
        self._pending.put_nowait(delivery)

    async def _collect(self) -> list[Delivery]:
        batch = [await self._pending.get()]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._max_wait):  # one timer for the batch, not one per delivery
                while len(batch) < self._max_batch:
                    # what has arrived is taken without suspending
                    batch.append(self._pending.get_nowait() if not self._pending.empty() else await self._pending.get())
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._handle(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop is the consumer: it logs and goes on, never ends silently
                stop_if_cancelled()
                log.exception("batch_loop_failed", size=len(batch))

    async def _handle(self, batch: list[Delivery]) -> None:
        if self._writing is not None and self._writing.done():
            await self._settle_write()  # a failed write is abandoned before anything builds on it
        good: list[tuple[Delivery, Event]] = []
        for delivery in batch:
            event = await _decode_or_dead_letter(delivery)
            if event is not None:
                good.append((delivery, event))
        if not good:
            return
        try:
            commit = await self._handler.prepare([e for _, e in good])
            written = await self._settle_write()  # never raises: a failed write returns False
        except asyncio.CancelledError:
            await _requeue(good)
            raise
        except Exception:
            log.exception("batch_handler_failed", size=len(good), step="prepare")
            await _requeue(good)
            await self._settle_write()
            self._handler.abandon()
            return
        if not written:
            await _requeue(good)  # it was prepared on top of the write that failed
            return
        self._writing = asyncio.create_task(self._write(good, commit))

    async def _settle_write(self) -> bool:
        """Wait for the write in flight; False (after abandoning the handler's state) if it failed."""
        writing, self._writing = self._writing, None
        if writing is None or await writing:
            return True
        self._handler.abandon()
        return False

    async def _write(self, good: list[tuple[Delivery, Event]], commit: Commit) -> bool:
        try:
            await commit()
        except asyncio.CancelledError:
            await _requeue(good)
            raise
        except Exception:
            log.exception("batch_handler_failed", size=len(good), step="write")
            await _requeue(good)
            return False
        # Writes run in batch order and every earlier delivery is already settled, so one
        # cumulative ack settles the batch. The write is durable whether or not the ack gets
        # through (see _settle), so the batch counts as written either way.
        await _settle(good[-1][0].ack_through, "ack_through", len(good))
        return True


async def _requeue(good: list[tuple[Delivery, Event]]) -> None:
    for delivery, _ in good:
        if not await _settle(delivery.requeue, "requeue", len(good)):
            return  # the channel is gone, and with it every delivery of this batch: all requeued
