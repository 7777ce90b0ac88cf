"""The event stream's credential checks: which permission reads which event type (deny by default),
and a stream whose credential ends by time alone is closed by the periodic re-check."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.accounts.passwords import Hasher
from services.gateway.app import build_app
from services.gateway.console.web import CSP
from services.gateway.datakey import ensure_data_key_file
from services.gateway.notifications import (
    EVENT_PERMISSIONS,
    NOTIFY_ON_DEMAND,
    NOTIFY_PATTERNS,
    NOTIFY_VIA_WAITERS,
    permission_for,
)
from services.gateway.permissions import PERMISSIONS
from services.gateway.settings import GatewaySettings
from services.gateway.store_memory import MemoryGatewayStore
from shared import events
from shared.bus_memory import MemoryBus
from shared.crypto import tokens

from .test_gateway_views import Gw


def test_each_watched_event_type_has_one_reading_permission_and_unknown_types_go_to_nobody():
    assert permission_for("approval.requested") == "approvals.read"
    assert permission_for("key.decided") == permission_for("key.release_refused") == "decisions.read"
    assert permission_for("key.requested") == "decisions.read"  # raw requests: facts and public keys only
    assert permission_for("key.released") == "decisions.read"  # watched without its sealed key (the notifier drops it)
    assert permission_for("device.quarantined") == "devices.read"
    assert permission_for("policy.updated") == permission_for("tenant.policy_settings_updated") == "policies.read"
    assert permission_for("group.updated") == "groups.read"
    for unknown in ("key.requestedx", "user.logged_in", "tenant.settings_changed", "approvalx", "made.up"):
        assert permission_for(unknown) is None
    assert all(permission in PERMISSIONS for _, permission in EVENT_PERMISSIONS)
    assert set(NOTIFY_PATTERNS) | set(NOTIFY_VIA_WAITERS) | set(NOTIFY_ON_DEMAND) == {pattern for pattern, _ in EVENT_PERMISSIONS}


@pytest.fixture
async def short_lived(tmp_path):
    """A gateway whose sessions last 2 s and whose streams re-check every 0.2 s."""
    bus = MemoryBus()
    await bus.start()
    published: list[events.Event] = []

    async def publish(event: events.Event) -> None:
        published.append(event)
        await bus.publish(event)

    store = MemoryGatewayStore(publish=publish)
    key_file = tmp_path / "data.key"
    ensure_data_key_file(str(key_file))
    settings = GatewaySettings(bootstrap_token=tokens.new_token("sr_boot"), data_key_file=str(key_file),
                               password_time_cost=2, password_memory_kib=8, password_parallelism=1,
                               session_absolute_seconds=2, stream_recheck_seconds=0.2)
    client = TestClient(TestServer(build_app(settings, bus=bus, store=store)))
    await client.start_server()
    try:
        yield Gw(client, store, published, Hasher(time_cost=2, memory_kib=8, parallelism=1))
    finally:
        await client.close()
        await bus.close()


async def test_a_stream_ends_when_its_session_times_out_with_nothing_else_happening(short_lived):
    await short_lived.tenant()
    _, session = await short_lived.user("ann", ["auditor"])
    async with short_lived.client.get("/v1/events/stream", headers={"Authorization": f"Bearer {session}"}) as stream:
        assert stream.status == 200
        body = await asyncio.wait_for(stream.content.read(), 10)  # returns once the server closes the stream
    assert b"event: end" in body and b"credential ended" in body


async def test_a_console_stream_ends_with_its_session_too(short_lived):
    await short_lived.tenant()
    _, session = await short_lived.user("ann", ["auditor"])
    async with short_lived.client.get("/console/stream/live", headers={"Cookie": f"sr_console={session}"}) as stream:
        assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.headers["Content-Security-Policy"] == CSP
        body = await asyncio.wait_for(stream.content.read(), 10)  # returns once the server closes the stream
    assert b"event: end\ndata: session ended" in body
