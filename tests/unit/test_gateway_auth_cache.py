"""The gateway's credential and device caches against the race between a read in flight and a revocation.

With several gateway replicas, a token or device revoked through one replica reaches the others
as an event; a read that was in flight there when the event arrived must not cache what it read,
or the revoked credential stays usable on that replica for as long as the entry lives.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from services.gateway.auth import DeviceAuthenticator, TokenAuthenticator, Unauthorized
from shared.crypto import tokens

_NOW = datetime.now(UTC)
_TOKEN = "sr_pat_cache_race_token"


class _SlowAccounts:
    """The account documents a token resolves through; a token read can be held mid-flight."""

    def __init__(self) -> None:
        self.token: dict[str, Any] = {"token_id": "tok_a", "tenant_id": "ten_a", "user_id": "usr_a",
                                      "created_at": _NOW, "scopes": None}
        self.user_doc: dict[str, Any] = {"user_id": "usr_a", "status": "active", "roles": ["auditor"]}
        self.tenant_doc: dict[str, Any] = {"tenant_id": "ten_a", "status": "active", "settings": {}}
        self.hold: asyncio.Event | None = None

    async def _held(self, doc: dict[str, Any]) -> dict[str, Any]:
        seen = dict(doc)
        if self.hold is not None:
            await self.hold.wait()
        return seen

    async def token_by_digest(self, digest: str) -> dict[str, Any] | None:
        return await self._held(self.token) if digest == tokens.digest(_TOKEN) else None

    async def user(self, tenant_id: str, user_id: str) -> dict[str, Any]:
        return await self._held(self.user_doc)

    async def tenant(self, tenant_id: str) -> dict[str, Any]:
        return await self._held(self.tenant_doc)


async def _overtaken(accounts: _SlowAccounts, read, change) -> None:
    """`read` takes its documents from the store, then `change` happens and is announced."""
    accounts.hold = asyncio.Event()
    reading = asyncio.create_task(read())
    await asyncio.sleep(0)  # the read has taken the documents as they were
    change()
    accounts.hold.set()
    await reading  # it answers with what it read, before the change
    accounts.hold = None


async def test_a_token_revoked_while_its_read_is_in_flight_is_refused_afterwards():
    accounts = _SlowAccounts()
    auth = TokenAuthenticator(accounts, bootstrap_digest=None)  # type: ignore[arg-type]

    def revoke() -> None:  # another replica revokes it; its token.revoked event arrives here
        accounts.token["revoked"] = True
        auth.forget("tok_a")

    await _overtaken(accounts, lambda: auth.resolve(_TOKEN), revoke)
    with pytest.raises(Unauthorized) as refused:
        await auth.resolve(_TOKEN)
    assert refused.value.cause == "revoked token"


async def test_a_user_disabled_while_a_read_is_in_flight_is_refused_afterwards():
    accounts = _SlowAccounts()
    auth = TokenAuthenticator(accounts, bootstrap_digest=None)  # type: ignore[arg-type]
    await auth.resolve(_TOKEN)
    auth.forget_user("ten_a", "usr_a")  # e.g. a role change: the user is read again

    def disable() -> None:
        accounts.user_doc["status"] = "disabled"
        auth.forget_user("ten_a", "usr_a")

    await _overtaken(accounts, lambda: auth.user("ten_a", "usr_a"), disable)
    with pytest.raises(Unauthorized) as refused:
        await auth.resolve(_TOKEN)
    assert refused.value.cause == "user not active"


async def test_a_tenant_suspended_while_a_read_is_in_flight_is_refused_afterwards():
    accounts = _SlowAccounts()
    auth = TokenAuthenticator(accounts, bootstrap_digest=None)  # type: ignore[arg-type]

    def suspend() -> None:
        accounts.tenant_doc["status"] = "suspended"
        auth.forget_tenant("ten_a")

    await _overtaken(accounts, lambda: auth.tenant("ten_a"), suspend)
    with pytest.raises(Unauthorized) as refused:
        await auth.resolve(_TOKEN)
    assert refused.value.cause == "tenant not active"


class _SlowDevices:
    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"device_id": "dev_a", "tenant_id": "ten_a", "status": "active"}
        self.hold: asyncio.Event | None = None
        self.reads = 0

    async def device(self, tenant_id: str, device_id: str) -> dict[str, Any]:
        self.reads += 1
        seen = dict(self.doc)
        if self.hold is not None:
            await self.hold.wait()
        return seen


async def test_a_device_revoked_while_its_read_is_in_flight_is_not_cached_active():
    devices = _SlowDevices()
    auth = DeviceAuthenticator(devices, max_age_seconds=60)  # type: ignore[arg-type]
    devices.hold = asyncio.Event()
    reading = asyncio.create_task(auth.device("ten_a", "dev_a"))
    await asyncio.sleep(0)
    devices.doc["status"] = "revoked"
    auth.forget("ten_a", "dev_a")  # the device.revoked event from the replica that revoked it
    devices.hold.set()
    assert (await reading)["status"] == "active"
    devices.hold = None
    assert (await auth.device("ten_a", "dev_a"))["status"] == "revoked"


async def test_device_reads_without_a_change_in_between_are_served_from_the_cache():
    devices = _SlowDevices()
    auth = DeviceAuthenticator(devices, max_age_seconds=60)  # type: ignore[arg-type]
    await auth.device("ten_a", "dev_a")
    await auth.device("ten_a", "dev_a")
    assert devices.reads == 1
