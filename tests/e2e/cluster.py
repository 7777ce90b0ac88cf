"""Every service as its own `strongroom serve` process, several replicas of each, against the real
broker and store: what production runs, for tests that kill processes."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp
from pydantic import SecretStr

from services.auditsvc.signing import ensure_key_file
from services.gateway.datakey import ensure_data_key_file
from services.keysvc.rootkey import SealedFileRootKey
from shared import topology
from shared.bus import RabbitBus
from shared.crypto import tokens

ROOT = Path(__file__).resolve().parents[2]
_DEADLINE = 120.0  # starting eight processes on a busy two-core box


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Replica:
    service: str
    index: int
    process: subprocess.Popen
    log: Path
    url: str = ""

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Cluster:
    work: Path
    amqp_url: str
    mongo_url: str
    bus_prefix: str
    db_prefix: str
    smtp_port: int
    bootstrap: str = field(default_factory=lambda: tokens.new_token("sr_boot"))
    replicas: list[Replica] = field(default_factory=list)

    def _env(self, service: str) -> dict[str, str]:
        work = self.work
        passphrase = "cluster-root-passphrase"
        root = work / "root.sealed"
        if not root.exists():
            SealedFileRootKey(root, SecretStr(passphrase)).store(secrets.token_bytes(32))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "MONGODB_URL": self.mongo_url,
               "STRONGROOM_AMQP_URL": self.amqp_url, "STRONGROOM_BUS_PREFIX": self.bus_prefix,
               "STRONGROOM_DB_PREFIX": self.db_prefix, "STRONGROOM_LOG_LEVEL": "WARNING",
               "STRONGROOM_RPC_TIMEOUT_SECONDS": "30"}  # common settings: every service reads them
        own = {
            "gateway": {"BOOTSTRAP_TOKEN": self.bootstrap, "RELEASE_TIMEOUT_SECONDS": "30",
                        "PASSWORD_TIME_COST": "1", "PASSWORD_MEMORY_KIB": "8192", "PASSWORD_PARALLELISM": "1",
                        "DATA_KEY_FILE": str(ensure_data_key_file(work / "gateway-data.key")),
                        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.smtp_port),
                        "MAIL_FROM": "strongroom@provider.example"},
            "policysvc": {},
            # A short lease: a killed holder's scheduler is taken over within seconds.
            "keysvc": {"ROOT_KEY_FILE": str(root), "ROOT_KEY_PASSPHRASE": passphrase,
                       "SIGNING_KEY_FILE": str(ensure_key_file(work / "keysvc-signing.pem")), "SCHEDULER_INTERVAL_SECONDS": "0.2",
                       "LEASE_SECONDS": "3"},
            "auditsvc": {"SIGNING_KEY_FILE": str(ensure_key_file(work / "audit-signing.pem")),
                         "DATA_KEY_FILE": str(ensure_data_key_file(work / "audit-data.key")),
                         "ARCHIVE_DIR": str(work / "archive"), "CHECKPOINT_EVERY_SECONDS": "2",
                         "FORWARDER_ALLOW": "127.0.0.1", "FORWARDER_LEASE_SECONDS": "3"},
        }[service]
        env |= {f"STRONGROOM_{service.upper()}_{k}": v for k, v in own.items()}
        return env

    def _spawn(self, service: str) -> Replica:
        index = 1 + sum(r.service == service for r in self.replicas)
        env = self._env(service)
        url = ""
        if service == "gateway":
            port = _free_port()
            env["STRONGROOM_GATEWAY_PORT"] = str(port)
            url = f"http://127.0.0.1:{port}"
        log = self.work / f"{service}-{index}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "strongroom.cli", "serve", service], cwd=ROOT, env=env,
                                       stdout=out, stderr=subprocess.STDOUT)
        replica = Replica(service, index, process, log, url)
        self.replicas.append(replica)
        return replica

    async def start(self, service: str) -> Replica:
        """One more replica of `service`, once it serves: its RPC consumer is up, or the gateway answers."""
        replica = self._spawn(service)
        if service == "gateway":
            await self._until(replica, self._answers(replica.url))
        else:
            serving = sum(r.service == service and r.alive() for r in self.replicas)
            await self._until(replica, self._consumers(topology.rpc_queue(service), serving))
        return replica

    async def start_all(self, per_service: int = 2) -> None:
        # One after another per service: the first replica of auditsvc is its queue's active consumer
        # and the first keysvc takes the scheduler lease, so killing replica 1 kills the one at work.
        for service in ("auditsvc", "keysvc", "policysvc", "gateway"):
            for _ in range(per_service):
                await self.start(service)

    def of(self, service: str) -> list[Replica]:
        return [r for r in self.replicas if r.service == service and r.alive()]

    def kill(self, replica: Replica) -> None:
        """SIGKILL: no clean stop, no lease given up, unacked messages requeued by the broker."""
        replica.process.send_signal(signal.SIGKILL)
        replica.process.wait(10)

    async def stop_all(self) -> None:
        for replica in self.replicas:
            if replica.alive():
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            try:
                await asyncio.to_thread(replica.process.wait, 30)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(10)
        cleanup = RabbitBus(self.amqp_url, prefix=self.bus_prefix)
        await cleanup.start()
        await cleanup.destroy()
        await cleanup.close()

    def logs(self) -> str:
        return "\n".join(f"--- {r.name} (exit {r.process.poll()}) ---\n{r.log.read_text()[-3000:]}" for r in self.replicas)

    async def _until(self, replica: Replica, ready) -> None:
        deadline = asyncio.get_running_loop().time() + _DEADLINE
        while not await ready():
            if not replica.alive():
                raise AssertionError(f"{replica.name} exited:\n{replica.log.read_text()[-3000:]}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{replica.name} not serving:\n{replica.log.read_text()[-3000:]}")
            await asyncio.sleep(0.2)

    def _answers(self, url: str):
        async def check() -> bool:
            try:
                async with aiohttp.ClientSession() as session, session.get(url + "/v1/health") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False
        return check

    def _consumers(self, queue: str, count: int):
        async def check() -> bool:
            connection = await aio_pika.connect(self.amqp_url)
            try:
                channel = await connection.channel()
                declared = await channel.declare_queue(self.bus_prefix + queue, passive=True)
                return declared.declaration_result.consumer_count >= count
            except aio_pika.exceptions.ChannelClosed:  # not declared yet
                return False
            finally:
                await connection.close()
        return check
