"""Load shedding on queue depth: when a service behind the release path has more waiting than it
can work off, the gateway refuses new key requests (503 + Retry-After) instead of queueing more.

The depths are read from the broker in the background, every `refresh_seconds`, and kept here:
a request reads the cached figure, never the broker (a storm of requests must not become a
storm of queue declarations). A depth that cannot be read (the broker away) is not a reason to
refuse: publishing then fails on its own, with its own 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from shared import topology
from shared.rpc import ProblemError

log = structlog.get_logger("strongroom.gateway")

# The work queues a key request adds to: decision, release, and the records of both.
RELEASE_PATH = (topology.POLICY_SERVICE, topology.KEY_SERVICE, topology.AUDIT_SERVICE)


class Backlog:
    def __init__(self, depth: Callable[[str], Awaitable[int | None]], *, limit: int, refresh_seconds: float,
                 services: Sequence[str] = RELEASE_PATH):
        self._depth, self.limit, self.refresh_seconds = depth, limit, refresh_seconds
        self._services = tuple(services)
        self.depths: dict[str, int | None] = dict.fromkeys(self._services)

    def over_limit(self) -> str | None:
        """The first service whose queue was deeper than the limit at the last reading, if any."""
        if self.limit <= 0:
            return None
        return next((s for s, d in self.depths.items() if d is not None and d > self.limit), None)

    async def refresh(self) -> None:
        for service in self._services:
            depth = await self._depth(service)
            was_over = (self.depths[service] or 0) > self.limit
            self.depths[service] = depth
            if self.limit > 0 and (depth is not None and depth > self.limit) != was_over and depth is not None:
                log.warning("backlog_shedding" if depth > self.limit else "backlog_cleared",
                            service=service, depth=depth, limit=self.limit)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a bad reading must not end the refresher: requests keep the last figures
                log.exception("backlog_refresh_failed")
            await asyncio.sleep(self.refresh_seconds)


class Overloaded(ProblemError):
    """503 + Retry-After: a queue on the release path is over its limit; nothing was queued."""

    def __init__(self, retry_after: int):
        super().__init__(503, "Service Unavailable", "too much work is waiting; retry later")
        self.headers = {"Retry-After": str(retry_after)}
