"""The four services as separate asyncio apps, each with its own RabbitMQ connection,
over the real broker and the MongoDB-wire store; the gateway on a free loopback port."""

from __future__ import annotations

import secrets

import aiohttp
import pytest

from launch.stack import Stack
from services.auditsvc.settings import AuditSettings
from services.auditsvc.signing import ensure_key_file
from services.gateway.datakey import ensure_data_key_file
from services.gateway.settings import GatewaySettings
from services.keysvc.settings import KeySettings
from services.policysvc.settings import PolicySettings
from shared.bus import RabbitBus
from shared.crypto import tokens

from .mailbox import Mailbox


class Api:
    """A tiny operator client for tests: JSON in, (status, JSON) out; `mailbox` is the stack's SMTP
    receiver, where invitees read their setup tokens."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None = None,
                 mailbox: Mailbox | None = None):
        self.session, self.url, self.token, self.mailbox = session, url, token, mailbox

    def as_(self, token: str) -> Api:
        return Api(self.session, self.url, token, self.mailbox)

    async def call(self, method: str, path: str, json=None, data: bytes | None = None, headers=None):
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        h.update(headers or {})
        async with self.session.request(method, self.url + path, json=json, data=data, headers=h) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body = await resp.json(content_type=None) if resp.status != 204 else None
            return resp.status, body, ctype


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "stack(audit=None, audit_max_length=None, gateway=None): override the e2e stack's audit settings")


@pytest.fixture
def mailbox():
    """A real SMTP server (aiosmtpd) on a free loopback port; the e2e gateway sends mail to it."""
    box = Mailbox().start()
    yield box
    box.stop()


@pytest.fixture
async def stack(amqp_url, mongo_client, db_prefix, prefix, tmp_path, request, mailbox, http):
    bus_prefix = f"{prefix}."
    buses: list[RabbitBus] = []
    marker = request.node.get_closest_marker("stack")
    overrides = marker.kwargs if marker else {}

    async def bus_for(name: str) -> RabbitBus:
        bus = RabbitBus(amqp_url, prefix=bus_prefix, audit_max_length=overrides.get("audit_max_length"))
        await bus.start()
        buses.append(bus)
        return bus

    bootstrap = tokens.new_token("sr_boot")
    # Deadlines generous enough for a box whose other core is busy: a test's claims are about
    # outcomes, never about speed (tests that exercise a deadline set their own).
    common = {"db_prefix": db_prefix, "bus_prefix": bus_prefix, "rpc_timeout_seconds": 30.0}
    stack = Stack(
        client=mongo_client,
        bus_for=bus_for,
        # Argon2id at a test cost (production: 64 MiB, 2 passes; bench/auth_bench.py measures it).
        gateway_settings=GatewaySettings(**{**common, "port": 0, "bootstrap_token": bootstrap, "release_timeout_seconds": 30.0,
                                            "password_time_cost": 1, "password_memory_kib": 8192, "password_parallelism": 1,
                                            "data_key_file": str(ensure_data_key_file(tmp_path / "gateway-data.key")),
                                            "smtp_host": "127.0.0.1", "smtp_port": mailbox.port,
                                            "mail_from": "strongroom@provider.example",
                                            **(overrides.get("gateway") or {})}),
        policy_settings=PolicySettings(**common),
        # keysvc: its own certificate-signing key per test; a short destruction-wait floor and a
        # fast scheduler so destruction and rotation tests run in seconds (production: 7 days, 5 s).
        key_settings=KeySettings(**{
            **common, "signing_key_file": str(tmp_path / "keysvc-signing-key.pem"), "min_destruction_wait_seconds": 1,
            "scheduler_interval_seconds": 0.1, "lease_seconds": 5.0, **(overrides.get("keysvc") or {})}),
        # Tests count a tenant's records exactly: a time-based checkpoint (and its record) lands only
        # when a test asks for one, never because a busy box made the test outlast the interval.
        audit_settings=AuditSettings(**{
            **common, "signing_key_file": str(ensure_key_file(tmp_path / "audit-signing-key.pem")),
            "data_key_file": str(ensure_data_key_file(tmp_path / "audit-data.key")),
            "archive_dir": str(tmp_path / "audit-archive"), "checkpoint_every_seconds": 3600.0,
            # The provider allowlist that lets forwarders reach the tests' own receivers on loopback
            # (test_forwarder_destinations.py narrows it to show what is refused without it).
            "forwarder_allow": "127.0.0.1",
            **(overrides.get("audit") or {})}),
        root_key=secrets.token_bytes(32),
    )
    stack.bootstrap = bootstrap  # type: ignore[attr-defined]
    stack.mailbox = mailbox  # type: ignore[attr-defined]
    await stack.start_all()
    yield stack
    # The test's HTTP client goes first: a keep-alive connection still open to the gateway held its
    # shutdown until the stop timed out (15 s per test).
    await http.close()
    await stack.stop_all()
    cleanup = RabbitBus(amqp_url, prefix=bus_prefix, audit_max_length=overrides.get("audit_max_length"))
    await cleanup.start()
    await cleanup.destroy()
    await cleanup.close()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def api(stack, http):
    return Api(http, stack.url, stack.bootstrap, stack.mailbox)
