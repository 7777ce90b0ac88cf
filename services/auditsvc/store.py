"""auditsvc's collections: chained records, signed checkpoints, forwarders, archives, settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared.store import TenantCollection

from .chain import ChainHead


class AuditStore:
    def __init__(self, db: AsyncDatabase):
        self.records = TenantCollection(db["records"])
        self.checkpoints = TenantCollection(db["checkpoints"])
        self.forwarders = TenantCollection(db["forwarders"])
        self.archives = TenantCollection(db["archives"])
        self.settings = TenantCollection(db["settings"])
        # Public halves of every key that ever signed a checkpoint (not tenant content).
        self.signing_keys = db["signing_keys"]

    @property
    def outbox_collections(self) -> list[Any]:
        return [self.checkpoints.raw, self.forwarders.raw, self.archives.raw, self.settings.raw]

    async def create_indexes(self) -> None:
        raw = self.records.raw
        await raw.create_index([("tenant_id", ASCENDING), ("seq", ASCENDING)], unique=True)
        await raw.create_index([("tenant_id", ASCENDING), ("event_id", ASCENDING)], unique=True)
        for field in ("time", "action", "actor.id", "resource.id", "outcome", "correlation_id",
                      "details.device_id", "details.key_id"):
            await raw.create_index([("tenant_id", ASCENDING), (field, ASCENDING), ("seq", ASCENDING)])
        await self.checkpoints.raw.create_index([("tenant_id", ASCENDING), ("seq", ASCENDING)], unique=True)
        await self.forwarders.raw.create_index([("tenant_id", ASCENDING), ("forwarder_id", ASCENDING)], unique=True)
        await self.archives.raw.create_index([("tenant_id", ASCENDING), ("to_seq", ASCENDING)], unique=True)
        await self.settings.raw.create_index([("tenant_id", ASCENDING)], unique=True)
        await self.signing_keys.create_index([("key_id", ASCENDING)], unique=True)

    async def head(self, tenant_id: str) -> ChainHead:
        last = await self.records.find(tenant_id, {}, sort=[("seq", DESCENDING)], limit=1, projection={"seq": 1, "hash": 1})
        if last:
            return ChainHead(tenant_id, last[0]["seq"], last[0]["hash"])
        # Everything online may have been archived: the chain continues from the last archive.
        archived = await self.archives.find(tenant_id, {"state": "done"}, sort=[("to_seq", DESCENDING)], limit=1)
        if archived:
            return ChainHead(tenant_id, archived[0]["to_seq"], archived[0]["to_hash"])
        return ChainHead.genesis(tenant_id)

    async def known_event_ids(self, tenant_id: str, event_ids: Sequence[str]) -> set[str]:
        docs = await self.records.find(tenant_id, {"event_id": {"$in": list(event_ids)}}, projection={"event_id": 1})
        return {d["event_id"] for d in docs}

    async def append(self, tenant_id: str, records: Sequence[dict[str, Any]]) -> None:
        await self.records.raw.insert_many([dict(r) for r in records], ordered=True)

    async def query(self, tenant_id: str, query: dict[str, Any], *, after_seq: int, limit: int) -> list[dict[str, Any]]:
        return await self.records.find(
            tenant_id, {**query, "seq": {"$gt": after_seq}}, sort=[("seq", ASCENDING)], limit=limit, projection={"_id": 0}
        )

    async def count(self, tenant_id: str, query: dict[str, Any], *, after_seq: int = 0) -> int:
        return await self.records.count(tenant_id, {**query, "seq": {"$gt": after_seq}})

    async def last_checkpoint(self, tenant_id: str) -> dict[str, Any] | None:
        docs = await self.checkpoints.find(tenant_id, {}, sort=[("seq", DESCENDING)], limit=1, projection={"_id": 0, "_outbox": 0})
        return docs[0] if docs else None

    async def tenant_setting(self, tenant_id: str, name: str, default: Any) -> Any:
        doc = await self.settings.find_one(tenant_id, {})
        return default if doc is None or doc.get(name) is None else doc[name]
