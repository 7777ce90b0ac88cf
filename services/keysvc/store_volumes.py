"""keysvc's volume-recovery queries: single-use escrow keys, escrowed passphrases (wrapped under the
tenant KEK) and the one release each break-glass request gets (mixed into KeyStore)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING

from shared import outbox as staging
from shared.events import Event
from shared.store import DuplicateKeyError, TenantCollection


class VolumeRecoveryQueries:
    """Mixed into KeyStore, which creates the collections."""

    escrow_keys: TenantCollection
    volume_recovery: TenantCollection
    recovery_releases: TenantCollection

    async def create_volume_indexes(self) -> None:
        await self.escrow_keys.raw.create_index([("tenant_id", ASCENDING), ("escrow_token", ASCENDING)], unique=True)
        await self.volume_recovery.raw.create_index([("tenant_id", ASCENDING), ("volume_id", ASCENDING)], unique=True)
        await self.recovery_releases.raw.create_index([("tenant_id", ASCENDING), ("request_id", ASCENDING)],
                                                      unique=True)

    async def insert_escrow_key(self, tenant_id: str, doc: dict[str, Any]) -> None:
        await self.escrow_keys.insert(tenant_id, doc)

    async def escrow_key(self, tenant_id: str, token: str) -> dict[str, Any] | None:
        return await self.escrow_keys.find_one(tenant_id, {"escrow_token": token, "used": False})

    async def consume_escrow_key(self, tenant_id: str, token: str, at: datetime) -> bool:
        """Single use: False when another call spent it first."""
        return bool(await self.escrow_keys.update_one(tenant_id, {"escrow_token": token, "used": False},
                                                      {"$set": {"used": True, "used_at": at}, "$unset": {"wrapped": ""}}))

    async def save_recovery(self, tenant_id: str, volume_id: str, fields: dict[str, Any], event: Event) -> bool:
        """Stores (or replaces) a volume's escrowed passphrase with its event staged; True if it replaced one."""
        try:
            await self.volume_recovery.insert(tenant_id, staging.staged({"volume_id": volume_id, **fields}, event))
            return False
        except DuplicateKeyError:
            await self.volume_recovery.update_one(tenant_id, {"volume_id": volume_id},
                                                  {"$set": fields, "$push": {staging.FIELD: staging.entry(event)}})
            return True

    async def recovery(self, tenant_id: str, volume_id: str) -> dict[str, Any] | None:
        return await self.volume_recovery.find_one(tenant_id, {"volume_id": volume_id})

    async def claim_recovery_release(self, tenant_id: str, request_id: str, at: datetime) -> bool:
        """One release per break-glass request: False when it was released already."""
        try:
            await self.recovery_releases.insert(tenant_id, {"request_id": request_id, "at": at})
        except DuplicateKeyError:
            return False
        return True
