"""`strongroom dev`: all four services in one process, in-memory bus, embedded store.

Data (the store, a generated root key and the gateway's data key) stays in the data directory across restarts.
Mail the gateway sends (invitations, admin notices) lands in its `mail` folder, one .eml file per message.
A fresh bootstrap credential is printed at every start; only its digest is kept.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import structlog

from services.auditsvc.settings import AuditSettings
from services.auditsvc.signing import ensure_key_file
from services.gateway.datakey import ensure_data_key_file
from services.gateway.settings import GatewaySettings
from services.keysvc.rootkey import GeneratedRootKey
from services.keysvc.settings import KeySettings
from services.policysvc.settings import PolicySettings
from shared import log as shared_log
from shared import runtime
from shared.bus_memory import MemoryBus
from shared.config import CommonSettings
from shared.crypto import tokens
from shared.embedded_mongo import EmbeddedMongo
from shared.store import connect_with

from . import demo as demo_setup
from .stack import Stack


async def _dev(port: int, data_dir: Path, demo: bool) -> None:
    common = CommonSettings()
    shared_log.configure(common.log_level)
    server = None
    url = common.mongodb_url
    if url is None:
        server = EmbeddedMongo(data_dir / "store").start()
        url = server.url
    try:
        client = connect_with(url, common)
        bus = MemoryBus()
        await bus.start()

        async def same_bus(name: str) -> MemoryBus:
            return bus

        bootstrap = tokens.new_token("sr_boot")
        stack = Stack(
            client=client,
            bus_for=same_bus,
            # Mail (invitations with their setup tokens, admin notices) goes to a folder, one .eml per message.
            gateway_settings=GatewaySettings(port=port, bootstrap_token=bootstrap,
                                             data_key_file=str(ensure_data_key_file(data_dir / "gateway-data.key")),
                                             mail_folder=str(data_dir / "mail")),
            policy_settings=PolicySettings(),
            # One person plays every role in dev mode: a 1-of-1 root re-key is allowed here only.
            key_settings=KeySettings(signing_key_file=str(data_dir / "keysvc-signing-key.pem"), allow_single_custodian=True),
            audit_settings=AuditSettings(signing_key_file=str(ensure_key_file(data_dir / "audit-signing-key.pem")),
                                         data_key_file=str(ensure_data_key_file(data_dir / "audit-data.key")),
                                         archive_dir=str(data_dir / "audit-archive")),
            root_key=GeneratedRootKey(data_dir).load(),
        )
        await stack.start_all()
        # The bootstrap credential is kept in a 0600 file too, so scripts (and the README) can read it;
        # dev.env is what a second terminal sources to reach this gateway with these commands.
        _private_file(data_dir / "bootstrap-token", bootstrap + "\n")
        _private_file(data_dir / "dev.env", demo_setup.env_lines(demo_setup.base_env(stack.url)))
        print(f"Strongroom dev is running.\n  gateway:   {stack.url}\n  bootstrap: {bootstrap} "
              f"(also in {data_dir / 'bootstrap-token'})\n"
              f"  data dir:  {data_dir}\n"
              f"  mail:      {data_dir / 'mail'} (invitations and admin notices, one .eml file each)", flush=True)
        if demo:
            print("!! DEMO MODE: preparing tenant 'demo'; its people's passwords and TOTP secrets go to "
                  f"{data_dir / 'demo' / 'credentials.json'} (dev only)", flush=True)
            print(demo_setup.banner(data_dir, await demo_setup.prepare(stack.url, bootstrap, data_dir)), flush=True)
        print(f"Next: STRONGROOM_URL={stack.url} strongroom --token <bootstrap> account bootstrap --username root "
              "--password-stdin" if not demo else f"Next: . {data_dir / 'demo.env'}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        structlog.get_logger("strongroom").info("dev_stopping")
        await stack.stop_all()
        await bus.close()
        await client.close()
    finally:
        # The store is a child process: never leave it running, whatever ended this one.
        if server is not None:
            server.stop()


def _private_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def run_dev(port: int = 8400, data_dir: str | Path | None = None, demo: bool = False) -> None:
    path = Path(data_dir or "dev-data")
    path.mkdir(parents=True, exist_ok=True)
    runtime.run(_dev(port, path.resolve(), demo))
