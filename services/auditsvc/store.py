"""auditsvc's collection: one chained record per event, per tenant, in sequence order."""

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

    async def create_indexes(self) -> None:
        raw = self.records.raw
        await raw.create_index([("tenant_id", ASCENDING), ("seq", ASCENDING)], unique=True)
        await raw.create_index([("tenant_id", ASCENDING), ("event_id", ASCENDING)], unique=True)
        for field in ("time", "action", "actor.id", "resource.id", "outcome", "correlation_id"):
            await raw.create_index([("tenant_id", ASCENDING), (field, ASCENDING), ("seq", ASCENDING)])

    async def head(self, tenant_id: str) -> ChainHead:
        last = await self.records.find(tenant_id, {}, sort=[("seq", DESCENDING)], limit=1, projection={"seq": 1, "hash": 1})
        if not last:
            return ChainHead.genesis(tenant_id)
        return ChainHead(tenant_id, last[0]["seq"], last[0]["hash"])

    async def known_event_ids(self, tenant_id: str, event_ids: Sequence[str]) -> set[str]:
        docs = await self.records.find(tenant_id, {"event_id": {"$in": list(event_ids)}}, projection={"event_id": 1})
        return {d["event_id"] for d in docs}

    async def append(self, tenant_id: str, records: Sequence[dict[str, Any]]) -> None:
        await self.records.raw.insert_many([dict(r) for r in records], ordered=True)

    async def query(self, tenant_id: str, query: dict[str, Any], *, after_seq: int, limit: int) -> list[dict[str, Any]]:
        return await self.records.find(
            tenant_id, {**query, "seq": {"$gt": after_seq}}, sort=[("seq", ASCENDING)], limit=limit, projection={"_id": 0}
        )
