"""What the gateway keeps to verify evidence: single-use challenges, and the instances whose
identity documents have been used (trust on first use of an AWS (account, instance))."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.store import TenantCollection


class EvidenceStore:
    def __init__(self, db: AsyncDatabase):
        self.challenges = TenantCollection(db["challenges"])
        self.first_uses = TenantCollection(db["first_uses"])
        self.activations = TenantCollection(db["tpm_activations"])

    async def create_indexes(self) -> None:
        await self.challenges.raw.create_index([("tenant_id", ASCENDING), ("challenge", ASCENDING)], unique=True)
        await self.challenges.raw.create_index([("expires_at", ASCENDING)])
        await self.first_uses.raw.create_index([("tenant_id", ASCENDING), ("subject", ASCENDING)], unique=True)
        await self.activations.raw.create_index([("tenant_id", ASCENDING), ("activation_id", ASCENDING)], unique=True)
        await self.activations.raw.create_index([("expires_at", ASCENDING)])

    # --- challenges ---

    async def insert_challenge(self, tenant_id: str, challenge: str, *, holder: str, expires_at: datetime) -> None:
        """``holder`` is the device (``dev_…``) or the enrollment (``enr_…``) the challenge was issued to."""
        await self.challenges.insert(tenant_id, {"challenge": challenge, "holder": holder, "expires_at": expires_at})

    async def take_challenge(self, tenant_id: str, challenge: str, *, holder: str, now: datetime) -> bool:
        """Consumes a live challenge issued to ``holder`` in this tenant: True once, then never again."""
        return await self.challenges.delete_one(
            tenant_id, {"challenge": challenge, "holder": holder, "expires_at": {"$gt": now}}) == 1

    async def forget_expired_challenges(self, now: datetime) -> int:
        # Housekeeping across tenants by expiry only; it reads nothing back.
        return (await self.challenges.raw.delete_many({"expires_at": {"$lt": now}})).deleted_count \
            + (await self.activations.raw.delete_many({"expires_at": {"$lt": now}})).deleted_count

    # --- TPM credential activation ---

    async def insert_activation(self, tenant_id: str, doc: dict[str, Any]) -> None:
        """A pending TPM enrolment: the sealed secret's digest and the AK, for one device, until it expires."""
        await self.activations.insert(tenant_id, doc)

    async def take_activation(self, tenant_id: str, activation_id: str, *, device_id: str,
                              now: datetime) -> dict[str, Any] | None:
        """Consumes a live pending activation of this device: one answer only, right or wrong."""
        doc = await self.activations.raw.find_one_and_delete(
            {"tenant_id": tenant_id, "activation_id": activation_id, "device_id": device_id, "expires_at": {"$gt": now}})
        return doc

    # --- trust on first use ---

    async def first_use(self, tenant_id: str, subject: str) -> dict[str, Any] | None:
        return await self.first_uses.find_one(tenant_id, {"subject": subject}, projection={"_id": 0, "tenant_id": 0})

    async def claim_first_use(self, tenant_id: str, record: dict[str, Any]) -> bool:
        """False when another request claimed this instance first (the unique index decides)."""
        try:
            await self.first_uses.insert(tenant_id, dict(record))
        except DuplicateKeyError:
            return False
        return True

    async def advance_first_use(self, tenant_id: str, record: dict[str, Any]) -> bool:
        """Moves the kept launch time forward for the instance's holder; False if the record changed."""
        return await self.first_uses.update_one(
            tenant_id, {"subject": record["subject"], "device_id": record["device_id"]},
            {"$set": {"pending_time": record["pending_time"]}}) == 1
