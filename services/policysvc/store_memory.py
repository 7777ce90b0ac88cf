"""An in-memory twin of PolicyStore: the same methods over plain dicts, for fast handler tests.

Unique indexes are kept as the Mongo store keeps them (a taken name raises DuplicateKeyError);
events a write stages wait in ``staged`` until ``publish_staged`` moves them to ``published``.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from shared.events import Event
from shared.store import DuplicateKeyError

from . import decision
from .approvals import SETTLED_BY
from .posture import QUARANTINE_REASONS

Row = dict[str, Any]


def _newest(rows: list[Row], field: str) -> list[Row]:
    return sorted(rows, key=lambda r: r[field], reverse=True)


class MemoryPolicyStore:
    def __init__(self, *, publish: Callable[[Event], Awaitable[None]] | None = None):
        self.policies: list[Row] = []
        self.versions: list[Row] = []
        self.decisions: list[Row] = []
        self.groups: list[Row] = []
        self.devices: list[Row] = []
        self.approvals: list[Row] = []
        self.remembered: list[Row] = []
        self.settings: list[Row] = []
        self.staged: list[tuple[str, str, Event]] = []  # (area, tenant id, event), written not yet sent
        self.published: list[Event] = []
        self._staged_on: dict[str, tuple[str, str]] = {}  # event id -> (tenant id, approval id) it was staged on
        self._publish = publish

    async def create_indexes(self) -> None:
        pass

    async def publish_staged(self, area: str, tenant_id: str, *events: Event) -> None:
        for event in events:
            self.staged.remove((area, tenant_id, event))
            self.published.append(event)
            if self._publish is not None:
                await self._publish(event)

    # --- helpers ------------------------------------------------------------------------------

    def _stage(self, area: str, tenant_id: str, *events: Event) -> None:
        self.staged.extend((area, tenant_id, e) for e in events)

    @staticmethod
    def _rows(rows: list[Row], tenant_id: str, **match: Any) -> list[Row]:
        if not tenant_id:
            raise ValueError("tenant_id is required on every query")
        return [r for r in rows if r["tenant_id"] == tenant_id and all(r.get(k) == v for k, v in match.items())]

    def _one(self, rows: list[Row], tenant_id: str, **match: Any) -> Row | None:
        found = self._rows(rows, tenant_id, **match)
        return copy.deepcopy(found[0]) if found else None

    @staticmethod
    def _insert(rows: list[Row], tenant_id: str, doc: Row, *unique: tuple[str, ...]) -> None:
        for fields in unique:
            if any(r["tenant_id"] == tenant_id and all(r.get(f) == doc.get(f) for f in fields) for r in rows):
                raise DuplicateKeyError(f"duplicate {fields}")
        rows.append({**copy.deepcopy(doc), "tenant_id": tenant_id})

    def _device_row(self, tenant_id: str, device_id: str) -> Row:
        """The device's row, created (as an upsert would) when missing."""
        found = self._rows(self.devices, tenant_id, device_id=device_id)
        if found:
            return found[0]
        row = {"tenant_id": tenant_id, "device_id": device_id}
        self.devices.append(row)
        return row

    # --- policies and their versions ---------------------------------------------------------

    async def active_policies(self, tenant_id: str) -> list[Row]:
        return sorted(copy.deepcopy(self._rows(self.policies, tenant_id, deleted=False)), key=lambda r: r["policy_id"])

    async def head(self, tenant_id: str, policy_id: str) -> Row | None:
        return self._one(self.policies, tenant_id, policy_id=policy_id, deleted=False)

    async def current_version(self, tenant_id: str, policy_id: str) -> int | None:
        head = self._one(self.policies, tenant_id, policy_id=policy_id)
        return head["version"] if head and not head.get("deleted") else None

    async def put_version(self, tenant_id: str, head: Row, expected_version: int, event: Event) -> bool:
        version_doc = {k: head[k] for k in ("policy_id", "version", "name", "document", "updated_at", "updated_by")}
        try:
            self._insert(self.versions, tenant_id, version_doc, ("policy_id", "version"))
        except DuplicateKeyError:
            return False
        others = [r for r in self._rows(self.policies, tenant_id) if r["policy_id"] != head["policy_id"]]
        if any(r["name"] == head["name"] for r in others):
            self.versions.pop()
            raise DuplicateKeyError("name")
        if expected_version == 0:
            self._insert(self.policies, tenant_id, head, ("policy_id",))
        else:
            found = self._rows(self.policies, tenant_id, policy_id=head["policy_id"], version=expected_version)
            if not found:
                return False
            found[0].update(copy.deepcopy(head))
        self._stage("policies", tenant_id, event)
        return True

    async def delete_policy(self, tenant_id: str, policy_id: str, *, now: datetime, event: Event) -> bool:
        found = self._rows(self.policies, tenant_id, policy_id=policy_id, deleted=False)
        if not found:
            return False
        found[0].update(deleted=True, updated_at=now)
        self._stage("policies", tenant_id, event)
        return True

    async def policy_versions(self, tenant_id: str, policy_id: str) -> list[Row]:
        return copy.deepcopy(_newest(self._rows(self.versions, tenant_id, policy_id=policy_id), "version"))

    async def policy_version(self, tenant_id: str, policy_id: str, version: int) -> Row | None:
        return self._one(self.versions, tenant_id, policy_id=policy_id, version=version)

    async def mark_restored(self, tenant_id: str, policy_id: str, version: int, *, restored_from: int) -> None:
        for row in self._rows(self.versions, tenant_id, policy_id=policy_id, version=version):
            row["restored_from"] = restored_from

    # --- groups ----------------------------------------------------------------------------

    async def live_groups(self, tenant_id: str, *, kind: str | None = None) -> list[Row]:
        rows = [r for r in self._rows(self.groups, tenant_id, deleted=False) if kind is None or r["document"]["kind"] == kind]
        return sorted(copy.deepcopy(rows), key=lambda r: r["name"])

    async def live_group(self, tenant_id: str, group_id: str) -> Row | None:
        return self._one(self.groups, tenant_id, group_id=group_id, deleted=False)

    async def insert_group(self, tenant_id: str, doc: Row, event: Event) -> None:
        self._insert(self.groups, tenant_id, doc, ("group_id",), ("name",))
        self._stage("groups", tenant_id, event)

    async def replace_group(self, tenant_id: str, group_id: str, *, expected_version: int, doc: Row, event: Event) -> bool:
        if any(r["name"] == doc["name"] and r["group_id"] != group_id for r in self._rows(self.groups, tenant_id)):
            raise DuplicateKeyError("name")
        found = self._rows(self.groups, tenant_id, group_id=group_id, version=expected_version)
        if not found:
            return False
        found[0].update(copy.deepcopy(doc))
        self._stage("groups", tenant_id, event)
        return True

    async def delete_group(self, tenant_id: str, group_id: str, *, freed_name: str, now: datetime, event: Event) -> bool:
        found = self._rows(self.groups, tenant_id, group_id=group_id, deleted=False)
        if not found:
            return False
        found[0].update(deleted=True, name=freed_name, updated_at=now)
        self._stage("groups", tenant_id, event)
        return True

    # --- tenant settings ----------------------------------------------------------------------

    async def tenant_settings(self, tenant_id: str) -> Row | None:
        doc = self._one(self.settings, tenant_id)
        return doc["settings"] if doc else None

    async def put_settings(self, tenant_id: str, settings: Row, *, by: str, event: Event) -> None:
        found = self._rows(self.settings, tenant_id)
        if found:
            found[0].update(settings=dict(settings), updated_by=by)
        else:
            self.settings.append({"tenant_id": tenant_id, "settings": dict(settings), "updated_by": by})
        self._stage("settings", tenant_id, event)

    # --- decisions --------------------------------------------------------------------------

    async def record_decision(self, tenant_id: str, doc: Row) -> bool:
        try:
            self._insert(self.decisions, tenant_id, doc, ("request_id",))
        except DuplicateKeyError:
            return False
        return True

    async def find_decision(self, tenant_id: str, request_id: str) -> Row | None:
        return self._one(self.decisions, tenant_id, request_id=request_id)

    async def device_decision(self, tenant_id: str, request_id: str, device_id: str) -> Row | None:
        return self._one(self.decisions, tenant_id, request_id=request_id, device_id=device_id)

    async def list_decisions(self, tenant_id: str, *, match: dict[str, str], limit: int) -> list[Row]:
        rows = _newest(self._rows(self.decisions, tenant_id, **match), "decided_at")[:limit]
        return [{k: v for k, v in r.items() if k not in ("trace_record", "facts")} for r in copy.deepcopy(rows)]

    async def decisions_since(self, tenant_id: str, since: datetime, *, limit: int) -> list[Row]:
        rows = [r for r in self._rows(self.decisions, tenant_id) if r["decided_at"] >= since]
        keys = ("request_id", "device_id", "key_id", "facts", "provenance", "decided_at")
        return [{k: r[k] for k in keys if k in r} for r in copy.deepcopy(_newest(rows, "decided_at")[:limit])]

    async def releasing_decisions(self, tenant_id: str, device_id: str, key_id: str, *, limit: int) -> list[Row]:
        rows = [r for r in self._rows(self.decisions, tenant_id, device_id=device_id, key_id=key_id)
                if r["effect"] in ("allow", "require_approval")]
        return [{k: r.get(k) for k in ("request_id", "effect", "trace_record", "decided_at")}
                for r in copy.deepcopy(_newest(rows, "decided_at")[:limit])]

    async def allowed_since(self, tenant_id: str, device_id: str, key_id: str, since: datetime) -> bool:
        return any(r["decided_at"] > since
                   for r in self._rows(self.decisions, tenant_id, device_id=device_id, key_id=key_id, effect="allow"))

    # --- approvals ------------------------------------------------------------------------------

    async def open_approval(self, tenant_id: str, doc: Row, event: Event) -> bool:
        try:
            self._insert(self.approvals, tenant_id, doc, ("approval_id",), ("request_id",))
        except DuplicateKeyError:
            return False
        self._stage_on_approval(tenant_id, doc["approval_id"], event)
        return True

    async def approval(self, tenant_id: str, approval_id: str) -> Row | None:
        return self._one(self.approvals, tenant_id, approval_id=approval_id)

    async def approval_for_request(self, tenant_id: str, request_id: str) -> Row | None:
        return self._one(self.approvals, tenant_id, request_id=request_id)

    async def list_approvals(self, tenant_id: str, *, status: str | None, limit: int) -> list[Row]:
        rows = self._rows(self.approvals, tenant_id, **({"status": status} if status is not None else {}))
        return copy.deepcopy(_newest(rows, "requested_at")[:limit])

    async def add_vote(self, tenant_id: str, approval_id: str, *, seen: list[Row], ballot: Row, event: Event | None) -> bool:
        found = self._rows(self.approvals, tenant_id, approval_id=approval_id, status="pending", votes=seen)
        if not found:
            return False
        found[0]["votes"] = [*found[0]["votes"], dict(ballot)]
        if event is not None:
            self._stage_on_approval(tenant_id, approval_id, event)
        return True

    async def settle_approval(
        self, tenant_id: str, approval_id: str, *, status: str, now: datetime, comment: str | None,
        events: tuple[Event, ...], request_id: str | None = None,
    ) -> bool:
        found = self._rows(self.approvals, tenant_id, approval_id=approval_id, status="pending")
        if not found:
            return False
        found[0].update(status=status, decided_at=now, **({"comment": comment} if comment is not None else {}),
                        **({SETTLED_BY: request_id} if request_id is not None else {}))
        self._stage_on_approval(tenant_id, approval_id, *events)
        return True

    def _stage_on_approval(self, tenant_id: str, approval_id: str, *events: Event) -> None:
        self._stage("approvals", tenant_id, *events)
        self._staged_on.update((e.event_id, (tenant_id, approval_id)) for e in events)

    async def approval_staged(self, tenant_id: str, approval_id: str) -> tuple[Event, ...]:
        return tuple(e for area, _, e in self.staged
                     if area == "approvals" and self._staged_on.get(e.event_id) == (tenant_id, approval_id))

    async def remember_grant(self, tenant_id: str, device_id: str, key_id: str, *, until: datetime, approval_id: str) -> None:
        self.remembered[:] = [r for r in self.remembered
                              if (r["tenant_id"], r["device_id"], r["key_id"]) != (tenant_id, device_id, key_id)]
        self.remembered.append({"tenant_id": tenant_id, "device_id": device_id, "key_id": key_id, "until": until,
                                "approval_id": approval_id})

    async def remembered_grants(self, tenant_id: str) -> dict[tuple[str, str], datetime]:
        return {(r["device_id"], r["key_id"]): r["until"] for r in self._rows(self.remembered, tenant_id)}

    async def overdue_approvals(self, now: datetime) -> list[Row]:
        return copy.deepcopy([r for r in self.approvals if r["status"] == "pending" and r["expires_at"] <= now])

    # --- devices and posture --------------------------------------------------------------------

    async def device(self, tenant_id: str, device_id: str) -> Row | None:
        return self._one(self.devices, tenant_id, device_id=device_id)

    async def posture_counts(self, tenant_id: str) -> dict[str, int]:
        counts = {status: len(self._rows(self.devices, tenant_id, status=status)) for status in ("active", "revoked")}
        for cause in QUARANTINE_REASONS:
            counts[f"quarantined_{cause}"] = len(self._rows(self.devices, tenant_id, status="quarantined",
                                                            quarantine_cause=cause))
        return counts

    async def project_enrolled(self, tenant_id: str, device_id: str, *, name: str, groups: list[str], at: datetime) -> None:
        row = self._device_row(tenant_id, device_id)
        row.update(name=name, groups=list(groups), enrolled_at=at)
        row.setdefault("status", "active")

    async def project_revoked(self, tenant_id: str, device_id: str, *, at: datetime) -> None:
        self._device_row(tenant_id, device_id).update(status="revoked", revoked_at=at)

    async def note_release(
        self, tenant_id: str, device_id: str, key_id: str, *, decided_at: datetime, policies: list[list[Any]] | None
    ) -> None:
        row = self._device_row(tenant_id, device_id)
        releasers = row.setdefault(decision.RELEASERS, {})
        entry = releasers.get(decision.releaser_id(key_id))
        if entry is not None and entry["decided_at"] > decided_at:
            return
        releasers[decision.releaser_id(key_id)] = {"decided_at": decided_at, "policies": copy.deepcopy(policies)}
        if key_id not in row.setdefault("released_keys", []):
            row["released_keys"].append(key_id)

    async def record_heartbeat(
        self, tenant_id: str, device_id: str, *, at: datetime, due: datetime, facts: Row,
        provenance: Mapping[str, str] | None = None,
    ) -> None:
        for row in self._rows(self.devices, tenant_id, device_id=device_id):
            row.update(last_heartbeat_at=at, heartbeat_due=due, last_facts=copy.deepcopy(facts),
                       last_provenance=sorted([path, p] for path, p in (provenance or {}).items()))

    async def quarantine_device(
        self, tenant_id: str, device_id: str, *, reason: str, cause: str, now: datetime, events: tuple[Event, ...],
        heartbeat_due: datetime | None = None,
    ) -> bool:
        found = self._rows(self.devices, tenant_id, device_id=device_id)
        if not found or (heartbeat_due is None and found[0].get("status") == "quarantined"):
            return False
        if heartbeat_due is not None and (found[0].get("status"), found[0].get("heartbeat_due")) != ("active", heartbeat_due):
            return False
        found[0].update(status="quarantined", quarantine_reason=reason, quarantine_cause=cause, quarantined_at=now)
        self._stage("devices", tenant_id, *events)
        return True

    async def clear_quarantine(self, tenant_id: str, device_id: str, *, heartbeat_due: datetime, event: Event) -> bool:
        found = self._rows(self.devices, tenant_id, device_id=device_id, status="quarantined")
        if not found:
            return False
        found[0].update(status="active", quarantine_reason="", heartbeat_due=heartbeat_due)
        self._stage("devices", tenant_id, event)
        return True

    async def silent_devices(self, now: datetime) -> list[Row]:
        return copy.deepcopy([r for r in self.devices if r.get("status") == "active"
                              and r.get("heartbeat_due") is not None and r["heartbeat_due"] <= now])

    async def next_deadline(self) -> datetime | None:
        due = [r["expires_at"] for r in self.approvals if r["status"] == "pending"]
        due += [r["heartbeat_due"] for r in self.devices if r.get("status") == "active" and r.get("heartbeat_due")]
        return min(due) if due else None
