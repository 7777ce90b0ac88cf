"""What a decision needs besides policies, cached per tenant and kept fresh by events.

Groups, approve-and-remember grants and settings are loaded once per tenant; devices (their
enrollment groups and quarantine state) once per device. Events update or drop entries, on this
instance and on every other (each listens on its own queue), so the release path reads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import groups as group_model
from .approvals import PolicySettings
from .store import PolicyStore


@dataclass(frozen=True, slots=True)
class DeviceState:
    enrolled_groups: frozenset[str]
    status: str  # active, revoked, quarantined, unknown
    quarantine_reason: str = ""
    released_keys: frozenset[str] = frozenset()


UNKNOWN_DEVICE = DeviceState(frozenset(), "unknown")


def device_state(doc: dict[str, Any] | None) -> DeviceState:
    if doc is None:
        return UNKNOWN_DEVICE
    return DeviceState(
        frozenset(doc.get("groups", ())), doc.get("status", "active"), doc.get("quarantine_reason", ""),
        frozenset(doc.get("released_keys", ())),
    )


class TargetCache:
    def __init__(self, store: PolicyStore, *, max_devices: int = 100_000):
        self._store = store
        self._groups: dict[str, group_model.TenantGroups] = {}
        self._remembered: dict[str, dict[tuple[str, str], datetime]] = {}
        self._settings: dict[str, PolicySettings] = {}
        self._devices: dict[tuple[str, str], DeviceState] = {}
        self._max_devices = max_devices

    async def groups(self, tenant_id: str) -> group_model.TenantGroups:
        cached = self._groups.get(tenant_id)
        if cached is None:
            docs = await self._store.groups.find(tenant_id, {"deleted": False})
            cached = group_model.TenantGroups.of(
                group_model.parse_group(d["document"], group_id=d["group_id"]) for d in docs
            )
            self._groups[tenant_id] = cached
        return cached

    async def remembered(self, tenant_id: str) -> dict[tuple[str, str], datetime]:
        cached = self._remembered.get(tenant_id)
        if cached is None:
            docs = await self._store.remembered.find(tenant_id, {})
            cached = {(d["device_id"], d["key_id"]): d["until"] for d in docs}
            self._remembered[tenant_id] = cached
        return cached

    async def settings(self, tenant_id: str) -> PolicySettings:
        cached = self._settings.get(tenant_id)
        if cached is None:
            doc = await self._store.settings.find_one(tenant_id, {})
            cached = PolicySettings.model_validate(doc["settings"]) if doc else PolicySettings()
            self._settings[tenant_id] = cached
        return cached

    async def device(self, tenant_id: str, device_id: str) -> DeviceState:
        entry = (tenant_id, device_id)
        cached = self._devices.get(entry)
        if cached is None:
            cached = device_state(await self._store.devices.find_one(tenant_id, {"device_id": device_id}))
            if cached is not UNKNOWN_DEVICE:  # an unknown device may be enrolled any moment
                self._put_device(entry, cached)
        return cached

    def _put_device(self, entry: tuple[str, str], state: DeviceState) -> None:
        self._devices[entry] = state
        if len(self._devices) > self._max_devices:
            self._devices.pop(next(iter(self._devices)))

    def set_device(self, tenant_id: str, device_id: str, state: DeviceState) -> None:
        self._put_device((tenant_id, device_id), state)

    def drop_device(self, tenant_id: str, device_id: str) -> None:
        self._devices.pop((tenant_id, device_id), None)

    def drop_groups(self, tenant_id: str) -> None:
        self._groups.pop(tenant_id, None)

    def drop_remembered(self, tenant_id: str) -> None:
        self._remembered.pop(tenant_id, None)

    def drop_settings(self, tenant_id: str) -> None:
        self._settings.pop(tenant_id, None)
