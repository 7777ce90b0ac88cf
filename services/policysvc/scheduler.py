"""policysvc's scheduler: expires overdue approvals and quarantines devices whose heartbeats stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog

from shared import events
from shared.service import stop_if_cancelled

from . import posture
from .cache import TargetCache
from .handlers_approvals import expire_approval
from .handlers_posture import quarantine
from .store import PolicyStore

log = structlog.get_logger("strongroom.policysvc")


async def sweep(now: datetime, *, store: PolicyStore, targets: TargetCache) -> datetime | None:
    """Expires overdue approvals and quarantines silent devices; returns when the next one falls due.
    State lives in the store, so a restarted service picks up exactly where the last one stopped."""
    for doc in await store.overdue_approvals(now):
        await expire_approval(doc, store=store)
    for doc in await store.silent_devices(now):
        await quarantine(
            doc["tenant_id"], doc["device_id"], cause="heartbeat_missed", key_ids=tuple(doc.get("released_keys", [])),
            reasons=posture.silence_reasons(doc["last_heartbeat_at"]), correlation_id=events.new_id(), source_ip=None,
            store=store, targets=targets, heartbeat_due=doc["heartbeat_due"],
        )
    return await store.next_deadline()


class Scheduler:
    """Sleeps until the next deadline (or a wake-up when a new one is created), then sweeps."""

    def __init__(self, sweep_once: Callable[[datetime], Awaitable[datetime | None]], *, max_sleep: float = 30.0):
        self._sweep = sweep_once
        self._max_sleep = max_sleep
        self._wake: asyncio.Event | None = None
        self._next: datetime | None = None  # when the sleeping scheduler sweeps next; None while it sweeps

    def wake(self, deadline: datetime | None = None) -> None:
        """A new deadline (any, if not given): sweep now, unless the scheduler sleeps only until
        ``deadline`` or less (every heartbeat moves its device's deadline; none needs a sweep of its own)."""
        if self._wake is not None and (deadline is None or self._next is None or deadline < self._next):
            self._wake.set()

    async def run(self) -> None:
        self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            self._next = None
            try:
                due = await self._sweep(datetime.now(UTC))
            except Exception:
                stop_if_cancelled()
                log.exception("sweep_failed")
                due = None
            now = datetime.now(UTC)
            delay = self._max_sleep if due is None else max(0.0, min(self._max_sleep, (due - now).total_seconds()))
            self._next = now + timedelta(seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay + 0.01)
