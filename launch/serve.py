"""`strongroom serve NAME`: one service against RabbitMQ and MongoDB (production shape)."""

from __future__ import annotations

import asyncio
import signal

from services.auditsvc.settings import AuditSettings
from services.gateway.settings import GatewaySettings
from services.keysvc.settings import KeySettings
from services.policysvc.settings import PolicySettings
from shared import log as shared_log
from shared import runtime
from shared.bus import RabbitBus
from shared.config import CommonSettings
from shared.store import connect_with

from .stack import SERVICES, Stack


async def _serve(name: str) -> None:
    common = CommonSettings()
    shared_log.configure(common.log_level)
    if name not in SERVICES:
        raise SystemExit(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")
    if not common.mongodb_url:
        raise SystemExit("MONGODB_URL is required for `strongroom serve`")
    key_settings = KeySettings()
    root_key = None
    if name == "keysvc":
        from services.keysvc.app import root_key_from_settings

        root_key = root_key_from_settings(key_settings)

    async def own_bus(service: str) -> RabbitBus:
        bus = RabbitBus(common.amqp_url, prefix=common.bus_prefix)
        await bus.start()
        return bus

    settings = {"gateway": GatewaySettings(), "policysvc": PolicySettings(), "keysvc": key_settings,
                "auditsvc": AuditSettings()}
    # The store timeouts are this service's own settings (`STRONGROOM_<SERVICE>_STORE_*`).
    client = connect_with(common.mongodb_url, settings[name])
    stack = Stack(client=client, bus_for=own_bus, gateway_settings=settings["gateway"],  # type: ignore[arg-type]
                  policy_settings=settings["policysvc"], key_settings=key_settings,  # type: ignore[arg-type]
                  audit_settings=settings["auditsvc"], root_key=root_key)  # type: ignore[arg-type]
    await stack.start(name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await stack.stop(name)
    await client.close()


def run_service(name: str) -> None:
    runtime.run(_serve(name))
