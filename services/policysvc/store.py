"""policysvc's collections: policy heads, every policy version, and recorded decisions.

Decisions keep the request's facts so that a candidate policy can be replayed against
real traffic (dry-run) and so that a redelivered request is answered, not re-decided.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared import outbox
from shared.events import Event
from shared.group_insert import GroupInserter
from shared.store import DuplicateKeyError, TenantCollection


class PolicyStore:
    def __init__(self, db: AsyncDatabase):
        self.policies = TenantCollection(db["policies"])
        self.versions = TenantCollection(db["policy_versions"])
        self.decisions = TenantCollection(db["decisions"])
        self._decision_inserts = GroupInserter(self.decisions.raw)
        self.groups = TenantCollection(db["groups"])
        self.devices = TenantCollection(db["devices"])  # projection of device events, plus posture
        self.approvals = TenantCollection(db["approvals"])
        self.remembered = TenantCollection(db["remembered"])  # approve-and-remember grants
        self.settings = TenantCollection(db["settings"])

    async def create_indexes(self) -> None:
        await self.policies.raw.create_index([("tenant_id", ASCENDING), ("policy_id", ASCENDING)], unique=True)
        await self.policies.raw.create_index([("tenant_id", ASCENDING), ("name", ASCENDING)], unique=True)
        await self.versions.raw.create_index(
            [("tenant_id", ASCENDING), ("policy_id", ASCENDING), ("version", ASCENDING)], unique=True
        )
        await self.decisions.raw.create_index([("tenant_id", ASCENDING), ("request_id", ASCENDING)], unique=True)
        await self.decisions.raw.create_index([("tenant_id", ASCENDING), ("decided_at", DESCENDING)])
        await self.decisions.raw.create_index([("tenant_id", ASCENDING), ("device_id", ASCENDING), ("effect", ASCENDING)])
        await self.groups.raw.create_index([("tenant_id", ASCENDING), ("group_id", ASCENDING)], unique=True)
        await self.groups.raw.create_index([("tenant_id", ASCENDING), ("name", ASCENDING)], unique=True)
        await self.devices.raw.create_index([("tenant_id", ASCENDING), ("device_id", ASCENDING)], unique=True)
        await self.devices.raw.create_index([("status", ASCENDING), ("heartbeat_due", ASCENDING)])
        await self.approvals.raw.create_index([("tenant_id", ASCENDING), ("approval_id", ASCENDING)], unique=True)
        await self.approvals.raw.create_index([("tenant_id", ASCENDING), ("request_id", ASCENDING)], unique=True)
        await self.approvals.raw.create_index([("status", ASCENDING), ("expires_at", ASCENDING)])
        await self.remembered.raw.create_index(
            [("tenant_id", ASCENDING), ("device_id", ASCENDING), ("key_id", ASCENDING)], unique=True
        )
        await self.settings.raw.create_index([("tenant_id", ASCENDING)], unique=True)

    async def active_policies(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self.policies.find(tenant_id, {"deleted": False}, sort=[("policy_id", ASCENDING)])

    async def head(self, tenant_id: str, policy_id: str) -> dict[str, Any] | None:
        return await self.policies.find_one(tenant_id, {"policy_id": policy_id, "deleted": False})

    async def put_version(self, tenant_id: str, head: dict[str, Any], expected_version: int, event: Event) -> bool:
        """Writes the version, then moves the head by compare-and-swap on its version."""
        version_doc = {k: head[k] for k in ("policy_id", "version", "name", "document", "updated_at", "updated_by")}
        try:
            await self.versions.insert(tenant_id, version_doc)
        except DuplicateKeyError:
            return False
        if expected_version == 0:
            try:
                await self.policies.insert(tenant_id, outbox.staged(head, event))
                return True
            except DuplicateKeyError:
                await self.versions.delete_one(tenant_id, {"policy_id": head["policy_id"], "version": head["version"]})
                raise
        matched = await self.policies.update_one(
            tenant_id,
            {"policy_id": head["policy_id"], "version": expected_version},
            {"$set": head, **outbox.push(event)},
        )
        return bool(matched)

    async def find_decision(self, tenant_id: str, request_id: str) -> dict[str, Any] | None:
        return await self.decisions.find_one(tenant_id, {"request_id": request_id})

    async def record_decision(self, tenant_id: str, doc: dict[str, Any]) -> bool:
        """False when this request was already decided (a redelivery)."""
        return await self._decision_inserts.insert(tenant_id, doc)
