"""policysvc's caches against the race between a read in flight and another instance's change.

A read from the store that was in flight when the change's event dropped the entry holds what was
there before: it may answer its caller, but must not be cached, or a stale policy, group, grant,
setting or device state would decide every later request on this replica.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from services.policysvc.cache import PolicyCache, TargetCache
from services.policysvc.decision import DeviceState

_POLICY = {"name": "prod", "targets": {"devices": "all", "keys": "all"},
           "rules": [{"id": "r1", "effect": "allow", "when": {"fact": "identity.region", "op": "in", "value": ["eu"]}}]}


class _SlowPolicyStore:
    """What policysvc reads per tenant; every read can be held mid-flight with what it had read."""

    def __init__(self) -> None:
        self.policies: list[dict[str, Any]] = []
        self.groups: list[dict[str, Any]] = []
        self.grants: dict[tuple[str, str], datetime] = {}
        self.settings: dict[str, Any] | None = None
        self.device_doc: dict[str, Any] = {"device_id": "dev_a", "status": "active", "groups": []}
        self.hold: asyncio.Event | None = None

    async def _held(self, value: Any) -> Any:
        seen = value.copy() if value is not None else None
        if self.hold is not None:
            await self.hold.wait()
        return seen

    async def active_policies(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self._held(self.policies)

    async def live_groups(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self._held(self.groups)

    async def remembered_grants(self, tenant_id: str) -> dict[tuple[str, str], datetime]:
        return await self._held(self.grants)

    async def tenant_settings(self, tenant_id: str) -> dict[str, Any] | None:
        return await self._held(self.settings)

    async def device(self, tenant_id: str, device_id: str) -> dict[str, Any]:
        return await self._held(self.device_doc)


async def _overtaken(store: _SlowPolicyStore, read, change) -> None:
    store.hold = asyncio.Event()
    reading = asyncio.create_task(read())
    await asyncio.sleep(0)  # the read has what the store held before the change
    change()  # another instance changes it; its event reaches this instance and drops the entry
    store.hold.set()
    await reading
    store.hold = None


async def test_a_policy_change_during_a_read_is_not_hidden_by_the_stale_read():
    store = _SlowPolicyStore()
    cache = PolicyCache(store)  # type: ignore[arg-type]

    def publish() -> None:
        store.policies.append({"policy_id": "pol_1", "version": 1, "document": _POLICY})
        cache.drop("ten_a")

    await _overtaken(store, lambda: cache.for_tenant("ten_a"), publish)
    assert [p.id for p in await cache.for_tenant("ten_a")] == ["pol_1"]


async def test_a_group_change_during_a_read_is_not_hidden_by_the_stale_read():
    store = _SlowPolicyStore()
    targets = TargetCache(store)  # type: ignore[arg-type]

    def create() -> None:
        store.groups.append({"group_id": "grp_1", "document": {"name": "pinned", "kind": "device", "members": ["dev_a"]}})
        targets.drop_groups("ten_a")

    await _overtaken(store, lambda: targets.groups("ten_a"), create)
    assert [g.name for g in (await targets.groups("ten_a")).device] == ["pinned"]


async def test_a_grant_revoked_during_a_read_is_not_cached():
    store = _SlowPolicyStore()
    store.grants[("dev_a", "key_a")] = datetime(2100, 1, 1, tzinfo=UTC)
    targets = TargetCache(store)  # type: ignore[arg-type]

    def revoke() -> None:
        store.grants.clear()
        targets.drop_remembered("ten_a")

    await _overtaken(store, lambda: targets.remembered("ten_a"), revoke)
    assert await targets.remembered("ten_a") == {}


async def test_a_settings_change_during_a_read_is_not_hidden_by_the_stale_read():
    store = _SlowPolicyStore()
    targets = TargetCache(store)  # type: ignore[arg-type]

    def change() -> None:
        store.settings = {"approval_expiry_seconds": 60}
        targets.drop_settings("ten_a")

    await _overtaken(store, lambda: targets.settings("ten_a"), change)
    assert (await targets.settings("ten_a")).approval_expiry_seconds == 60


async def test_a_device_quarantined_during_a_read_is_not_cached_active():
    store = _SlowPolicyStore()
    targets = TargetCache(store)  # type: ignore[arg-type]

    def quarantine() -> None:
        store.device_doc = {**store.device_doc, "status": "quarantined"}
        targets.drop_device("ten_a", "dev_a")

    await _overtaken(store, lambda: targets.device("ten_a", "dev_a"), quarantine)
    assert (await targets.device("ten_a", "dev_a")).status == "quarantined"


async def test_a_device_state_set_by_an_event_is_not_replaced_by_an_older_read():
    store = _SlowPolicyStore()
    targets = TargetCache(store)  # type: ignore[arg-type]

    def enrol() -> None:  # device.enrolled carries the new state; the store has it too
        store.device_doc = {**store.device_doc, "groups": ["golden"]}
        targets.set_device("ten_a", "dev_a", DeviceState(frozenset({"golden"}), "active"))

    await _overtaken(store, lambda: targets.device("ten_a", "dev_a"), enrol)
    assert (await targets.device("ten_a", "dev_a")).enrolled_groups == {"golden"}


async def test_reads_without_a_change_in_between_are_served_from_the_cache():
    store = _SlowPolicyStore()
    targets = TargetCache(store)  # type: ignore[arg-type]
    assert (await targets.settings("ten_a")).approval_expiry_seconds != 60
    store.settings = {"approval_expiry_seconds": 60}  # behind the cache's back: no event, no drop
    assert (await targets.settings("ten_a")).approval_expiry_seconds != 60
