"""Liveness, readiness and metrics for every service: the checks, and the small HTTP listener
that serves them for the services that have no HTTP port of their own.

Liveness says only that the process answers (restart it if not). Readiness names each failing
dependency (`store`, `bus`, `sealed`, `audit_lag`) with words an operator can act on, and answers
503 while any fails. The gateway serves the same answers on its own port (`/v1/live`,
`/v1/ready`, `/metrics`); policysvc, keysvc and auditsvc serve `/live`, `/ready` and `/metrics`
on `<service>_HEALTH_HOST:<service>_HEALTH_PORT` when a port is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from aiohttp import web
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from .bus import Bus
from .config import CommonSettings
from .metrics import CONTENT_TYPE, Metrics, StoreTimings
from .service import Running
from .store import STORE_UNAVAILABLE, ping, service_database

log = structlog.get_logger("strongroom.observability")

# A check answers None when its dependency is fine, else what is wrong, in words.
Check = Callable[[], Awaitable[str | None]]
# A scrape never waits on a hung broker longer than this.
REFRESH_TIMEOUT_SECONDS = 2.0
RETRY_AFTER_SECONDS = 5


def store_check(ping: Callable[[], Awaitable[Any]], timeout: float) -> Check:
    async def check() -> str | None:
        try:
            await asyncio.wait_for(ping(), timeout)
        except (*STORE_UNAVAILABLE, TimeoutError):
            return f"the store did not answer a ping within {timeout:g} s"
        return None
    return check


def bus_check(bus: Bus) -> Check:
    async def check() -> str | None:
        if not bus.connected():
            return "the broker connection is down"
        stalled = bus.stalled()
        if stalled:
            return f"work-queue consumers stopped making progress: {', '.join(stalled)}"
        return None
    return check


@dataclass
class Probe:
    """What a service says about itself: its metrics and the checks its readiness runs."""

    service: str
    metrics: Metrics
    checks: dict[str, Check] = field(default_factory=dict)
    on_stop: list[Callable[[], None]] = field(default_factory=list)

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        names = list(self.checks)
        found = await asyncio.gather(*(self.checks[name]() for name in names), return_exceptions=True)
        failing = {name: f"the check failed ({type(why).__name__})" if isinstance(why, BaseException) else why
                   for name, why in zip(names, found, strict=True) if why is not None}
        body = {"service": self.service, "status": "not_ready" if failing else "ready", "checked": names,
                "failing": failing}
        return not failing, body


def time_store(probe: Probe, client: AsyncMongoClient, db: AsyncDatabase) -> None:
    """The service's store commands timed into its registry (when the client was made by `shared/store.py`)."""
    timings = StoreTimings.of(client)
    if timings is not None:
        timings.watch(db.name, probe.metrics)
        probe.on_stop.append(partial(timings.forget, db.name, probe.metrics))


def observe(service: str, settings: CommonSettings, *, bus: Bus, client: AsyncMongoClient) -> Probe:
    """A bus service's probe with the checks every service shares (store, broker), its store
    commands timed into its registry, and its work-queue depth read at each scrape."""
    metrics = Metrics(service)
    db = service_database(client, service, prefix=settings.db_prefix)
    probe = Probe(service, metrics, {"store": store_check(partial(ping, db), settings.store_timeout_seconds),
                                     "bus": bus_check(bus)})
    time_store(probe, client, db)
    gauge = metrics.gauge("strongroom_queue_depth", "Messages waiting in this service's work queue (-1: the broker "
                          "could not say)")

    async def depth() -> None:
        try:
            found = await asyncio.wait_for(bus.queue_depth(service), REFRESH_TIMEOUT_SECONDS)
        except TimeoutError:
            found = None
        gauge.set(-1 if found is None else found)

    metrics.refreshers.append(depth)
    return probe


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def ready_response(probe: Probe, request: web.Request | None = None) -> web.Response:
    ok, body = await probe.readiness()
    response = web.json_response(body, status=200 if ok else 503)
    if not ok:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def metrics_response(metrics: Metrics, request: web.Request | None = None) -> web.Response:
    return web.Response(body=await metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})


async def serve(probe: Probe, host: str, port: int) -> tuple[web.AppRunner, str]:
    """The listener for a service without an HTTP port: `/live`, `/ready`, `/metrics`. Returns its
    runner (clean it up to stop) and its base URL (port 0 picks a free port)."""
    app = web.Application()
    app.router.add_get("/live", live)
    app.router.add_get("/ready", partial(ready_response, probe))
    app.router.add_get("/metrics", partial(metrics_response, probe.metrics))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0][1]
    log.info("health_listening", service=probe.service, host=host, port=bound)
    return runner, f"http://{host}:{bound}"


async def expose(running: Running, probe: Probe, settings: CommonSettings) -> None:
    """Attaches the probe to a running service, with its listener when a health port is set."""
    running.probe = probe

    async def forget() -> None:
        for each in probe.on_stop:
            each()

    running.on_stop.append(forget)
    if settings.health_port is not None:
        runner, running.health_url = await serve(probe, settings.health_host, settings.health_port)
        running.on_stop.append(runner.cleanup)
