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
        self.changes = MemoryChangeStore(publish=publish)
        self.evidence = MemoryEvidenceStore()

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

    async def live_enrollment(self, digest: str, now: datetime) -> dict[str, Any] | None:
        doc = self.enrollments.get(digest)
        return deepcopy(doc) if doc is not None and not doc["used"] and doc["expires_at"] > now else None

    async def insert_device(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        self.devices[(tenant_id, doc["device_id"])] = {**deepcopy(doc), "tenant_id": tenant_id}
        await self._publish(event)

    async def list_devices(self, tenant_id: str) -> list[dict[str, Any]]:
        docs = [d for (t, _), d in self.devices.items() if t == tenant_id]
        return deepcopy(sorted(docs, key=lambda d: d["enrolled_at"]))

    async def device(self, tenant_id: str, device_id: str) -> dict[str, Any] | None:
        doc = self.devices.get((tenant_id, device_id))
        return deepcopy(doc) if doc is not None else None

    async def device_bound_to(self, tenant_id: str, subject: str) -> str | None:
        found = [d for (t, _), d in self.devices.items()
                 if t == tenant_id and d.get("subject") == subject and d["status"] == "active"]
        return found[0]["device_id"] if found else None

    async def count_active_devices(self, tenant_id: str) -> int:
        return sum(1 for (t, _), d in self.devices.items() if t == tenant_id and d["status"] == "active")

    async def register_tpm(self, tenant_id: str, device_id: str, tpm: dict[str, Any], event: Event) -> bool:
        doc = self.devices.get((tenant_id, device_id))
        if doc is None or doc["status"] != "active":
            return False
        doc["tpm"] = deepcopy(tpm)
        await self._publish(event)
        return True

    async def note_tpm_counters(self, tenant_id: str, device_id: str, counters: dict[str, int]) -> None:
        doc = self.devices.get((tenant_id, device_id))
        if doc is not None and isinstance(doc.get("tpm"), dict):
            doc["tpm"]["counters"] = dict(counters)

    async def revoke_device(self, tenant_id: str, device_id: str, at: datetime, event: Event) -> bool:
        doc = self.devices.get((tenant_id, device_id))
        if doc is None or doc["status"] != "active":
            return False
        doc.update(status="revoked", revoked_at=at)
        await self._publish(event)
        return True

    async def record_event(self, tenant_id: str, event: Event) -> None:
        await self._publish(event)

    async def forget_published_events(self) -> int:
        return 0

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


class MemoryChangeStore:
    """The in-memory twin of `ChangeStore`."""

    def __init__(self, *, publish: Publish):
        self._publish = publish
        self.changes: dict[tuple[str, str], dict[str, Any]] = {}

    async def create_indexes(self) -> None:
        return None

    async def insert_change(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        self.changes[(tenant_id, doc["change_id"])] = {**deepcopy(doc), "tenant_id": tenant_id}
        await self._publish(event)

    async def change(self, tenant_id: str, change_id: str) -> dict[str, Any] | None:
        doc = self.changes.get((tenant_id, change_id))
        return deepcopy(doc) if doc is not None else None

    async def pending_changes(self, tenant_id: str, now: datetime) -> list[dict[str, Any]]:
        docs = [d for (t, _), d in self.changes.items() if t == tenant_id and d["status"] == "pending"
                and d["expires_at"] > now]
        return deepcopy(sorted(docs, key=lambda d: d["created_at"]))

    async def confirm_change(self, tenant_id: str, change_id: str, *, confirmed_by: str, at: datetime,
                             event: Event) -> bool:
        doc = self.changes.get((tenant_id, change_id))
        if doc is None or doc["status"] != "pending" or doc["expires_at"] <= at:
            return False
        doc.update(status="confirmed", confirmed_by=confirmed_by, confirmed_at=at)
        await self._publish(event)
        return True

    async def use_change(self, tenant_id: str, change_id: str, *, requested_by: str, method: str, path: str,
                         body_sha256: str, at: datetime) -> dict[str, Any] | None:
        doc = self.changes.get((tenant_id, change_id))
        wanted = {"status": "confirmed", "requested_by": requested_by, "method": method, "path": path,
                  "body_sha256": body_sha256}
        if doc is None or any(doc.get(k) != v for k, v in wanted.items()) or doc["expires_at"] <= at:
            return None
        doc.update(status="used", used_at=at)
        return deepcopy(doc)


class MemoryEvidenceStore:
    """The in-memory twin of `EvidenceStore`."""

    def __init__(self) -> None:
        self.challenges: dict[tuple[str, str], dict[str, Any]] = {}
        self.first_uses: dict[tuple[str, str], dict[str, Any]] = {}
        self.activations: dict[tuple[str, str], dict[str, Any]] = {}

    async def create_indexes(self) -> None:
        return None

    async def insert_challenge(self, tenant_id: str, challenge: str, *, holder: str, expires_at: datetime) -> None:
        self.challenges[(tenant_id, challenge)] = {"holder": holder, "expires_at": expires_at}

    async def take_challenge(self, tenant_id: str, challenge: str, *, holder: str, now: datetime) -> bool:
        doc = self.challenges.get((tenant_id, challenge))
        if doc is None or doc["holder"] != holder or doc["expires_at"] <= now:
            return False
        del self.challenges[(tenant_id, challenge)]
        return True

    async def forget_expired_challenges(self, now: datetime) -> int:
        expired = [k for k, d in self.challenges.items() if d["expires_at"] < now]
        for key in expired:
            del self.challenges[key]
        stale = [k for k, d in self.activations.items() if d["expires_at"] < now]
        for key in stale:
            del self.activations[key]
        return len(expired) + len(stale)

    async def insert_activation(self, tenant_id: str, doc: dict[str, Any]) -> None:
        self.activations[(tenant_id, doc["activation_id"])] = {**deepcopy(doc), "tenant_id": tenant_id}

    async def take_activation(self, tenant_id: str, activation_id: str, *, device_id: str,
                              now: datetime) -> dict[str, Any] | None:
        doc = self.activations.get((tenant_id, activation_id))
        if doc is None or doc["device_id"] != device_id or doc["expires_at"] <= now:
            return None
        return self.activations.pop((tenant_id, activation_id))

    async def first_use(self, tenant_id: str, subject: str) -> dict[str, Any] | None:
        doc = self.first_uses.get((tenant_id, subject))
        return deepcopy(doc) if doc is not None else None

    async def claim_first_use(self, tenant_id: str, record: dict[str, Any]) -> bool:
        if (tenant_id, record["subject"]) in self.first_uses:
            return False
        self.first_uses[(tenant_id, record["subject"])] = deepcopy(record)
        return True

    async def advance_first_use(self, tenant_id: str, record: dict[str, Any]) -> bool:
        doc = self.first_uses.get((tenant_id, record["subject"]))
        if doc is None or doc.get("device_id") != record["device_id"]:
            return False
        doc["pending_time"] = record["pending_time"]
        return True
