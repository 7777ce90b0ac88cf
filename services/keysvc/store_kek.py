"""keysvc's tenant KEK rotation queries: the rotation record, its cursor walk and the re-wrap swaps."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne

from shared import outbox
from shared.events import Event
from shared.store import TenantCollection

from .kek_rotation import Rewrap

_WALK_FIELDS = {"_id": 1, "key_id": 1, "version": 1, "wrapped": 1, "kek_version": 1}


class KekRotationQueries:
    """Tenant KEK rotations; mixed into KeyStore."""

    keys: TenantCollection
    versions: TenantCollection
    keks: TenantCollection
    kek_rotations: TenantCollection

    async def running_kek_rotation(self, tenant_id: str) -> dict[str, Any] | None:
        return await self.kek_rotations.find_one(tenant_id, {"status": "running"})

    async def running_kek_rotations(self) -> list[dict[str, Any]]:
        """Every tenant's running rotation (the scheduler's walk)."""
        return await self.kek_rotations.raw.find({"status": "running"}).to_list(None)

    async def latest_kek_rotation(self, tenant_id: str) -> dict[str, Any] | None:
        docs = await self.kek_rotations.find(tenant_id, {}, sort=[("to_version", DESCENDING)], limit=1)
        return docs[0] if docs else None

    async def insert_kek_rotation(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        await self.kek_rotations.insert(tenant_id, outbox.staged(doc, event))

    async def count_wrapped_below(self, tenant_id: str, kek_version: int) -> int:
        """Versions still holding material wrapped under an older KEK than `kek_version`."""
        return await self.versions.count(tenant_id, {"kek_version": {"$lt": kek_version}, "wrapped": {"$ne": None}})

    async def count_wrapped_under(self, tenant_id: str, kek_version: int) -> int:
        return await self.versions.count(tenant_id, {"kek_version": kek_version, "wrapped": {"$ne": None}})

    async def versions_after(self, tenant_id: str, cursor: Any, *, limit: int) -> list[dict[str, Any]]:
        """The next page of the tenant's versions in _id order after `cursor` (None: from the start)."""
        # Read by the (tenant_id, _id) index alone: a filter on more fields would make the embedded
        # store scan the collection, so done or destroyed versions are skipped by the caller.
        query: dict[str, Any] = {"_id": {"$gt": cursor}} if cursor is not None else {}
        return await self.versions.find(tenant_id, query, sort=[("_id", ASCENDING)], limit=limit, projection=_WALK_FIELDS)

    async def save_rewrapped(self, tenant_id: str, rewraps: list[Rewrap], to_version: int) -> None:
        """Each version (and its head's copy, when it is the latest) swapped to its new blob, a
        compare-and-swap on the old blob; one round trip per collection for the whole batch."""
        if not rewraps:
            return
        heads = {h["key_id"]: h for h in await self.keys.find(
            tenant_id, {"key_id": {"$in": sorted({r.key_id for r in rewraps})}},
            projection={"_id": 1, "key_id": 1, "latest_material.version": 1, "latest_material.wrapped": 1})}
        versions, copies = [], []
        for r in rewraps:
            # _id first, so each is one indexed write.
            versions.append(UpdateOne({"_id": r.doc_id, "kek_version": r.from_version, "wrapped": r.old,
                                       "tenant_id": tenant_id},
                                      {"$set": {"wrapped": r.new, "kek_version": to_version}}))
            head = heads.get(r.key_id, {})
            latest = head.get("latest_material") or {}
            if latest.get("version") == r.version and latest.get("wrapped") == r.old:
                copies.append(UpdateOne({"_id": head["_id"], "latest_material.wrapped": r.old, "tenant_id": tenant_id},
                                        {"$set": {"latest_material.wrapped": r.new, "latest_material.kek_version": to_version}}))
        await asyncio.gather(*(c.raw.bulk_write(ops, ordered=False) for c, ops in ((self.versions, versions),
                                                                                  (self.keys, copies)) if ops))

    async def advance_kek_rotation(self, tenant_id: str, rotation_id: str, cursor: Any, rewrapped: int, now: datetime) -> None:
        await self.kek_rotations.update_one(
            tenant_id, {"rotation_id": rotation_id},
            {"$set": {"cursor": cursor, "updated_at": now}, "$inc": {"rewrapped": rewrapped}})

    async def restart_kek_sweep(self, tenant_id: str, rotation_id: str) -> None:
        await self.kek_rotations.update_one(tenant_id, {"rotation_id": rotation_id}, {"$set": {"cursor": None}})

    async def retire_keks_below(self, tenant_id: str, kek_version: int) -> list[int]:
        """Overwrite, then delete, every older KEK version (shredding any copy of blobs under them)."""
        old = await self.keks.find(tenant_id, {"kek_version": {"$lt": kek_version}},
                                   projection={"_id": 1, "kek_version": 1, "wrapped": 1})
        for doc in old:
            noise = secrets.token_bytes(len(bytes(doc["wrapped"])))
            await self.keks.update_one(tenant_id, {"_id": doc["_id"]}, {"$set": {"wrapped": noise}})
            await self.keks.delete_one(tenant_id, {"_id": doc["_id"]})
        return [d["kek_version"] for d in old]

    async def finish_kek_rotation(self, tenant_id: str, rotation_id: str, rewrapped: int, now: datetime,
                                  event: Event) -> bool:
        """running -> done with kek.rotated staged; False when another instance finished it first."""
        return bool(await self.kek_rotations.update_one(
            tenant_id, {"rotation_id": rotation_id, "status": "running"},
            {"$set": {"status": "done", "finished_at": now, "cursor": None, "rewrapped": rewrapped},
             **outbox.push(event)}))
