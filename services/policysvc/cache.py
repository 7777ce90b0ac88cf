"""What a decision reads, cached: compiled policies, and per tenant its groups, grants and settings.

Policies are cached per tenant as compiled objects and dropped by `policy.*` events, so a decision
costs one evaluation and one write (the recorded decision).

Groups, approve-and-remember grants and settings are loaded once per tenant; devices (their
enrollment groups and quarantine state) once per device. Events update or drop entries, on this
instance and on every other (each listens on its own queue), so the release path reads nothing.
A read in flight when an entry is dropped is not cached (see `shared.cache_drops`).
"""

from __future__ import annotations

from datetime import datetime

from shared.cache_drops import Drops
from shared.commands_policy import PolicySettings

from . import groups as group_model
from .decision import UNKNOWN_DEVICE, DeviceState, device_state
from .rules import Policy, parse_policy
from .store import PolicyStore

MAX_CACHED_VERSIONS = 10_000


class PolicyCache:
    """Compiled policies per tenant; a tenant's entry is dropped whenever one of its policies changes."""

    def __init__(self, store: PolicyStore):
        self._store = store
        self._tenants: dict[str, list[Policy]] = {}
        self._versions: dict[tuple[str, str, int], Policy] = {}
        self._drops = Drops()

    async def for_tenant(self, tenant_id: str) -> list[Policy]:
        cached = self._tenants.get(tenant_id)
        if cached is None:
            mark = self._drops.mark()
            heads = await self._store.active_policies(tenant_id)
            cached = [parse_policy(h["document"], policy_id=h["policy_id"], version=h["version"]) for h in heads]
            if self._drops.unchanged(mark):
                self._tenants[tenant_id] = cached
        return cached

    def drop(self, tenant_id: str) -> None:
        self._drops.note()
        self._tenants.pop(tenant_id, None)

    async def version(self, tenant_id: str, policy_id: str, version: int) -> Policy | None:
        """One compiled policy version, current or not (versions never change, so they stay cached)."""
        entry = (tenant_id, policy_id, version)
        cached = self._versions.get(entry)
        if cached is None:
            doc = await self._store.policy_version(tenant_id, policy_id, version)
            if doc is None:
                return None
            cached = self._versions[entry] = parse_policy(doc["document"], policy_id=policy_id, version=version)
            if len(self._versions) > MAX_CACHED_VERSIONS:
                self._versions.pop(next(iter(self._versions)))
        return cached


class TargetCache:
    """Groups, remembered grants and settings per tenant, and device states per device."""

    def __init__(self, store: PolicyStore, *, max_devices: int = 100_000):
        self._store = store
        self._groups: dict[str, group_model.TenantGroups] = {}
        self._remembered: dict[str, dict[tuple[str, str], datetime]] = {}
        self._settings: dict[str, PolicySettings] = {}
        self._devices: dict[tuple[str, str], DeviceState] = {}
        self._max_devices = max_devices
        self._drops = Drops()

    async def groups(self, tenant_id: str) -> group_model.TenantGroups:
        cached = self._groups.get(tenant_id)
        if cached is None:
            mark = self._drops.mark()
            docs = await self._store.live_groups(tenant_id)
            cached = group_model.TenantGroups.of(
                group_model.parse_group(d["document"], group_id=d["group_id"]) for d in docs
            )
            if self._drops.unchanged(mark):
                self._groups[tenant_id] = cached
        return cached

    async def remembered(self, tenant_id: str) -> dict[tuple[str, str], datetime]:
        cached = self._remembered.get(tenant_id)
        if cached is None:
            mark = self._drops.mark()
            cached = await self._store.remembered_grants(tenant_id)
            if self._drops.unchanged(mark):
                self._remembered[tenant_id] = cached
        return cached

    async def settings(self, tenant_id: str) -> PolicySettings:
        cached = self._settings.get(tenant_id)
        if cached is None:
            mark = self._drops.mark()
            stored = await self._store.tenant_settings(tenant_id)
            cached = PolicySettings.model_validate(stored) if stored else PolicySettings()
            if self._drops.unchanged(mark):
                self._settings[tenant_id] = cached
        return cached

    async def device(self, tenant_id: str, device_id: str) -> DeviceState:
        entry = (tenant_id, device_id)
        cached = self._devices.get(entry)
        if cached is None:
            mark = self._drops.mark()
            cached = device_state(await self._store.device(tenant_id, device_id))
            # An unknown device may be enrolled any moment; a read overtaken by a change is stale.
            if cached is not UNKNOWN_DEVICE and self._drops.unchanged(mark):
                self._put_device(entry, cached)
        return cached

    def _put_device(self, entry: tuple[str, str], state: DeviceState) -> None:
        self._devices[entry] = state
        if len(self._devices) > self._max_devices:
            self._devices.pop(next(iter(self._devices)))

    def set_device(self, tenant_id: str, device_id: str, state: DeviceState) -> None:
        self._drops.note()  # a read in flight holds an older state and must not replace this one
        self._put_device((tenant_id, device_id), state)

    def drop_device(self, tenant_id: str, device_id: str) -> None:
        self._drops.note()
        self._devices.pop((tenant_id, device_id), None)

    def drop_groups(self, tenant_id: str) -> None:
        self._drops.note()
        self._groups.pop(tenant_id, None)

    def drop_remembered(self, tenant_id: str) -> None:
        self._drops.note()
        self._remembered.pop(tenant_id, None)

    def drop_settings(self, tenant_id: str) -> None:
        self._drops.note()
        self._settings.pop(tenant_id, None)
