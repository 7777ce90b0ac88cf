"""In-memory twins of auditsvc's stores (plain dicts), so handler logic gets unit tests without I/O.

Each twin has the methods of its store, with the same answers for the same calls; documents are
copied in and out, as a database would. Staged events are kept in `staged` for tests to read.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from shared.audit_chain import ChainHead
from shared.events import Event

from .search import Criteria


def _copy(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if doc is None else copy.deepcopy(dict(doc))


class MemoryArchiveStore:
    def __init__(self) -> None:
        self.archives: dict[str, list[dict[str, Any]]] = {}
        self.retention: dict[str, float] = {}
        self.staged: list[Event] = []
        self.archive_collection: Any = None
        self.settings_collection: Any = None

    async def create_indexes(self) -> None:
        pass

    def _of(self, tenant_id: str) -> list[dict[str, Any]]:
        return self.archives.setdefault(tenant_id, [])

    async def unfinished_archive(self, tenant_id: str) -> dict[str, Any] | None:
        pending = sorted((a for a in self._of(tenant_id) if a["state"] != "done"), key=lambda a: a["to_seq"])
        return _copy(pending[0]) if pending else None

    async def insert_archive(self, tenant_id: str, doc: dict[str, Any]) -> bool:
        if any(a["to_seq"] == doc["to_seq"] for a in self._of(tenant_id)):
            return False
        self._of(tenant_id).append({**copy.deepcopy(doc), "tenant_id": tenant_id})
        return True

    def _find(self, tenant_id: str, archive_id: str, state: str | None = None) -> dict[str, Any] | None:
        return next((a for a in self._of(tenant_id)
                     if a["archive_id"] == archive_id and (state is None or a["state"] == state)), None)

    async def mark_written(self, tenant_id: str, archive_id: str, written: dict[str, Any]) -> None:
        if (doc := self._find(tenant_id, archive_id, "writing")) is not None:
            doc.update(state="written", **written)

    async def mark_done(self, tenant_id: str, archive_id: str, *, at: datetime, event: Event) -> bool:
        if (doc := self._find(tenant_id, archive_id, "written")) is None:
            return False
        doc.update(state="done", archived_at=at)
        self.staged.append(event)
        return True

    async def archive(self, tenant_id: str, archive_id: str) -> dict[str, Any] | None:
        return _copy(self._find(tenant_id, archive_id))

    async def done_archive(self, tenant_id: str, archive_id: str) -> dict[str, Any] | None:
        return _copy(self._find(tenant_id, archive_id, "done"))

    async def archives_after(self, tenant_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        docs = sorted((a for a in self._of(tenant_id) if a["to_seq"] > after), key=lambda a: a["to_seq"])[:limit]
        return [{k: v for k, v in a.items() if k != "file"} for a in docs]

    async def retention_days(self, tenant_id: str) -> float | None:
        return self.retention.get(tenant_id)

    async def set_retention_days(self, tenant_id: str, days: float, event: Event) -> None:
        self.retention[tenant_id] = days
        self.staged.append(event)


class MemoryAuditStore:
    """Records by tenant and seq; the chain head is the last record's, or the last archive's end."""

    def __init__(self, archives: MemoryArchiveStore | None = None) -> None:
        self.records: dict[str, dict[int, dict[str, Any]]] = {}
        self._archives = archives or MemoryArchiveStore()

    async def create_indexes(self) -> None:
        pass

    async def last_done_archive(self, tenant_id: str) -> dict[str, Any] | None:
        done = [a for a in self._archives.archives.get(tenant_id, []) if a["state"] == "done"]
        return _copy(max(done, key=lambda a: a["to_seq"])) if done else None

    async def stored_head(self, tenant_id: str) -> ChainHead:
        records = self.records.get(tenant_id)
        if records:
            last = records[max(records)]
            return ChainHead(tenant_id, last["seq"], last["hash"])
        archived = await self.last_done_archive(tenant_id)
        if archived:
            return ChainHead(tenant_id, archived["to_seq"], archived["to_hash"])
        return ChainHead.genesis(tenant_id)

    async def head(self, tenant_id: str) -> ChainHead:
        return await self.stored_head(tenant_id)

    async def first_seq(self, tenant_id: str) -> int:
        archived = await self.last_done_archive(tenant_id)
        return archived["to_seq"] + 1 if archived else 1

    async def tenants(self) -> list[str]:
        return list(self.records)

    async def append(self, runs: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        for tenant_id, records in runs.items():
            for record in records:
                self.records.setdefault(tenant_id, {})[record["seq"]] = copy.deepcopy(record)

    async def known_event_ids(self, tenant_id: str, events: Sequence[tuple[str, str]]) -> set[str]:
        stored = {r["event_id"] for r in self.records.get(tenant_id, {}).values()}
        return {e for e, _ in events if e in stored}

    async def delete_range(self, tenant_id: str, first: int, last: int) -> None:
        for seq in range(first, last + 1):
            self.records.get(tenant_id, {}).pop(seq, None)

    async def read_range(self, tenant_id: str, first: int, last: int) -> list[dict[str, Any]]:
        records = self.records.get(tenant_id, {})
        return [copy.deepcopy(records[s]) for s in sorted(records) if first <= s <= last]

    async def query(self, tenant_id: str, criteria: Criteria, *, after_seq: int, limit: int) -> list[dict[str, Any]]:
        records = self.records.get(tenant_id, {})
        found = [records[s] for s in sorted(records) if s > after_seq and criteria.matches(records[s])]
        return copy.deepcopy(found[:limit])

    async def count(self, tenant_id: str, criteria: Criteria) -> int:
        return len(await self.query(tenant_id, criteria, after_seq=0, limit=10**9))


class MemoryCheckpointStore:
    def __init__(self) -> None:
        self.checkpoints: dict[str, dict[int, dict[str, Any]]] = {}
        self.keys: dict[str, dict[str, Any]] = {}
        self.staged: list[Event] = []
        self.collection: Any = None

    async def create_indexes(self) -> None:
        pass

    async def insert_checkpoint(self, tenant_id: str, checkpoint: dict[str, Any], event: Event) -> bool:
        mine = self.checkpoints.setdefault(tenant_id, {})
        if checkpoint["seq"] in mine:
            return False
        mine[checkpoint["seq"]] = {**copy.deepcopy(checkpoint), "tenant_id": tenant_id}
        self.staged.append(event)
        return True

    def _sorted(self, tenant_id: str) -> list[dict[str, Any]]:
        mine = self.checkpoints.get(tenant_id, {})
        return [copy.deepcopy(mine[s]) for s in sorted(mine)]

    async def last_checkpoint(self, tenant_id: str) -> dict[str, Any] | None:
        found = self._sorted(tenant_id)
        return found[-1] if found else None

    async def checkpoints_after(self, tenant_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        return [c for c in self._sorted(tenant_id) if c["seq"] > after][:limit]

    async def checkpoints_between(self, tenant_id: str, first: int, last: int) -> list[dict[str, Any]]:
        return [c for c in self._sorted(tenant_id) if first <= c["seq"] <= last]

    async def register_signing_key(self, doc: dict[str, Any]) -> None:
        self.keys.setdefault(doc["key_id"], copy.deepcopy(doc))

    async def signing_keys_in_use_order(self) -> list[dict[str, Any]]:
        return sorted(copy.deepcopy(list(self.keys.values())), key=lambda k: k["first_used"])


class MemoryForwarderStore:
    def __init__(self) -> None:
        self.forwarders: dict[tuple[str, str], dict[str, Any]] = {}
        self.staged: list[Event] = []
        self.collection: Any = None

    async def create_indexes(self) -> None:
        pass

    async def insert_forwarder(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        self.forwarders[(tenant_id, doc["forwarder_id"])] = {**copy.deepcopy(doc), "tenant_id": tenant_id}
        self.staged.append(event)

    async def forwarder(self, tenant_id: str, forwarder_id: str) -> dict[str, Any] | None:
        return _copy(self.forwarders.get((tenant_id, forwarder_id)))

    async def list_forwarders(self, tenant_id: str) -> list[dict[str, Any]]:
        mine = [copy.deepcopy(d) for (t, _), d in self.forwarders.items() if t == tenant_id]
        return sorted(mine, key=lambda d: d["created_at"])

    async def change_forwarder(self, tenant_id: str, forwarder_id: str, fields: dict[str, Any], event: Event) -> bool:
        doc = self.forwarders.get((tenant_id, forwarder_id))
        if doc is None:
            return False
        doc.update(copy.deepcopy(fields))
        self.staged.append(event)
        return True

    async def replace_secret(self, tenant_id: str, forwarder_id: str, *, old: str, new: str, event: Event) -> bool:
        doc = self.forwarders.get((tenant_id, forwarder_id))
        if doc is None or doc["secret"] != old:
            return False
        doc["secret"] = new
        self.staged.append(event)
        return True

    async def delete_forwarder(self, tenant_id: str, forwarder_id: str) -> None:
        self.forwarders.pop((tenant_id, forwarder_id), None)

    async def enabled_forwarders(self) -> list[tuple[str, str]]:
        return [key for key, d in self.forwarders.items() if d.get("enabled")]

    async def enabled_cursors(self, tenant_id: str) -> list[int]:
        return [d.get("cursor", 0) for (t, _), d in self.forwarders.items() if t == tenant_id and d.get("enabled")]

    async def take_lease(self, tenant_id: str, forwarder_id: str, *, owner: str, now: datetime,
                         until: datetime) -> bool:
        doc = self.forwarders.get((tenant_id, forwarder_id))
        if doc is None or not (doc.get("lease_owner") in (owner, None) or doc["lease_until"] < now):
            return False
        doc.update(lease_owner=owner, lease_until=until)
        return True

    async def release_lease(self, tenant_id: str, forwarder_id: str, *, owner: str) -> None:
        doc = self.forwarders.get((tenant_id, forwarder_id))
        if doc is not None and doc.get("lease_owner") == owner:
            doc.update(lease_owner=None, lease_until=None)

    async def record_state(self, tenant_id: str, forwarder_id: str, state: dict[str, Any]) -> None:
        if (doc := self.forwarders.get((tenant_id, forwarder_id))) is not None:
            doc.update(copy.deepcopy(state))

    async def advance_cursor(self, tenant_id: str, forwarder_id: str, *, cursor: int, to: int, delivered: int,
                             at: datetime) -> bool:
        doc = self.forwarders.get((tenant_id, forwarder_id))
        if doc is None or doc.get("cursor") != cursor:
            return False
        doc.update(cursor=to, status="active", failures=0, last_delivered_at=at, next_attempt_at=None,
                   delivered=doc.get("delivered", 0) + delivered)
        return True
