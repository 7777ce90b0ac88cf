"""An in-memory twin of `GatewayStore` (plain dicts) for fast view and guard tests."""

from __future__ import annotations

from copy import deepcopy
from datetime import datetime
from typing import Any

from shared.events import Event

from .accounts.store_memory import MemoryAccountStore, Publish


class MemoryGatewayStore:
    def __init__(self, *, publish: Publish):
        self._publish = publish
        self.enrollments: dict[str, dict[str, Any]] = {}  # by digest
        self.devices: dict[tuple[str, str], dict[str, Any]] = {}
        self.nonces: dict[tuple[str, str, str], datetime] = {}
        self.accounts = MemoryAccountStore(publish=publish)

    async def ping(self) -> None:
        return None

    async def create_indexes(self) -> None:
        return None

    async def insert_enrollment(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        self.enrollments[doc["digest"]] = {**deepcopy(doc), "tenant_id": tenant_id}
        await self._publish(event)

    async def take_enrollment(self, digest: str, now: datetime) -> dict[str, Any] | None:
        doc = self.enrollments.get(digest)
        if doc is None or doc["used"] or doc["expires_at"] <= now:
            return None
        found = deepcopy(doc)
        doc.update(used=True, used_at=now)
        return found

    async def insert_device(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        self.devices[(tenant_id, doc["device_id"])] = {**deepcopy(doc), "tenant_id": tenant_id}
        await self._publish(event)

    async def list_devices(self, tenant_id: str) -> list[dict[str, Any]]:
        docs = [d for (t, _), d in self.devices.items() if t == tenant_id]
        return deepcopy(sorted(docs, key=lambda d: d["enrolled_at"]))

    async def device(self, tenant_id: str, device_id: str) -> dict[str, Any] | None:
        doc = self.devices.get((tenant_id, device_id))
        return deepcopy(doc) if doc is not None else None

    async def count_active_devices(self, tenant_id: str) -> int:
        return sum(1 for (t, _), d in self.devices.items() if t == tenant_id and d["status"] == "active")

    async def revoke_device(self, tenant_id: str, device_id: str, at: datetime, event: Event) -> bool:
        doc = self.devices.get((tenant_id, device_id))
        if doc is None or doc["status"] != "active":
            return False
        doc.update(status="revoked", revoked_at=at)
        await self._publish(event)
        return True

    async def remember_nonce(self, tenant_id: str, device_id: str, nonce: str, expires_at: datetime) -> bool:
        if (tenant_id, device_id, nonce) in self.nonces:
            return False
        self.nonces[(tenant_id, device_id, nonce)] = expires_at
        return True

    async def forget_expired_nonces(self, now: datetime) -> int:
        expired = [k for k, until in self.nonces.items() if until < now]
        for key in expired:
            del self.nonces[key]
        return len(expired)
