"""Forwarders' documents: configuration, sealed secret, durable cursor, counters, lease and last error."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared.events import Event
from shared.outbox import push, staged
from shared.store import TenantCollection


class ForwarderStore:
    def __init__(self, db: AsyncDatabase):
        self.forwarders = TenantCollection(db["forwarders"])

    @property
    def collection(self) -> Any:
        """Where forwarder events are staged (the outbox publishes from here)."""
        return self.forwarders.raw

    async def create_indexes(self) -> None:
        await self.forwarders.raw.create_index([("tenant_id", ASCENDING), ("forwarder_id", ASCENDING)], unique=True)

    async def insert_forwarder(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        await self.forwarders.insert(tenant_id, staged(doc, event))

    async def forwarder(self, tenant_id: str, forwarder_id: str) -> dict[str, Any] | None:
        return await self.forwarders.find_one(tenant_id, {"forwarder_id": forwarder_id})

    async def list_forwarders(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self.forwarders.find(tenant_id, {}, sort=[("created_at", 1)])

    async def change_forwarder(self, tenant_id: str, forwarder_id: str, fields: dict[str, Any], event: Event) -> bool:
        return bool(await self.forwarders.update_one(tenant_id, {"forwarder_id": forwarder_id},
                                                     {"$set": fields, **push(event)}))

    async def replace_secret(self, tenant_id: str, forwarder_id: str, *, old: str, new: str, event: Event) -> bool:
        """Compare-and-swap on the sealed value read: False if another rotation got there first."""
        return bool(await self.forwarders.update_one(tenant_id, {"forwarder_id": forwarder_id, "secret": old},
                                                     {"$set": {"secret": new}, **push(event)}))

    async def delete_forwarder(self, tenant_id: str, forwarder_id: str) -> None:
        await self.forwarders.delete_one(tenant_id, {"forwarder_id": forwarder_id})

    async def enabled_forwarders(self) -> list[tuple[str, str]]:
        """(tenant id, forwarder id) of every enabled forwarder of every tenant: the pool runs them all."""
        docs = await self.forwarders.raw.find({"enabled": True}, {"tenant_id": 1, "forwarder_id": 1}).to_list(None)
        return [(d["tenant_id"], d["forwarder_id"]) for d in docs]

    async def enabled_cursors(self, tenant_id: str) -> list[int]:
        """Each enabled forwarder's cursor: records after the lowest are still owed to a SIEM."""
        return [d.get("cursor", 0) for d in await self.forwarders.find(tenant_id, {"enabled": True},
                                                                        projection={"cursor": 1})]

    async def take_lease(self, tenant_id: str, forwarder_id: str, *, owner: str, now: datetime,
                         until: datetime) -> bool:
        """The lease if it is free, expired or already ours: one instance sends a forwarder's batches."""
        return bool(await self.forwarders.update_one(
            tenant_id,
            {"forwarder_id": forwarder_id, "$or": [{"lease_owner": owner}, {"lease_owner": None},
                                                   {"lease_until": {"$lt": now}}]},
            {"$set": {"lease_owner": owner, "lease_until": until}},
        ))

    async def release_lease(self, tenant_id: str, forwarder_id: str, *, owner: str) -> None:
        await self.forwarders.update_one(tenant_id, {"forwarder_id": forwarder_id, "lease_owner": owner},
                                         {"$set": {"lease_owner": None, "lease_until": None}})

    async def record_state(self, tenant_id: str, forwarder_id: str, state: dict[str, Any]) -> None:
        """Status, failures and last error as operators see them (the cursor does not move)."""
        await self.forwarders.update_one(tenant_id, {"forwarder_id": forwarder_id}, {"$set": state})

    async def advance_cursor(self, tenant_id: str, forwarder_id: str, *, cursor: int, to: int, delivered: int,
                             at: datetime) -> bool:
        """Compare-and-swap from `cursor` to `to`: False if another owner moved it meanwhile."""
        return bool(await self.forwarders.update_one(
            tenant_id, {"forwarder_id": forwarder_id, "cursor": cursor},
            {"$set": {"cursor": to, "status": "active", "failures": 0, "last_delivered_at": at,
                      "next_attempt_at": None},
             "$inc": {"delivered": delivered}},
        ))
