"""Is a consumer still making progress? Counted per work queue, so a consumer that silently stops
(a batch loop that ended, a channel whose consumer the broker cancelled, a handler stuck on a
dead dependency) is reported instead of leaving messages to pile up unseen.

A consumer is *stalled* when, for `after` seconds, it has held deliveries without settling any of
them, or its queue has had messages ready while it settled none (the broker stopped feeding it, or
it requeues everything it gets). Pure bookkeeping: the bus feeds
it deliveries and settlements and asks it, on a timer, with the queue's ready count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from .delivery import Delivery
from .service import stop_if_cancelled

log = structlog.get_logger("strongroom.bus")

Clock = Callable[[], float]


@dataclass
class ConsumerProgress:
    queue: str
    clock: Clock = time.monotonic
    _next: int = 0
    _open: set[int] = field(default_factory=set)  # sequence numbers received, not yet settled
    _busy_since: float | None = None
    _last_progress: float = 0.0
    _last_received: float = 0.0
    _ready_since: float | None = None  # first check that saw messages ready, since the last progress
    stalled_for: float | None = None  # seconds without progress, while stalled

    def __post_init__(self) -> None:
        self._last_progress = self._last_received = self.clock()

    @property
    def outstanding(self) -> int:
        return len(self._open)

    def received(self) -> int:
        now = self.clock()
        if not self._open:
            self._busy_since = now
        self._next += 1
        self._open.add(self._next)
        self._last_received = now
        return self._next

    def settled(self, seq: int, *, through: bool = False, progressed: bool = True) -> None:
        """`through`: this delivery and every earlier one (a cumulative ack). A requeue settles
        without progress: the message is back in the queue, not done."""
        if through:
            self._open = {s for s in self._open if s > seq}
        else:
            self._open.discard(seq)
        now = self.clock()
        if progressed:
            self._last_progress = now
            self._ready_since = None
        if not self._open:
            self._busy_since = None

    def check(self, *, ready: int | None, after: float) -> tuple[bool, bool]:
        """(stalled now, changed since the last check)."""
        now = self.clock()
        if not ready:
            self._ready_since = None
        elif self._ready_since is None:
            self._ready_since = now
        idle: float | None = None
        if self._open and self._busy_since is not None:
            idle = now - max(self._last_progress, self._busy_since)
        elif self._ready_since is not None:
            # Ready messages that none of its deliveries settled: not fed, or every one requeued.
            idle = now - max(self._last_progress, self._ready_since)
        stalled = idle is not None and idle >= after
        changed = stalled != (self.stalled_for is not None)
        self.stalled_for = idle if stalled else None
        return stalled, changed


class Tracked:
    """A delivery whose settlement is counted in its consumer's progress. A settlement that fails
    (its channel is gone, so the broker has requeued the message) still ends this delivery here,
    without progress: its redelivery arrives as a new one."""

    def __init__(self, inner: Delivery, progress: ConsumerProgress):
        self._inner = inner
        self._progress = progress
        self._seq = progress.received()
        self.body = inner.body
        self.routing_key = inner.routing_key

    async def _settle(self, step: Callable[[], Awaitable[None]], *, through: bool = False, done: bool = True) -> None:
        try:
            await step()
        except BaseException:
            self._progress.settled(self._seq, through=through, progressed=False)
            raise
        self._progress.settled(self._seq, through=through, progressed=done)

    async def ack(self) -> None:
        await self._settle(self._inner.ack)

    async def ack_through(self) -> None:
        await self._settle(self._inner.ack_through, through=True)

    async def requeue(self) -> None:
        await self._settle(self._inner.requeue, done=False)

    async def dead_letter(self, reason: str) -> None:
        await self._settle(lambda: self._inner.dead_letter(reason))


class ProgressWatch:
    """A bus's work-queue consumers, checked every few seconds: a consumer that stops making
    progress is logged once as `consumer_stalled` (and `consumer_resumed` when it recovers) and
    listed by `stalled()`, which readiness reports."""

    def __init__(self, *, after: float = 60.0, clock: Clock = time.monotonic):
        self.after = after
        self._clock = clock
        self._consumers: dict[str, ConsumerProgress] = {}

    def track(self, queue: str) -> ConsumerProgress:
        return self._consumers.setdefault(queue, ConsumerProgress(queue, clock=self._clock))

    def stalled(self) -> list[str]:
        return sorted(q for q, p in self._consumers.items() if p.stalled_for is not None)

    async def check(self, ready: Callable[[str], Awaitable[int | None]]) -> None:
        for queue, progress in list(self._consumers.items()):
            stalled, changed = progress.check(ready=await ready(queue), after=self.after)
            if stalled and changed:
                log.error("consumer_stalled", queue=queue, outstanding=progress.outstanding,
                          seconds_without_progress=round(progress.stalled_for or 0.0, 1))
            elif changed:
                log.info("consumer_resumed", queue=queue)

    async def run(self, ready: Callable[[str], Awaitable[int | None]]) -> None:
        """The watchdog loop (a task of the bus): never ends but by cancellation."""
        while True:
            await asyncio.sleep(max(0.2, self.after / 4))
            try:
                await self.check(ready)
            except asyncio.CancelledError:
                raise
            except Exception:
                stop_if_cancelled()
                log.exception("progress_check_failed")
