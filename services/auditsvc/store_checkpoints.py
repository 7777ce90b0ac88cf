"""Signed checkpoints of each tenant's chain, and the public keys that ever signed one."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared.events import Event
from shared.outbox import staged
from shared.store import DuplicateKeyError, TenantCollection

_SHOWN = {"_id": 0, "_outbox": 0}


class CheckpointStore:
    def __init__(self, db: AsyncDatabase):
        self.checkpoints = TenantCollection(db["checkpoints"])
        # Public halves of every key that ever signed a checkpoint (not tenant content).
        self.signing_keys = db["signing_keys"]

    @property
    def collection(self) -> Any:
        """Where checkpoint events are staged (the outbox publishes from here)."""
        return self.checkpoints.raw

    async def create_indexes(self) -> None:
        await self.checkpoints.raw.create_index([("tenant_id", ASCENDING), ("seq", ASCENDING)], unique=True)
        await self.signing_keys.create_index([("key_id", ASCENDING)], unique=True)

    async def insert_checkpoint(self, tenant_id: str, checkpoint: dict[str, Any], event: Event) -> bool:
        """False if this head is already signed."""
        try:
            await self.checkpoints.insert(tenant_id, staged(checkpoint, event))
        except DuplicateKeyError:
            return False
        return True

    async def last_checkpoint(self, tenant_id: str) -> dict[str, Any] | None:
        docs = await self.checkpoints.find(tenant_id, {}, sort=[("seq", DESCENDING)], limit=1, projection=_SHOWN)
        return docs[0] if docs else None

    async def checkpoints_after(self, tenant_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        return await self.checkpoints.find(tenant_id, {"seq": {"$gt": after}}, sort=[("seq", 1)], limit=limit,
                                           projection=_SHOWN)

    async def checkpoints_between(self, tenant_id: str, first: int, last: int) -> list[dict[str, Any]]:
        return await self.checkpoints.find(tenant_id, {"seq": {"$gte": first, "$lte": last}}, sort=[("seq", 1)],
                                           projection=_SHOWN)

    async def register_signing_key(self, doc: dict[str, Any]) -> None:
        """Record a signing key's public half the first time it signs; later starts change nothing."""
        await self.signing_keys.update_one({"key_id": doc["key_id"]}, {"$setOnInsert": doc}, upsert=True)

    async def signing_keys_in_use_order(self) -> list[dict[str, Any]]:
        return await self.signing_keys.find({}, {"_id": 0}).sort("first_used", 1).to_list(None)
