"""keysvc's background jobs (due destructions, automatic rotation, KEK re-wrapping) run by whichever
instance holds the scheduler lease.

The lease is one document per job name; taking or renewing it is a compare-and-swap on its
`version` field, so with several keysvc instances exactly one runs the jobs at a time, and a
crashed holder's lease is taken over once it expires. Each job is itself restartable (its
state lives in the store) and every write it makes is a compare-and-swap, so a tick cut short
by a crash is simply resumed by the next holder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog

from shared.events import new_id
from shared.service import stop_if_cancelled

from .store_root import RootQueries

log = structlog.get_logger("strongroom.keysvc")


class Lease:
    def __init__(self, store: RootQueries, name: str, *, seconds: float, holder: str | None = None):
        self._store = store
        self.name = name
        self.holder = holder or new_id("keysvc-")
        self._seconds = seconds

    async def acquire(self) -> bool:
        """Take or renew the lease; False when another live holder has it (or won the race)."""
        now = datetime.now(UTC)
        expires_at = now + timedelta(seconds=self._seconds)
        doc = await self._store.find_lease(self.name)
        if doc is None:
            return await self._store.insert_lease(self.name, self.holder, expires_at)
        if doc["holder"] != self.holder and doc["expires_at"] > now:
            return False
        return await self._store.claim_lease(self.name, doc["version"], self.holder, expires_at)

    async def release(self) -> None:
        """Give the lease up at a clean stop so another instance need not wait for it to expire."""
        doc = await self._store.find_lease(self.name)
        if doc is not None and doc["holder"] == self.holder:
            await self._store.expire_lease(self.name, doc["version"], datetime.now(UTC))


Job = Callable[[], Awaitable[int]]


async def run(lease: Lease, jobs: dict[str, Job], *, interval: float) -> None:
    """Every `interval`, if this instance holds the lease, run each job; a busy job repeats at once."""
    while True:
        busy = False
        try:
            if await lease.acquire():
                for name, job in jobs.items():
                    try:
                        if await job():
                            busy = True
                    except Exception:
                        stop_if_cancelled()
                        log.exception("scheduler_job_failed", job=name)
        except Exception:
            stop_if_cancelled()
            log.exception("scheduler_lease_failed")
        await asyncio.sleep(0 if busy else interval)
