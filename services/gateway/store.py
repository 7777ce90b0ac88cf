"""The gateway's store: enrollments, devices and nonces here, accounts in `accounts/store.py`,
and the outbox that stages every event with the write that caused it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared.events import Event
from shared.group_insert import GroupInserter
from shared.outbox import Outbox
from shared.store import TenantCollection

from .accounts.store import AccountStore
from .store_changes import ChangeStore
from .store_evidence import EvidenceStore
from .store_outbox import insert_staged, update_staged
from .store_volumes import VolumeStore


class GatewayStore:
    def __init__(self, db: AsyncDatabase, *, publish: Callable[[Event], Awaitable[None]]):
        self._db = db
        self.enrollments = TenantCollection(db["enrollments"])
        self.devices = TenantCollection(db["devices"])
        self.nonces = TenantCollection(db["nonces"])
        # Events with no document of their own (a refused credential, a failed sign-in): each is
        # written here, staged, then published; the housekeeping sweeps the published ones.
        self.events = TenantCollection(db["events"])
        self._nonce_inserts = GroupInserter(self.nonces.raw)
        self.outbox = Outbox(publish, [db["tenants"], db["tokens"], db["enrollments"], db["devices"], db["users"],
                                       db["changes"], db["sessions"], db["events"], db["volumes"],
                                       db["volume_attachments"]])
        self.accounts = AccountStore(db, outbox=self.outbox)
        self.changes = ChangeStore(db, outbox=self.outbox)
        self.evidence = EvidenceStore(db)
        self.volumes = VolumeStore(db, outbox=self.outbox)

    async def ping(self) -> None:
        """Raises `STORE_UNAVAILABLE` when the store does not answer (within the client's timeouts)."""
        await self._db.command("ping")

    async def create_indexes(self) -> None:
        await self.accounts.create_indexes()
        await self.changes.create_indexes()
        await self.evidence.create_indexes()
        await self.volumes.create_indexes()
        await self.enrollments.raw.create_index([("digest", ASCENDING)], unique=True)
        await self.devices.raw.create_index([("tenant_id", ASCENDING), ("device_id", ASCENDING)], unique=True)
        await self.devices.raw.create_index([("tenant_id", ASCENDING), ("subject", ASCENDING)])
        # A nonce's `_id` is its (tenant, device, nonce) key, so `_id` uniqueness is the replay check:
        # no unique index of its own (each index costs the embedded store a write per insert). A store
        # created before keeps its old unique index, which checks the same key on the same fields.
        await self.nonces.raw.create_index([("expires_at", ASCENDING)])
        await self.outbox.create_indexes()

    # --- enrollments and devices ---

    async def insert_enrollment(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        await insert_staged(self.outbox, self.enrollments, tenant_id, doc, event)

    async def take_enrollment(self, digest: str, now: datetime) -> dict[str, Any] | None:
        """Consumes a single-use enrollment token atomically (compare-and-swap on `used`).
        Looked up by digest before the tenant is known: the digest is the credential."""
        doc = await self.enrollments.raw.find_one({"digest": digest})
        if doc is None or doc["used"] or doc["expires_at"] <= now:
            return None
        result = await self.enrollments.raw.update_one(
            {"digest": digest, "tenant_id": doc["tenant_id"], "used": False}, {"$set": {"used": True, "used_at": now}}
        )
        return doc if result.modified_count == 1 else None

    async def live_enrollment(self, digest: str, now: datetime) -> dict[str, Any] | None:
        """An unused, unexpired enrollment by its token's digest, without spending it."""
        doc = await self.enrollments.raw.find_one({"digest": digest, "used": False})
        return doc if doc is not None and doc["expires_at"] > now else None

    async def insert_device(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        await insert_staged(self.outbox, self.devices, tenant_id, doc, event)

    async def list_devices(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self.devices.find(tenant_id, {}, sort=[("enrolled_at", 1)])

    async def device(self, tenant_id: str, device_id: str) -> dict[str, Any] | None:
        return await self.devices.find_one(tenant_id, {"device_id": device_id})

    async def count_active_devices(self, tenant_id: str) -> int:
        return await self.devices.count(tenant_id, {"status": "active"})

    async def device_bound_to(self, tenant_id: str, subject: str) -> str | None:
        """The active device that enrolled with evidence naming ``subject`` (an instance), if any."""
        doc = await self.devices.find_one(tenant_id, {"subject": subject, "status": "active"})
        return doc["device_id"] if doc is not None else None

    async def register_tpm(self, tenant_id: str, device_id: str, tpm: dict[str, Any], event: Event) -> bool:
        """The device's attestation key, once its credential activation succeeded; False if not active."""
        return await update_staged(self.outbox, self.devices, tenant_id, {"device_id": device_id, "status": "active"},
                                   {"$set": {"tpm": tpm}}, event)

    async def note_tpm_counters(self, tenant_id: str, device_id: str, counters: dict[str, int]) -> None:
        """The boot counters of the device's last accepted quote (the key request's event carries them too)."""
        await self.devices.update_one(tenant_id, {"device_id": device_id}, {"$set": {"tpm.counters": counters}})

    async def revoke_device(self, tenant_id: str, device_id: str, at: datetime, event: Event) -> bool:
        """False when no active device has this id."""
        return await update_staged(self.outbox, self.devices, tenant_id, {"device_id": device_id, "status": "active"},
                                   {"$set": {"status": "revoked", "revoked_at": at}}, event)

    # --- events of their own ---

    async def record_event(self, tenant_id: str, event: Event) -> None:
        """Durably keeps an event that changes no document, then publishes it (see store_outbox)."""
        await insert_staged(self.outbox, self.events, tenant_id, {"event_id": event.event_id}, event)

    async def forget_published_events(self) -> int:
        # Housekeeping across tenants: documents whose one event the broker has confirmed.
        return (await self.events.raw.delete_many({"_outbox": {"$size": 0}})).deleted_count

    # --- signature nonces ---

    async def remember_nonce(self, tenant_id: str, device_id: str, nonce: str, expires_at: datetime) -> bool:
        """False when the nonce was seen before: a replay."""
        key = {"tenant_id": tenant_id, "device_id": device_id, "nonce": nonce}
        # The fields stay outside `_id` too: a store's index from before checks them.
        return await self._nonce_inserts.insert(
            tenant_id, {"_id": key, "device_id": device_id, "nonce": nonce, "expires_at": expires_at}
        )

    async def forget_expired_nonces(self, now: datetime) -> int:
        # Housekeeping across tenants by expiry only; it reads nothing back.
        return (await self.nonces.raw.delete_many({"expires_at": {"$lt": now}})).deleted_count
