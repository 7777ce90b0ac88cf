"""Changes waiting for a second person (small-team co-signing): recorded, confirmed, used once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from shared.events import Event
from shared.outbox import Outbox
from shared.store import TenantCollection

from .store_outbox import insert_staged, update_staged


class ChangeStore:
    def __init__(self, db: AsyncDatabase, *, outbox: Outbox):
        self._outbox = outbox
        self.changes = TenantCollection(db["changes"])

    async def create_indexes(self) -> None:
        await self.changes.raw.create_index([("tenant_id", ASCENDING), ("change_id", ASCENDING)], unique=True)

    async def insert_change(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        await insert_staged(self._outbox, self.changes, tenant_id, doc, event)

    async def change(self, tenant_id: str, change_id: str) -> dict[str, Any] | None:
        return await self.changes.find_one(tenant_id, {"change_id": change_id})

    async def pending_changes(self, tenant_id: str, now: datetime) -> list[dict[str, Any]]:
        return await self.changes.find(tenant_id, {"status": "pending", "expires_at": {"$gt": now}},
                                       sort=[("created_at", 1)])

    async def confirm_change(self, tenant_id: str, change_id: str, *, confirmed_by: str, at: datetime,
                             event: Event) -> bool:
        """Pending and unexpired to confirmed (compare-and-swap); False when it was not."""
        return await update_staged(self._outbox, self.changes, tenant_id,
                                   {"change_id": change_id, "status": "pending", "expires_at": {"$gt": at}},
                                   {"$set": {"status": "confirmed", "confirmed_by": confirmed_by, "confirmed_at": at}},
                                   event)

    async def use_change(self, tenant_id: str, change_id: str, *, requested_by: str, method: str, path: str,
                         body_sha256: str, at: datetime) -> dict[str, Any] | None:
        """Takes a confirmed, unexpired change for exactly this request, once; None otherwise."""
        return await self.changes.raw.find_one_and_update(
            {"tenant_id": tenant_id, "change_id": change_id, "status": "confirmed", "requested_by": requested_by,
             "method": method, "path": path, "body_sha256": body_sha256, "expires_at": {"$gt": at}},
            {"$set": {"status": "used", "used_at": at}}, return_document=ReturnDocument.AFTER)
