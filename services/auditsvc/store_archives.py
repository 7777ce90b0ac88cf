"""Archives' documents (each one's range, state, file and checksum) and each tenant's retention setting."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared.events import Event
from shared.outbox import push, staged
from shared.store import DuplicateKeyError, TenantCollection

_SHOWN = {"_id": 0, "_outbox": 0}


class ArchiveStore:
    def __init__(self, db: AsyncDatabase):
        self.archives = TenantCollection(db["archives"])
        self.settings = TenantCollection(db["settings"])

    # Where archive and setting events are staged (the outbox publishes from here).
    @property
    def archive_collection(self) -> Any:
        return self.archives.raw

    @property
    def settings_collection(self) -> Any:
        return self.settings.raw

    async def create_indexes(self) -> None:
        await self.archives.raw.create_index([("tenant_id", ASCENDING), ("to_seq", ASCENDING)], unique=True)
        await self.settings.raw.create_index([("tenant_id", ASCENDING)], unique=True)

    # --- archives ------------------------------------------------------------------------

    async def unfinished_archive(self, tenant_id: str) -> dict[str, Any] | None:
        """The oldest archive not yet done: what a crash interrupted, or what a run just fixed."""
        found = await self.archives.find(tenant_id, {"state": {"$ne": "done"}}, sort=[("to_seq", 1)], limit=1)
        return found[0] if found else None

    async def insert_archive(self, tenant_id: str, doc: dict[str, Any]) -> bool:
        """False if another run fixed an archive ending there first."""
        try:
            await self.archives.insert(tenant_id, doc)
        except DuplicateKeyError:
            return False
        return True

    async def mark_written(self, tenant_id: str, archive_id: str, written: dict[str, Any]) -> None:
        await self.archives.update_one(tenant_id, {"archive_id": archive_id, "state": "writing"},
                                       {"$set": {"state": "written", **written}})

    async def mark_done(self, tenant_id: str, archive_id: str, *, at: datetime, event: Event) -> bool:
        """False if another instance finished this archive first (its event is the one published)."""
        return bool(await self.archives.update_one(tenant_id, {"archive_id": archive_id, "state": "written"},
                                       {"$set": {"state": "done", "archived_at": at}, **push(event)}))

    async def archive(self, tenant_id: str, archive_id: str) -> dict[str, Any] | None:
        return await self.archives.find_one(tenant_id, {"archive_id": archive_id}, projection=_SHOWN)

    async def done_archive(self, tenant_id: str, archive_id: str) -> dict[str, Any] | None:
        return await self.archives.find_one(tenant_id, {"archive_id": archive_id, "state": "done"})

    async def archives_after(self, tenant_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        """A page in chain order, after the archive ending at `after`; the file path stays inside."""
        return await self.archives.find(tenant_id, {"to_seq": {"$gt": after}}, sort=[("to_seq", 1)], limit=limit,
                                        projection={**_SHOWN, "file": 0})

    # --- retention setting ---------------------------------------------------------------

    async def retention_days(self, tenant_id: str) -> float | None:
        doc = await self.settings.find_one(tenant_id, {})
        return None if doc is None else doc.get("retention_days")

    async def set_retention_days(self, tenant_id: str, days: float, event: Event) -> None:
        change = {"$set": {"retention_days": days}, **push(event)}
        if await self.settings.update_one(tenant_id, {}, change):
            return
        try:
            await self.settings.insert(tenant_id, staged({"retention_days": days}, event))
        except DuplicateKeyError:  # a concurrent first setting won the insert: change that one
            await self.settings.update_one(tenant_id, {}, change)
