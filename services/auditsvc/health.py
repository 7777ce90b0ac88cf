"""auditsvc's readiness and metrics beyond every service's: how far audit ingestion and the
forwarders are behind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pymongo import AsyncMongoClient

from shared.bus import Bus
from shared.observability import REFRESH_TIMEOUT_SECONDS, Probe, observe

from .forwarder_pool import ForwarderPool
from .handlers import IngestStats
from .settings import AuditSettings


def audit_lag(depth: int | None, stats: IngestStats, *, since: datetime, now: datetime) -> float:
    """Seconds ingestion is behind: none while nothing waits in the queue; otherwise the longer of
    how old the last batch's oldest event was and how long ago a batch was last taken (a stuck
    ingestor takes none, so the lag keeps growing). `since` stands for the last batch before the first."""
    if not depth:
        return 0.0
    taken = stats.last_at or since
    return max(stats.last_lag_seconds, (now - taken).total_seconds())


def probe(settings: AuditSettings, *, bus: Bus, client: AsyncMongoClient, stats: IngestStats,
          pool: ForwarderPool) -> Probe:
    found = observe("auditsvc", settings, bus=bus, client=client)
    started = datetime.now(UTC)
    lag_gauge = found.metrics.gauge("strongroom_audit_lag_seconds", "How long audit records have waited to be "
                                    "stored (0 while none waits)")
    found.metrics.gauge("strongroom_forwarder_lag_seconds", "Age of the oldest record a running forwarder has "
                        "not yet delivered (the largest over forwarders)", lambda: max(pool.behind.values(), default=0.0))

    async def lag() -> float:
        try:
            depth = await asyncio.wait_for(bus.queue_depth("auditsvc"), REFRESH_TIMEOUT_SECONDS)
        except TimeoutError:
            depth = None  # the broker check says so
        seconds = audit_lag(depth, stats, since=started, now=datetime.now(UTC))
        lag_gauge.set(seconds)
        return seconds

    async def refresh() -> None:
        await lag()

    async def within_limit() -> str | None:
        seconds, limit = await lag(), settings.ready_max_lag_seconds
        if seconds > limit:
            return f"audit records have waited {seconds:.0f} s to be stored (limit {limit:g} s)"
        return None

    found.metrics.refreshers.append(refresh)
    found.checks["audit_lag"] = within_limit
    return found
