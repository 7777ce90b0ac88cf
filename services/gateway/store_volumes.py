"""The gateway's volume queries: the registry of volumes and each one's attachment history,
with their events staged in the same writes (the outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared.events import Event
from shared.outbox import Outbox
from shared.store import DuplicateKeyError, TenantCollection

from .store_outbox import insert_staged, update_staged


class VolumeStore:
    def __init__(self, db: AsyncDatabase, *, outbox: Outbox):
        self.volumes = TenantCollection(db["volumes"])
        self.attachments = TenantCollection(db["volume_attachments"])
        self._outbox = outbox

    async def create_indexes(self) -> None:
        await self.volumes.raw.create_index([("tenant_id", ASCENDING), ("volume_id", ASCENDING)], unique=True)
        await self.volumes.raw.create_index([("tenant_id", ASCENDING), ("luks_uuid", ASCENDING)], unique=True)
        await self.attachments.raw.create_index([("tenant_id", ASCENDING), ("volume_id", ASCENDING), ("at", DESCENDING)])

    async def volume(self, tenant_id: str, volume_id: str) -> dict[str, Any] | None:
        return await self.volumes.find_one(tenant_id, {"volume_id": volume_id})

    async def volume_with_uuid(self, tenant_id: str, luks_uuid: str) -> dict[str, Any] | None:
        return await self.volumes.find_one(tenant_id, {"luks_uuid": luks_uuid})

    async def register(self, tenant_id: str, doc: dict[str, Any], event: Event, *, existing: bool) -> bool:
        """Inserts a new volume or re-binds one (by the device it is bound to); False on a conflict
        (its LUKS UUID taken by another volume, or a concurrent change)."""
        try:
            if not existing:
                await insert_staged(self._outbox, self.volumes, tenant_id, doc, event)
                return True
            return await update_staged(self._outbox, self.volumes, tenant_id,
                                       {"volume_id": doc["volume_id"], "bound.device_id": doc["bound"]["device_id"]},
                                       {"$set": doc}, event)
        except DuplicateKeyError:
            return False

    async def list_volumes(self, tenant_id: str, *, limit: int, after: str | None) -> list[dict[str, Any]]:
        query = {"volume_id": {"$gt": after}} if after else {}
        return await self.volumes.find(tenant_id, query, sort=[("volume_id", ASCENDING)], limit=limit)

    async def record_attachment(self, tenant_id: str, doc: dict[str, Any], *evts: Event) -> None:
        """One attachment with its events; the volume's last unlock follows a successful one."""
        await insert_staged(self._outbox, self.attachments, tenant_id, doc, *evts)
        if doc["outcome"] == "success":
            last = {k: doc[k] for k in ("at", "device_id", "instance", "request_id")}
            await self.volumes.update_one(tenant_id, {"volume_id": doc["volume_id"]}, {"$set": {"last_unlock": last}})

    async def note_escrow(self, tenant_id: str, volume_id: str, at: datetime) -> None:
        await self.volumes.update_one(tenant_id, {"volume_id": volume_id}, {"$set": {"recovery_escrowed": at}})

    async def attachments_of(self, tenant_id: str, volume_id: str, *, limit: int) -> list[dict[str, Any]]:
        return await self.attachments.find(tenant_id, {"volume_id": volume_id}, sort=[("at", DESCENDING)], limit=limit)
