"""Starting and stopping services in one process: `strongroom dev`, `strongroom serve`, tests.

Each service gets its own bus connection from `bus_for(name)`, as it would in its own
process; dev mode hands all four the same in-memory bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from pymongo import AsyncMongoClient

from services.auditsvc import app as auditsvc
from services.auditsvc.settings import AuditSettings
from services.gateway import app as gateway
from services.gateway.settings import GatewaySettings
from services.keysvc import app as keysvc
from services.keysvc.settings import KeySettings
from services.policysvc import app as policysvc
from services.policysvc.settings import PolicySettings
from shared.bus import Bus
from shared.service import Running

SERVICES = ("gateway", "policysvc", "keysvc", "auditsvc")
STOP_TIMEOUT = 15.0
log = structlog.get_logger("strongroom.stack")


@dataclass
class Stack:
    client: AsyncMongoClient
    bus_for: Callable[[str], Awaitable[Bus]]
    gateway_settings: GatewaySettings
    policy_settings: PolicySettings
    key_settings: KeySettings
    audit_settings: AuditSettings
    root_key: bytes | None
    running: dict[str, Running] = field(default_factory=dict)
    buses: dict[str, Bus] = field(default_factory=dict)
    runner: web.AppRunner | None = None
    url: str = ""

    async def start(self, name: str) -> None:
        bus = await self.bus_for(name)
        self.buses[name] = bus
        if name == "gateway":
            app = await gateway.init_app(self.gateway_settings, bus=bus, client=self.client)
            self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
            await self.runner.setup()
            site = web.TCPSite(self.runner, self.gateway_settings.host, self.gateway_settings.port)
            await site.start()
            port = self.runner.addresses[0][1]
            self.url = f"http://{self.gateway_settings.host}:{port}"
            return
        if name == "policysvc":
            self.running[name] = await policysvc.start(self.policy_settings, bus=bus, client=self.client)
        elif name == "keysvc":
            self.running[name] = await keysvc.start(self.key_settings, bus=bus, client=self.client, root_key=self.root_key)
        elif name == "auditsvc":
            self.running[name] = await auditsvc.start(self.audit_settings, bus=bus, client=self.client)
        else:
            raise ValueError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")

    async def stop(self, name: str) -> None:
        """Stops one service: it stops consuming, and unacked messages go back to its queue.

        Every step is bounded: a stop that hangs (an open stream, a broker that does not answer
        a close) is logged and abandoned rather than holding the process; unacked messages are
        redelivered either way."""
        if name == "gateway" and self.runner is not None:
            runner, self.runner = self.runner, None
            await _bounded(runner.cleanup(), "service_stop_timed_out", name)
        elif name in self.running:
            await _bounded(self.running.pop(name).stop(), "service_stop_timed_out", name)
        bus = self.buses.pop(name, None)
        if bus is not None:
            await _bounded(bus.close(), "bus_close_timed_out", name)

    async def start_all(self, names=SERVICES) -> None:
        # Consumers first, the gateway last: requests are accepted only when they can be served.
        for name in sorted(names, key=lambda n: n == "gateway"):
            await self.start(name)

    async def stop_all(self) -> None:
        for name in ("gateway", "policysvc", "keysvc", "auditsvc"):
            await self.stop(name)


async def _bounded(step: Coroutine[Any, Any, None], warning: str, service: str) -> None:
    """Run one stop step for at most STOP_TIMEOUT, then abandon it. Not `wait_for`: on a timeout it
    waits for the cancelled step to finish, so a step that does not end on cancellation held the
    caller for ever (a test's teardown hung 300 s)."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
    if not done:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no "never retrieved" noise
        log.warning(warning, service=service)
    elif task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
