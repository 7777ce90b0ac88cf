"""Prometheus metrics: one registry per service, so the four services can share a process
(`strongroom dev`, the tests) and each still exposes only its own figures.

Every metric is declared here, named `strongroom_…`. Labels are bounded vocabularies (event
types, RPC methods, route templates, store commands, reason classes): never a tenant, device or
key id, which would leak who is busy and grow without bound.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pymongo import AsyncMongoClient, monitoring

from .events import Event, KeyDecided, KeyReleased, KeyReleaseRefused

__all__ = ["CONTENT_TYPE", "Metrics", "StoreTimings", "denial_class"]

log = structlog.get_logger("strongroom.metrics")
Publish = Callable[[Event], Awaitable[None]]
Refresh = Callable[[], Awaitable[None]]
# Seconds: from a store round trip (sub-millisecond) to a release that waited for the broker.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OTHER = "other"


def denial_class(decision: KeyDecided) -> str:
    """Why policy denied, as a class an operator can alert on (the words stay in the audit log)."""
    reasons = decision.reasons
    if any(r.startswith("device is quarantined") for r in reasons):
        return "quarantined"
    if any(r.startswith("no policy applies") for r in reasons):
        return "no_policy"
    if any("evidence was refused" in r for r in reasons):
        return "evidence_refused"
    if any(r.startswith("no rule matched") for r in reasons):
        return "no_rule_matched"
    return "rule"


class Metrics:
    """One service's metrics in its own registry. Figures read from elsewhere (the broker's queue
    depth, the audit lag) are refreshed by `refreshers` just before each scrape."""

    def __init__(self, service: str):
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.refreshers: list[Refresh] = []
        r = self.registry
        self.releases = Counter("strongroom_releases", "Keys released to devices (sealed to the agent)", registry=r)
        self.decisions = Counter("strongroom_decisions", "Key requests decided, by effect", ["effect"], registry=r)
        self.denials = Counter("strongroom_denials", "Requests refused, by stage and reason class",
                               ["stage", "reason"], registry=r)
        self.handled = Histogram("strongroom_handler_seconds", "Time to handle one message or request, per hop "
                                 "(kind: work, rpc, http; name: event type, method or route)",
                                 ["kind", "name"], buckets=_BUCKETS, registry=r)
        self.event_age = Histogram("strongroom_event_age_seconds", "From an event's publication to the start of "
                                   "its handling here (the broker hop), by event type", ["type"], buckets=_BUCKETS,
                                   registry=r)
        self.store_ops = Histogram("strongroom_store_operation_seconds", "Store commands (PyMongo command "
                                   "monitoring), by command and outcome", ["command", "outcome"], buckets=_BUCKETS,
                                   registry=r)
        self._gauges: dict[str, Gauge] = {}

    def gauge(self, name: str, documentation: str, read: Callable[[], float] | None = None) -> Gauge:
        """A service's own gauge (seal state, audit lag), declared once; `read` gives its value at each scrape."""
        if name not in self._gauges:
            self._gauges[name] = Gauge(name, documentation, registry=self.registry)
            if read is not None:
                self._gauges[name].set_function(read)
        return self._gauges[name]

    async def exposition(self) -> bytes:
        """The text format Prometheus scrapes, after refreshing what is read from elsewhere."""
        for refresh in self.refreshers:
            try:
                await refresh()
            except Exception:  # a figure left stale is better than no scrape at all
                log.exception("metrics_refresh_failed", service=self.service)
        return generate_latest(self.registry)

    # --- what a service publishes ---

    def count(self, event: Event) -> None:
        if isinstance(event, KeyReleased):
            self.releases.inc()
        elif isinstance(event, KeyReleaseRefused):
            self.denials.labels("custody", event.status).inc()
        elif isinstance(event, KeyDecided):
            self.decisions.labels(event.effect).inc()
            if event.effect == "deny":
                self.denials.labels("policy", denial_class(event)).inc()

    def counting(self, publish: Publish) -> Publish:
        """`publish`, counting each event once the broker has taken it."""
        async def counted(event: Event) -> None:
            await publish(event)
            self.count(event)
        return counted

    # --- what a service handles ---

    def timed(self, kind: str, handler: Callable[[Event], Awaitable[None]], *,
              names: Iterable[str] | None = None) -> Callable[[Event], Awaitable[None]]:
        """An event handler, timed by event type, with the age the event had when it arrived."""
        known = frozenset(names) if names is not None else None

        async def run(event: Event) -> None:
            name: str = event.type  # type: ignore[attr-defined]
            if known is not None and name not in known:
                name = OTHER
            self.event_age.labels(name).observe(max(0.0, (datetime.now(UTC) - event.occurred_at).total_seconds()))
            started = time.perf_counter()
            try:
                await handler(event)
            finally:
                self.handled.labels(kind, name).observe(time.perf_counter() - started)
        return run

    def timed_rpc(self, methods: Any) -> Callable[[Any], Awaitable[Any]]:
        """A service's RPC methods (`shared/rpc.py`'s `Methods`), timed by method name."""
        known = frozenset(methods.contracts())

        async def run(request: Any) -> Any:
            started = time.perf_counter()
            try:
                return await methods(request)
            finally:
                name = request.method if request.method in known else OTHER
                self.handled.labels("rpc", name).observe(time.perf_counter() - started)
        return run


class StoreTimings(monitoring.CommandListener):
    """Times every store command of a client; each service's database reports to its own registry
    (one client may serve several services in one process)."""

    def __init__(self) -> None:
        self._by_database: dict[str, Histogram] = {}

    @staticmethod
    def of(client: AsyncMongoClient) -> StoreTimings | None:
        return next((each for each in client.options.event_listeners if isinstance(each, StoreTimings)), None)

    def watch(self, database: str, metrics: Metrics) -> None:
        self._by_database[database] = metrics.store_ops

    def forget(self, database: str, metrics: Metrics) -> None:
        """Stops timing for `metrics` (a later instance of the same service in this process keeps its own)."""
        if self._by_database.get(database) is metrics.store_ops:
            del self._by_database[database]

    def _observe(self, event: Any, outcome: str) -> None:
        histogram = self._by_database.get(event.database_name)
        if histogram is not None:
            histogram.labels(event.command_name, outcome).observe(event.duration_micros / 1e6)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._observe(event, "ok")

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._observe(event, "error")
