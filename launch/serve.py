"""`strongroom serve NAME`: one service against RabbitMQ and MongoDB (production shape).

Before anything connects, every key file and secret the service needs is checked
(`preflight.py`); a problem stops the start with one log line per problem and exit status 78.
Then one `service_started` line, and `service_ready` once the service consumes or listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from importlib import metadata

import structlog
from pydantic import ValidationError

from services.auditsvc.settings import AuditSettings
from services.gateway.settings import GatewaySettings
from services.keysvc.settings import KeySettings
from services.policysvc.settings import PolicySettings
from shared import log as shared_log
from shared import runtime
from shared.bus import RabbitBus
from shared.config import CommonSettings
from shared.store import connect_with

from . import heartbeat, preflight
from .stack import SERVICES, Stack

EXIT_CONFIG = 78  # sysexits' EX_CONFIG: a container runtime shows it; restarting will not help
SETTINGS: dict[str, type[CommonSettings]] = {
    "gateway": GatewaySettings, "policysvc": PolicySettings, "keysvc": KeySettings, "auditsvc": AuditSettings,
}
log = structlog.get_logger("strongroom.serve")


def instance_name() -> str:
    """What tells this process apart in logs and the broker's connection list: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def version() -> str:
    try:
        return metadata.version("strongroom")
    except metadata.PackageNotFoundError:
        return "unknown"


def _settings(name: str) -> dict[str, CommonSettings]:
    """`name`'s settings from the environment; the stack takes all four, the others' are unused defaults."""
    return {service: cls() if service == name else cls.model_construct() for service, cls in SETTINGS.items()}


async def _serve(name: str, settings: dict[str, CommonSettings], identity: dict[str, str]) -> None:
    own = settings[name]
    root_key = None
    if name == "keysvc":
        from services.keysvc.app import root_key_from_settings

        root_key = root_key_from_settings(own)  # type: ignore[arg-type]
        if root_key is None:
            log.warning("keysvc_sealed", **identity, reason="no root key file or PKCS#11 source is configured: "
                        "releases wait until custodians unseal with their shares")

    async def own_bus(service: str) -> RabbitBus:
        # The broker's connection list names each process: which service, which host and pid.
        bus = RabbitBus(own.amqp_url, prefix=own.bus_prefix, connection_name=f"{service}@{identity['instance']}")
        await bus.start()
        return bus

    # The store timeouts are this service's own settings (`STRONGROOM_<SERVICE>_STORE_*`).
    client = connect_with(own.mongodb_url, own)  # type: ignore[arg-type]
    stack = Stack(client=client, bus_for=own_bus, gateway_settings=settings["gateway"],  # type: ignore[arg-type]
                  policy_settings=settings["policysvc"], key_settings=settings["keysvc"],  # type: ignore[arg-type]
                  audit_settings=settings["auditsvc"], root_key=root_key)  # type: ignore[arg-type]
    await stack.start(name)
    log.info("service_ready", **identity, **({"url": stack.url} if stack.url else {}))
    beat_path = heartbeat.heartbeat_path(name, own.heartbeat_file)
    beats = asyncio.create_task(heartbeat.beat(beat_path, identity, stack.buses[name].connected))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("service_stopping", **identity)
    beats.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beats
    beat_path.unlink(missing_ok=True)
    await stack.stop(name)
    await client.close()


def run_service(name: str) -> None:
    if name not in SERVICES:
        raise SystemExit(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")
    try:
        settings = _settings(name)
    except ValidationError as exc:
        shared_log.configure()
        for error in exc.errors():  # loc and message only: the input may be a secret
            log.error("startup_check_failed", service=name, setting=".".join(map(str, error["loc"])), problem=error["msg"])
        raise SystemExit(EXIT_CONFIG) from None
    shared_log.configure(settings[name].log_level)
    identity = {"service": name, "instance": instance_name(), "version": version()}
    log.info("service_started", **identity)
    problems = preflight.check(name, settings[name])
    for problem in problems:
        log.error("startup_check_failed", **identity, setting=problem.setting, problem=problem.problem)
    if problems:
        raise SystemExit(EXIT_CONFIG)
    try:
        runtime.run(_serve(name, settings, identity))
    except Exception:
        # A broker or store that cannot be reached at start, say: one JSON line, not a bare traceback.
        log.exception("service_failed", **identity)
        raise SystemExit(1) from None
