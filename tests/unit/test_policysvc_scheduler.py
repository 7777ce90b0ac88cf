"""policysvc's scheduler sweeps when a deadline falls due or one earlier than its next sweep appears:
a heartbeat, which only moves its device's deadline later, does not make it sweep."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from services.policysvc.scheduler import Scheduler


async def _until(condition, what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never: {what}")


async def test_only_a_deadline_before_the_next_sweep_wakes_the_scheduler():
    sweeps: list[datetime] = []
    hold = asyncio.Event()
    hold.set()

    async def sweep(now: datetime) -> datetime:
        sweeps.append(now)
        await hold.wait()
        return now + timedelta(hours=1)

    scheduler = Scheduler(sweep, max_sleep=3600)
    running = asyncio.create_task(scheduler.run())
    try:
        await _until(lambda: scheduler._next is not None, "the first sweep ended")
        now = datetime.now(UTC)
        scheduler.wake(now + timedelta(hours=2))  # a heartbeat's new deadline, after the next sweep
        assert not scheduler._wake.is_set()
        hold.clear()
        scheduler.wake(now + timedelta(minutes=5))  # a deadline before it: sweep now
        await _until(lambda: len(sweeps) == 2, "a second sweep")
        assert scheduler._next is None  # sweeping: what it reads may predate any new deadline...
        scheduler.wake(now + timedelta(hours=2))
        assert scheduler._wake.is_set()  # ...so any deadline makes it sweep again
        hold.set()
        await _until(lambda: len(sweeps) == 3, "a third sweep")
        await _until(lambda: scheduler._next is not None, "the third sweep ended")
        scheduler.wake()  # a deadline not given (an approval opened): sweep
        assert scheduler._wake.is_set()
        await _until(lambda: len(sweeps) == 4, "a fourth sweep")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
