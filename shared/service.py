"""What every service's `app.py` returns: something running that can be stopped cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

# How long a stopping service waits for a cancelled task before cancelling it again.
RECANCEL_SECONDS = 1.0


@dataclass
class Running:
    name: str
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Its liveness, readiness and metrics (`shared/observability.py`'s Probe), and where its
    # listener serves them (None when no health port is set).
    probe: Any = None
    health_url: str | None = None

    async def stop(self) -> None:
        """Cancel every background task and wait for each to end. A task still running a moment
        after its cancel is cancelled again: a library can swallow a cancellation outright (PyMongo
        was seen to, in a store call of keysvc's root-following loop, which then slept on as if
        nothing had happened and held the stop for ever)."""
        for task in self.tasks:
            task.cancel()
        running = {task for task in self.tasks if not task.done()}
        while running:
            _, running = await asyncio.wait(running, timeout=RECANCEL_SECONDS)
            for task in running:
                task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for callback in reversed(self.on_stop):
            await callback()


def stop_if_cancelled() -> None:
    """Re-raise a stop that a library turned into an error of its own: a background loop's
    `except Exception` (log and go on) would otherwise swallow it and the service would never stop.
    (PyMongo closes a connection cut by a cancellation and may report the close, not the cancel,
    when its server is gone.) Call it first in such a loop's handler."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
