"""The gateway's collections: tenants, API tokens (digests only), enrollments, devices, nonces."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared import outbox
from shared.events import Event
from shared.group_insert import GroupInserter
from shared.store import TenantCollection


class GatewayStore:
    def __init__(self, db: AsyncDatabase):
        self.tenants = TenantCollection(db["tenants"])
        self.tokens = TenantCollection(db["tokens"])
        self.enrollments = TenantCollection(db["enrollments"])
        self.devices = TenantCollection(db["devices"])
        self.nonces = TenantCollection(db["nonces"])
        self._nonce_inserts = GroupInserter(self.nonces.raw)

    @property
    def outbox_collections(self):
        return [self.tenants.raw, self.tokens.raw, self.enrollments.raw, self.devices.raw]

    async def create_indexes(self) -> None:
        await self.tenants.raw.create_index([("tenant_id", ASCENDING)], unique=True)
        await self.tokens.raw.create_index([("digest", ASCENDING)], unique=True)
        await self.tokens.raw.create_index([("tenant_id", ASCENDING), ("token_id", ASCENDING)], unique=True)
        await self.enrollments.raw.create_index([("digest", ASCENDING)], unique=True)
        await self.devices.raw.create_index([("tenant_id", ASCENDING), ("device_id", ASCENDING)], unique=True)
        await self.nonces.raw.create_index(
            [("tenant_id", ASCENDING), ("device_id", ASCENDING), ("nonce", ASCENDING)], unique=True
        )
        await self.nonces.raw.create_index([("expires_at", ASCENDING)])

    # Tokens and enrollment tokens are looked up by digest before the tenant is known: the
    # digest is the credential. Everything found that way then carries its tenant id.
    async def token_by_digest(self, digest: str) -> dict[str, Any] | None:
        return await self.tokens.raw.find_one({"digest": digest})

    async def take_enrollment(self, digest: str, now: datetime) -> dict[str, Any] | None:
        """Consumes a single-use enrollment token atomically (compare-and-swap on `used`)."""
        doc = await self.enrollments.raw.find_one({"digest": digest})
        if doc is None or doc["used"] or doc["expires_at"] <= now:
            return None
        result = await self.enrollments.raw.update_one(
            {"digest": digest, "tenant_id": doc["tenant_id"], "used": False}, {"$set": {"used": True, "used_at": now}}
        )
        return doc if result.modified_count == 1 else None

    async def insert_with_event(self, collection: TenantCollection, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        await collection.insert(tenant_id, outbox.staged(doc, event))

    async def remember_nonce(self, tenant_id: str, device_id: str, nonce: str, expires_at: datetime) -> bool:
        """False when the nonce was seen before: a replay."""
        return await self._nonce_inserts.insert(
            tenant_id, {"device_id": device_id, "nonce": nonce, "expires_at": expires_at}
        )

    async def forget_expired_nonces(self, now: datetime) -> int:
        # Housekeeping across tenants by expiry only; it reads nothing back.
        return (await self.nonces.raw.delete_many({"expires_at": {"$lt": now}})).deleted_count
