"""policysvc's MongoDB store: every query of the service, each behind a method named for what it does.

Collections: policy heads and every policy version, recorded decisions (they keep the request's
facts so a candidate policy can be replayed against real traffic, and so a redelivered request is
answered, not re-decided), groups, the device projection with posture, approvals, remembered
grants and tenant settings. Writes that report a change stage its events in the same document
(the outbox); `publish_staged` sends them once written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared import outbox as staging
from shared.events import Event
from shared.group_insert import GroupInserter, GroupUpdater
from shared.group_read import GroupReader
from shared.outbox import Outbox
from shared.store import DuplicateKeyError, TenantCollection, tenant_key

from . import decision
from .posture import QUARANTINE_REASONS
from .store_approvals import ApprovalQueries

AREAS = ("policies", "groups", "approvals", "devices", "settings")


class PolicyStore(ApprovalQueries):
    def __init__(self, db: AsyncDatabase, *, publish: Callable[[Event], Awaitable[None]]):
        self.policies = TenantCollection(db["policies"])
        self.versions = TenantCollection(db["policy_versions"])
        self.decisions = TenantCollection(db["decisions"])
        self._decision_inserts = GroupInserter(self.decisions.raw)
        # A store from before decisions were keyed `<tenant>:<request>` (`_id` uniqueness decides a
        # request once) has a unique (tenant_id, request_id) index, and decisions with generated
        # `_id`s that only it finds: while it has that index, lookups go through it.
        self._decisions_by_request = True
        self.groups = TenantCollection(db["groups"])
        self.devices = TenantCollection(db["devices"])  # projection of device events, plus posture
        # Heartbeats read and stamp one device each: concurrent ones share a read and a write.
        self._device_reads = GroupReader(self.devices, "device_id", projection={"_id": 0})
        self._heartbeat_writes = GroupUpdater(self.devices.raw)
        self.approvals = TenantCollection(db["approvals"])
        self.remembered = TenantCollection(db["remembered"])  # approve-and-remember grants
        self.settings = TenantCollection(db["settings"])
        self.outbox = Outbox(publish, [getattr(self, area).raw for area in AREAS])

    async def create_indexes(self) -> None:
        await self.policies.raw.create_index([("tenant_id", ASCENDING), ("policy_id", ASCENDING)], unique=True)
        await self.policies.raw.create_index([("tenant_id", ASCENDING), ("name", ASCENDING)], unique=True)
        await self.versions.raw.create_index(
            [("tenant_id", ASCENDING), ("policy_id", ASCENDING), ("version", ASCENDING)], unique=True
        )
        # No unique index of their own: `_id` is the request's key (an index costs the embedded store a
        # write per decision).
        self._decisions_by_request = "tenant_id_1_request_id_1" in await self.decisions.raw.index_information()
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
        await self.outbox.create_indexes()

    async def publish_staged(self, area: str, tenant_id: str, *events: Event) -> None:
        """Publish events staged by a write to ``area``'s collection, in order, unstaging each."""
        for event in events:
            await self.outbox.publish(getattr(self, area).raw, tenant_id, event)

    # --- policies and their versions --------------------------------------------------------

    async def active_policies(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self.policies.find(tenant_id, {"deleted": False}, sort=[("policy_id", ASCENDING)])

    async def head(self, tenant_id: str, policy_id: str) -> dict[str, Any] | None:
        return await self.policies.find_one(tenant_id, {"policy_id": policy_id, "deleted": False})

    async def current_version(self, tenant_id: str, policy_id: str) -> int | None:
        """The head's version, None when the policy was deleted or never existed."""
        head = await self.policies.find_one(tenant_id, {"policy_id": policy_id})
        return head["version"] if head and not head.get("deleted") else None

    async def put_version(self, tenant_id: str, head: dict[str, Any], expected_version: int, event: Event) -> bool:
        """Writes the version, then moves the head by compare-and-swap on its version."""
        version_doc = {k: head[k] for k in ("policy_id", "version", "name", "document", "updated_at", "updated_by")}
        try:
            await self.versions.insert(tenant_id, version_doc)
        except DuplicateKeyError:
            return False
        if expected_version == 0:
            try:
                await self.policies.insert(tenant_id, staging.staged(head, event))
                return True
            except DuplicateKeyError:
                await self.versions.delete_one(tenant_id, {"policy_id": head["policy_id"], "version": head["version"]})
                raise
        matched = await self.policies.update_one(
            tenant_id, {"policy_id": head["policy_id"], "version": expected_version}, {"$set": head, **staging.push(event)},
        )
        return bool(matched)

    async def delete_policy(self, tenant_id: str, policy_id: str, *, now: datetime, event: Event) -> bool:
        matched = await self.policies.update_one(
            tenant_id, {"policy_id": policy_id, "deleted": False},
            {"$set": {"deleted": True, "updated_at": now}, **staging.push(event)},
        )
        return bool(matched)

    async def policy_versions(self, tenant_id: str, policy_id: str) -> list[dict[str, Any]]:
        """Every version of a policy, newest first."""
        return await self.versions.find(tenant_id, {"policy_id": policy_id}, sort=[("version", -1)])

    async def policy_version(self, tenant_id: str, policy_id: str, version: int) -> dict[str, Any] | None:
        return await self.versions.find_one(tenant_id, {"policy_id": policy_id, "version": version})

    async def mark_restored(self, tenant_id: str, policy_id: str, version: int, *, restored_from: int) -> None:
        await self.versions.update_one(
            tenant_id, {"policy_id": policy_id, "version": version}, {"$set": {"restored_from": restored_from}}
        )

    # --- groups -----------------------------------------------------------------------------

    async def live_groups(self, tenant_id: str, *, kind: str | None = None) -> list[dict[str, Any]]:
        """The tenant's groups not deleted, by name; of one kind when given."""
        query: dict[str, Any] = {"deleted": False}
        if kind is not None:
            query["document.kind"] = kind
        return await self.groups.find(tenant_id, query, sort=[("name", 1)])

    async def live_group(self, tenant_id: str, group_id: str) -> dict[str, Any] | None:
        return await self.groups.find_one(tenant_id, {"group_id": group_id, "deleted": False})

    async def insert_group(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        """Raises DuplicateKeyError when the name is taken."""
        await self.groups.insert(tenant_id, staging.staged(doc, event))

    async def replace_group(
        self, tenant_id: str, group_id: str, *, expected_version: int, doc: dict[str, Any], event: Event
    ) -> bool:
        """Compare-and-swap on the group's version; raises DuplicateKeyError when the new name is taken."""
        matched = await self.groups.update_one(
            tenant_id, {"group_id": group_id, "version": expected_version}, {"$set": doc, **staging.push(event)}
        )
        return bool(matched)

    async def delete_group(self, tenant_id: str, group_id: str, *, freed_name: str, now: datetime, event: Event) -> bool:
        matched = await self.groups.update_one(
            tenant_id, {"group_id": group_id, "deleted": False},
            {"$set": {"deleted": True, "name": freed_name, "updated_at": now}, **staging.push(event)},
        )
        return bool(matched)

    # --- tenant settings ----------------------------------------------------------------------

    async def tenant_settings(self, tenant_id: str) -> dict[str, Any] | None:
        doc = await self.settings.find_one(tenant_id, {})
        return doc["settings"] if doc else None

    async def put_settings(self, tenant_id: str, settings: dict[str, Any], *, by: str, event: Event) -> None:
        await self.settings.update_one(
            tenant_id, {}, {"$set": {"settings": settings, "updated_by": by}, **staging.push(event)}, upsert=True
        )

    # --- decisions --------------------------------------------------------------------------

    async def record_decision(self, tenant_id: str, doc: dict[str, Any]) -> bool:
        """False when this request was already decided (a redelivery)."""
        return await self._decision_inserts.insert(tenant_id, {"_id": tenant_key(tenant_id, doc["request_id"]), **doc})

    async def find_decision(self, tenant_id: str, request_id: str) -> dict[str, Any] | None:
        if self._decisions_by_request:
            return await self.decisions.find_one(tenant_id, {"request_id": request_id})
        doc = await self.decisions.find_by_key(tenant_id, tenant_key(tenant_id, request_id))
        return doc if doc is not None and doc["request_id"] == request_id else None

    async def device_decision(self, tenant_id: str, request_id: str, device_id: str) -> dict[str, Any] | None:
        """A decision as the requesting device may see it: only its own. Read by its key alone and
        checked here (the embedded store scans for a filter wider than an index)."""
        doc = await self.find_decision(tenant_id, request_id)
        return doc if doc is not None and doc.get("device_id") == device_id else None

    async def list_decisions(self, tenant_id: str, *, match: dict[str, str], limit: int) -> list[dict[str, Any]]:
        """Newest first, without facts and trace records; ``match`` holds device_id, key_id, effect."""
        return await self.decisions.find(
            tenant_id, dict(match), projection={"trace_record": 0, "facts": 0}, sort=[("decided_at", -1)], limit=limit
        )

    async def decisions_since(self, tenant_id: str, since: datetime, *, limit: int) -> list[dict[str, Any]]:
        """Recorded requests (ids, device, key, facts and their provenance, time), newest first: what a
        replay needs."""
        return await self.decisions.find(
            tenant_id, {"decided_at": {"$gte": since}},
            projection={"request_id": 1, "device_id": 1, "key_id": 1, "facts": 1, "provenance": 1, "decided_at": 1},
            sort=[("decided_at", -1)], limit=limit,
        )

    async def releasing_decisions(self, tenant_id: str, device_id: str, key_id: str, *, limit: int) -> list[dict[str, Any]]:
        """The newest decisions that allowed (or sent for approval) this key to this device (a scan of
        its history: only for keys released before devices kept their releasers)."""
        return await self.decisions.find(
            tenant_id, {"device_id": device_id, "key_id": key_id, "effect": {"$in": ["allow", "require_approval"]}},
            projection={"request_id": 1, "effect": 1, "trace_record": 1, "decided_at": 1}, sort=[("decided_at", -1)],
            limit=limit,
        )

    async def allowed_since(self, tenant_id: str, device_id: str, key_id: str, since: datetime) -> bool:
        """Whether a decision after ``since`` allowed this key to this device (an approval's check)."""
        return await self.decisions.find_one(
            tenant_id, {"device_id": device_id, "effect": "allow", "key_id": key_id, "decided_at": {"$gt": since}},
            projection={"_id": 1},
        ) is not None

    # --- devices and posture --------------------------------------------------------------------

    async def device(self, tenant_id: str, device_id: str) -> dict[str, Any] | None:
        """The device as read by a group of concurrent lookups (callers share the dict: read-only)."""
        return await self._device_reads.find_one(tenant_id, device_id)

    async def posture_counts(self, tenant_id: str) -> dict[str, int]:
        """The tenant's devices by posture: active, revoked, and quarantined by cause (one count each)."""
        counts = {status: await self.devices.count(tenant_id, {"status": status}) for status in ("active", "revoked")}
        for cause in QUARANTINE_REASONS:
            counts[f"quarantined_{cause}"] = await self.devices.count(
                tenant_id, {"status": "quarantined", "quarantine_cause": cause})
        return counts

    async def project_enrolled(self, tenant_id: str, device_id: str, *, name: str, groups: list[str], at: datetime) -> None:
        await self.devices.update_one(
            tenant_id, {"device_id": device_id},
            {"$set": {"name": name, "groups": groups, "enrolled_at": at}, "$setOnInsert": {"status": "active"}},
            upsert=True,
        )

    async def project_revoked(self, tenant_id: str, device_id: str, *, at: datetime) -> None:
        await self.devices.update_one(
            tenant_id, {"device_id": device_id}, {"$set": {"status": "revoked", "revoked_at": at}}, upsert=True
        )

    async def note_release(
        self, tenant_id: str, device_id: str, key_id: str, *, decided_at: datetime, policies: list[list[Any]] | None
    ) -> None:
        """Remembers that this device holds this key and which policy versions released it: those of
        the newest releasing decision, so an older decision approved late leaves a newer one standing."""
        field = decision.releaser_field(key_id)
        # No match and a duplicate device: a newer decision released the key (and noted it); it stands.
        with contextlib.suppress(DuplicateKeyError):
            await self.devices.update_one(
                tenant_id,
                {"device_id": device_id, "$or": [{field: {"$exists": False}}, {f"{field}.decided_at": {"$lte": decided_at}}]},
                {"$set": {field: {"decided_at": decided_at, "policies": policies}},
                 "$addToSet": {"released_keys": key_id}},
                upsert=True,
            )

    async def record_heartbeat(
        self, tenant_id: str, device_id: str, *, at: datetime, due: datetime, facts: dict[str, Any],
        provenance: Mapping[str, str] | None = None,
    ) -> None:
        """``provenance`` (fact path -> provenance) is kept as [path, provenance] pairs: paths hold dots."""
        await self._heartbeat_writes.update_one(
            tenant_id, {"device_id": device_id},
            {"$set": {"last_heartbeat_at": at, "heartbeat_due": due, "last_facts": facts,
                      "last_provenance": sorted([path, p] for path, p in (provenance or {}).items())}},
        )

    async def quarantine_device(
        self, tenant_id: str, device_id: str, *, reason: str, cause: str, now: datetime, events: tuple[Event, ...],
        heartbeat_due: datetime | None = None,
    ) -> bool:
        """Quarantines a device not quarantined yet; given ``heartbeat_due``, only an active device
        still due then (a heartbeat that arrived since wins). False when the device did not match."""
        expect: dict[str, Any] = (
            {"status": {"$ne": "quarantined"}} if heartbeat_due is None else {"status": "active", "heartbeat_due": heartbeat_due}
        )
        matched = await self.devices.update_one(
            tenant_id, {"device_id": device_id, **expect},
            {"$set": {"status": "quarantined", "quarantine_reason": reason, "quarantine_cause": cause, "quarantined_at": now},
             "$push": {staging.FIELD: {"$each": [staging.entry(e) for e in events]}}},
        )
        return bool(matched)

    async def clear_quarantine(self, tenant_id: str, device_id: str, *, heartbeat_due: datetime, event: Event) -> bool:
        """False when the device is not quarantined."""
        matched = await self.devices.update_one(
            tenant_id, {"device_id": device_id, "status": "quarantined"},
            {"$set": {"status": "active", "quarantine_reason": "", "heartbeat_due": heartbeat_due}, **staging.push(event)},
        )
        return bool(matched)

    # --- the scheduler's scans: across tenants on purpose (a system job); each write is scoped ----

    async def silent_devices(self, now: datetime) -> list[dict[str, Any]]:
        """Active devices, in every tenant, whose heartbeat was due by ``now``."""
        return await self.devices.raw.find({"status": "active", "heartbeat_due": {"$lte": now}}).to_list(None)

    async def next_deadline(self) -> datetime | None:
        """The earliest approval expiry or heartbeat deadline still ahead of the scheduler."""
        due = []
        for collection, query, field in (
            (self.approvals.raw, {"status": "pending"}, "expires_at"),
            (self.devices.raw, {"status": "active", "heartbeat_due": {"$ne": None}}, "heartbeat_due"),
        ):
            for doc in await collection.find(query, {field: 1}, sort=[(field, 1)], limit=1).to_list(None):
                if doc.get(field) is not None:
                    due.append(doc[field])
        return min(due) if due else None
