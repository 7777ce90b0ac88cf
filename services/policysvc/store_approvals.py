"""policysvc's approval queries: pending approvals, their votes and outcomes, remembered grants."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared import outbox as staging
from shared.events import Event, decode_event
from shared.store import DuplicateKeyError, TenantCollection

from .approvals import SETTLED_BY


class ApprovalQueries:
    """Mixed into PolicyStore, which owns the collections."""

    approvals: TenantCollection
    remembered: TenantCollection

    async def open_approval(self, tenant_id: str, doc: dict[str, Any], event: Event) -> bool:
        """Stores a pending approval with its announcement; False if this request already has one."""
        try:
            await self.approvals.insert(tenant_id, staging.staged(doc, event))
        except DuplicateKeyError:
            return False
        return True

    async def approval(self, tenant_id: str, approval_id: str) -> dict[str, Any] | None:
        return await self.approvals.find_one(tenant_id, {"approval_id": approval_id})

    async def approval_for_request(self, tenant_id: str, request_id: str) -> dict[str, Any] | None:
        return await self.approvals.find_one(tenant_id, {"request_id": request_id})

    async def list_approvals(self, tenant_id: str, *, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest request first; of one status when given."""
        query = {"status": status} if status is not None else {}
        return await self.approvals.find(tenant_id, query, sort=[("requested_at", -1)], limit=limit)

    async def add_vote(
        self, tenant_id: str, approval_id: str, *, seen: list[dict[str, Any]], ballot: dict[str, Any],
        event: Event | None,
    ) -> bool:
        """Adds one approving vote by compare-and-swap on the votes seen, so a concurrent vote makes
        this one retry and nobody is counted twice. False when the approval changed meanwhile."""
        push: dict[str, Any] = {"votes": ballot}
        if event is not None:
            push[staging.FIELD] = staging.entry(event)
        matched = await self.approvals.update_one(
            tenant_id, {"approval_id": approval_id, "status": "pending", "votes": seen}, {"$push": push}
        )
        return bool(matched)

    async def settle_approval(
        self, tenant_id: str, approval_id: str, *, status: str, now: datetime, comment: str | None,
        events: tuple[Event, ...], request_id: str | None = None,
    ) -> bool:
        """Moves a pending approval to approved, denied or expired; False if it was no longer pending.
        A vote's `request_id` is recorded in the same write (`approvals.earlier_delivery`)."""
        fields: dict[str, Any] = {"status": status, "decided_at": now}
        if request_id is not None:
            fields[SETTLED_BY] = request_id
        if comment is not None:
            fields["comment"] = comment
        matched = await self.approvals.update_one(
            tenant_id, {"approval_id": approval_id, "status": "pending"},
            {"$set": fields, "$push": {staging.FIELD: {"$each": [staging.entry(e) for e in events]}}},
        )
        return bool(matched)

    async def approval_staged(self, tenant_id: str, approval_id: str) -> tuple[Event, ...]:
        """The events writes to this approval staged and nobody sent yet, oldest first: what a replica
        that died mid-vote left for the redelivered vote to send (the relay would, later)."""
        doc = await self.approvals.find_one(tenant_id, {"approval_id": approval_id}, projection={staging.FIELD: 1})
        return tuple(decode_event(e["body"].encode()) for e in (doc or {}).get(staging.FIELD, []))

    async def remember_grant(self, tenant_id: str, device_id: str, key_id: str, *, until: datetime, approval_id: str) -> None:
        await self.remembered.update_one(
            tenant_id, {"device_id": device_id, "key_id": key_id},
            {"$set": {"until": until, "approval_id": approval_id}}, upsert=True,
        )

    async def remembered_grants(self, tenant_id: str) -> dict[tuple[str, str], datetime]:
        """(device id, key id) -> until when an approval stands in for a new one."""
        return {(d["device_id"], d["key_id"]): d["until"] for d in await self.remembered.find(tenant_id, {})}

    async def overdue_approvals(self, now: datetime) -> list[dict[str, Any]]:
        """Pending approvals past their deadline, in every tenant (the scheduler's scan)."""
        return await self.approvals.raw.find({"status": "pending", "expires_at": {"$lte": now}}).to_list(None)
