"""An in-memory twin of KeyStore (plain dicts), so handler logic is unit tested without I/O.

It keeps the same documents and the same compare-and-swap answers as the MongoDB store; events
staged with a write are kept in `staged` (the outbox publishes them by area, see `outbox_of`).
"""

from __future__ import annotations

import copy
import itertools
from datetime import datetime
from typing import Any

from shared.events import Event
from shared.key_states import DESTROYED_STATES
from shared.store import DuplicateKeyError

from .kek_rotation import Rewrap
from .key_docs import head_doc, key_from, release_view_from, version_doc
from .keys import Key, ReleaseView
from .store_memory_root import MemoryRootQueries
from .store_root import SYSTEM_TENANT

__all__ = ["SYSTEM_TENANT", "MemoryKeyStore"]


def _copy(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    return copy.deepcopy(doc)


class MemoryKeyStore(MemoryRootQueries):
    """KeyStore's methods over plain dicts (see store.py for what each one means)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.heads: dict[tuple[str, str], dict[str, Any]] = {}
        self.versions: dict[int, dict[str, Any]] = {}  # by _id, in insertion order (the KEK walk's cursor)
        self.keks: dict[tuple[str, int], dict[str, Any]] = {}
        self.releases: dict[tuple[str, str], dict[str, Any]] = {}
        self.settings: dict[str, dict[str, Any]] = {}
        self.destructions: dict[tuple[str, str], dict[str, Any]] = {}
        self.kek_rotations: dict[tuple[str, int], dict[str, Any]] = {}
        self.offboardings: dict[str, dict[str, Any]] = {}
        self.import_keys: dict[tuple[str, str], dict[str, Any]] = {}
        self.custody: dict[str, dict[str, Any]] = {}  # "root" and "unseal"
        self.peers: dict[str, dict[str, Any]] = {}
        self.leases: dict[str, dict[str, Any]] = {}
        self.staged: list[Event] = []

    def outbox_of(self, area: str) -> str:
        return area

    async def create_indexes(self) -> None:
        return None

    # --- keys -----------------------------------------------------------------------------

    async def insert_new_key(self, key: Key, event: Event) -> None:
        t = key.tenant_id
        if (t, key.key_id) in self.heads or any(h["name"] == key.name for (ht, _), h in self.heads.items() if ht == t):
            raise DuplicateKeyError("duplicate key")
        for kv in key.versions.values():
            self._add_version(t, version_doc(key, kv))
        self.heads[(t, key.key_id)] = {"_id": next(self._ids), "tenant_id": t, **head_doc(key)}
        self.staged.append(event)

    def _add_version(self, tenant_id: str, doc: dict[str, Any]) -> None:
        if any(d["tenant_id"] == tenant_id and d["key_id"] == doc["key_id"] and d["version"] == doc["version"]
               for d in self.versions.values()):
            raise DuplicateKeyError("duplicate version")
        _id = next(self._ids)
        self.versions[_id] = {"_id": _id, "tenant_id": tenant_id, **doc}

    def _versions_of(self, tenant_id: str, key_id: str | None = None) -> list[dict[str, Any]]:
        return [d for d in self.versions.values()
                if d["tenant_id"] == tenant_id and (key_id is None or d["key_id"] == key_id)]

    async def load_key(self, tenant_id: str, key_id: str) -> Key | None:
        head = self.heads.get((tenant_id, key_id))
        if head is None:
            return None
        return key_from(head, sorted(self._versions_of(tenant_id, key_id), key=lambda d: d["version"]))

    async def load_release_view(self, tenant_id: str, key_id: str) -> ReleaseView | None:
        head = self.heads.get((tenant_id, key_id))
        return None if head is None else release_view_from(tenant_id, key_id, head)

    async def list_heads(self, tenant_id: str, *, limit: int = 100, after: str | None = None) -> list[dict[str, Any]]:
        heads = sorted((h for (t, k), h in self.heads.items() if t == tenant_id and (after is None or k > after)),
                       key=lambda h: h["key_id"])
        return [{k: v for k, v in h.items() if k not in ("_id", "latest_material")} for h in heads[:limit]]

    async def save_key(self, before: Key, after: Key, event: Event) -> bool:
        head = self.heads.get((after.tenant_id, after.key_id))
        for v in range(before.latest_version + 1, after.latest_version + 1):
            try:
                self._add_version(after.tenant_id, version_doc(after, after.versions[v]))
            except DuplicateKeyError:  # left by a writer that never moved the head: taken over, as KeyStore does
                if head is None or head["updated_at"] != before.updated_at or head["latest_version"] != before.latest_version:
                    return False
                left = next(d for d in self._versions_of(after.tenant_id, after.key_id) if d["version"] == v)
                left.update(version_doc(after, after.versions[v]))
        if head is None or head["updated_at"] != before.updated_at:
            return False
        head.update(head_doc(after))
        self.staged.append(event)
        if any(kv.destroyed for kv in after.versions.values()):
            await self.shred_key_material(after.tenant_id, after.key_id)
        return True

    async def shred_key_material(self, tenant_id: str, key_id: str | None = None) -> int:
        shredded = 0
        for d in self._versions_of(tenant_id, key_id):
            if d.get("wrapped") is not None:
                d.pop("wrapped")
                shredded += 1
        for (t, k), head in self.heads.items():
            if t == tenant_id and (key_id is None or k == key_id):
                head["latest_material"]["wrapped"] = None
        return shredded

    async def wrapped_by_version(self, tenant_id: str, key_id: str) -> dict[int, bytes | None]:
        return {d["version"]: d.get("wrapped") for d in self._versions_of(tenant_id, key_id)}

    async def keys_due_for_rotation(self, now: datetime, *, limit: int) -> list[tuple[str, str]]:
        due = [k for k, h in self.heads.items() if h.get("next_rotation_at") is not None and h["next_rotation_at"] <= now]
        return due[:limit]

    # --- KEKs -----------------------------------------------------------------------------

    def _keks_of(self, tenant_id: str) -> list[dict[str, Any]]:
        return sorted((d for (t, _), d in self.keks.items() if t == tenant_id), key=lambda d: d["kek_version"])

    async def current_kek(self, tenant_id: str) -> dict[str, Any] | None:
        keks = self._keks_of(tenant_id)
        return _copy(keks[-1]) if keks else None

    async def kek_versions(self, tenant_id: str) -> list[int]:
        return [d["kek_version"] for d in reversed(self._keks_of(tenant_id))]

    async def kek(self, tenant_id: str, version: int) -> dict[str, Any] | None:
        return _copy(self.keks.get((tenant_id, version)))

    async def insert_kek(self, tenant_id: str, version: int, wrapped: bytes, now: datetime,
                         root_fingerprint: str | None = None, *, copy: tuple[bytes, str] | None = None) -> bool:
        if (tenant_id, version) in self.keks:
            return False
        doc = {"_id": next(self._ids), "tenant_id": tenant_id, "kek_version": version, "wrapped": wrapped,
               "created_at": now, "root_fp": root_fingerprint}
        if copy is not None:
            doc["wrapped_next"], doc["next_fp"] = copy
        self.keks[(tenant_id, version)] = doc
        return True

    # --- release ledger -------------------------------------------------------------------

    async def find_release(self, tenant_id: str, request_id: str) -> dict[str, Any] | None:
        return _copy(self.releases.get((tenant_id, request_id)))

    async def find_device_release(self, tenant_id: str, request_id: str, device_id: str) -> dict[str, Any] | None:
        doc = self.releases.get((tenant_id, request_id))
        collectable = doc is not None and doc["device_id"] == device_id and not doc.get("pending_audit")
        return _copy(doc) if collectable else None

    async def releases_since(self, tenant_id: str, key_id: str, since: datetime) -> list[dict[str, Any]]:
        docs = [d for (t, _), d in self.releases.items()
                if t == tenant_id and d["key_id"] == key_id and d["at"] >= since and d.get("released")]
        return sorted(docs, key=lambda d: d["at"], reverse=True)

    async def record_release(self, tenant_id: str, doc: dict[str, Any]) -> bool:
        if (tenant_id, doc["request_id"]) in self.releases:
            return False
        self.releases[(tenant_id, doc["request_id"])] = {"tenant_id": tenant_id, **doc}
        return True

    async def mark_release_audited(self, tenant_id: str, request_id: str) -> None:
        doc = self.releases.get((tenant_id, request_id))
        if doc is not None and doc.get("pending_audit"):
            doc["pending_audit"] = False

    async def refuse_release(self, tenant_id: str, request_id: str, outcome_json: str) -> None:
        doc = self.releases.get((tenant_id, request_id))
        if doc is not None and doc["released"]:
            doc.update(released=False, key_version=None, outcome=outcome_json, pending_audit=False)

    # --- tenant settings, destructions, offboarding, import keys --------------------------

    async def load_settings(self, tenant_id: str) -> dict[str, Any]:
        doc = self.settings.get(tenant_id, {})
        return {f: doc[f] for f in ("min_key_bits", "destruction_wait_days", "dependency_window_days",
                                    "export_deactivated") if f in doc}

    async def save_settings(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        self.settings.setdefault(tenant_id, {}).update(doc)
        self.staged.append(event)

    async def insert_destruction(self, tenant_id: str, doc: dict[str, Any], event: Event) -> bool:
        held = self.destructions.get((tenant_id, doc["key_id"]))
        if held is not None and held["status"] != "cancelled":
            return False
        self.destructions[(tenant_id, doc["key_id"])] = {**(held or {}), "tenant_id": tenant_id, **copy.deepcopy(doc)}
        self.staged.append(event)
        return True

    async def find_destruction(self, tenant_id: str, key_id: str) -> dict[str, Any] | None:
        return _copy(self.destructions.get((tenant_id, key_id)))

    async def find_destroyed(self, tenant_id: str, key_id: str) -> dict[str, Any] | None:
        doc = self.destructions.get((tenant_id, key_id))
        return _copy(doc) if doc is not None and doc["status"] == "destroyed" else None

    def _swap_destruction(self, tenant_id: str, key_id: str, destruction_id: str, status: str,
                          changes: dict[str, Any], event: Event | None, approvals: list[str] | None = None) -> bool:
        doc = self.destructions.get((tenant_id, key_id))
        if (doc is None or doc["destruction_id"] != destruction_id or doc["status"] != status
                or (approvals is not None and doc["approvals"] != approvals)):
            return False
        doc.update(copy.deepcopy(changes))
        if event is not None:
            self.staged.append(event)
        return True

    async def add_destruction_approval(self, tenant_id: str, key_id: str, destruction_id: str,
                                       before: list[str], after: list[str], event: Event) -> bool:
        return self._swap_destruction(tenant_id, key_id, destruction_id, "scheduled", {"approvals": after}, event, before)

    async def cancel_destruction(self, tenant_id: str, key_id: str, destruction_id: str, by: str, event: Event) -> bool:
        return self._swap_destruction(tenant_id, key_id, destruction_id, "scheduled",
                                      {"status": "cancelled", "cancelled_by": by}, event)

    async def destructions_to_run(self, now: datetime, *, limit: int) -> list[dict[str, Any]]:
        docs = [d for d in self.destructions.values()
                if (d["status"] == "scheduled" and d["not_before"] <= now) or d["status"] == "destroying"]
        return copy.deepcopy(docs[:limit])

    async def claim_destruction(self, tenant_id: str, key_id: str, destruction_id: str, *,
                                certificate: dict[str, Any], signature: str, destroyed_at: datetime) -> bool:
        return self._swap_destruction(tenant_id, key_id, destruction_id, "scheduled", {
            "status": "destroying", "certificate": certificate, "signature": signature, "destroyed_at": destroyed_at}, None)

    async def record_destruction(self, tenant_id: str, key_id: str, destruction_id: str, event: Event) -> bool:
        return self._swap_destruction(tenant_id, key_id, destruction_id, "destroying", {"status": "destroyed"}, event)

    async def shred_keks(self, tenant_id: str) -> list[int]:
        versions = [d["kek_version"] for d in self._keks_of(tenant_id)]
        for v in versions:
            del self.keks[(tenant_id, v)]
        return versions

    async def mark_all_keys_destroyed(self, tenant_id: str, now: datetime) -> int:
        changed = 0
        for (t, _), head in self.heads.items():
            if t == tenant_id and head["state"] not in DESTROYED_STATES:
                head.update(state="destroyed", destroyed_at=now, updated_at=now, next_rotation_at=None)
                changed += 1
        return changed

    async def tenant_material(self, tenant_id: str) -> tuple[dict[int, bytes], int, int]:
        keks = {d["kek_version"]: bytes(d["wrapped"]) for d in self._keks_of(tenant_id)}
        live = sum(1 for (t, _), h in self.heads.items() if t == tenant_id and h["state"] not in DESTROYED_STATES)
        blobs = sum(1 for d in self.versions.values() if d["tenant_id"] == tenant_id and d.get("wrapped") is not None)
        return keks, live, blobs

    async def find_offboarding(self, tenant_id: str) -> dict[str, Any] | None:
        return _copy(self.offboardings.get(tenant_id))

    async def claim_offboarding(self, tenant_id: str, doc: dict[str, Any]) -> bool:
        if tenant_id in self.offboardings:
            return False
        self.offboardings[tenant_id] = {"tenant_id": tenant_id, **copy.deepcopy(doc)}
        return True

    async def record_offboarding(self, tenant_id: str, offboarding_id: str, shredded_at: datetime,
                                 event: Event) -> bool:
        doc = self.offboardings.get(tenant_id)
        if doc is None or doc["offboarding_id"] != offboarding_id or doc["status"] != "shredding":
            return False
        doc.update(status="shredded", shredded_at=shredded_at)
        self.staged.append(event)
        return True

    async def insert_import_key(self, tenant_id: str, doc: dict[str, Any]) -> None:
        self.import_keys[(tenant_id, doc["import_token"])] = {"tenant_id": tenant_id, **doc}

    async def find_import_key(self, tenant_id: str, token: str) -> dict[str, Any] | None:
        return _copy(self.import_keys.get((tenant_id, token)))

    async def consume_import_key(self, tenant_id: str, token: str) -> bool:
        return self.import_keys.pop((tenant_id, token), None) is not None

    async def drop_import_keys(self, tenant_id: str) -> None:
        for entry in [e for e in self.import_keys if e[0] == tenant_id]:
            del self.import_keys[entry]

    # --- KEK rotation ---------------------------------------------------------------------

    def _rotations_of(self, tenant_id: str) -> list[dict[str, Any]]:
        return [d for (t, _), d in self.kek_rotations.items() if t == tenant_id]

    async def running_kek_rotation(self, tenant_id: str) -> dict[str, Any] | None:
        return next((_copy(d) for d in self._rotations_of(tenant_id) if d["status"] == "running"), None)

    async def running_kek_rotations(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(d) for d in self.kek_rotations.values() if d["status"] == "running"]

    async def latest_kek_rotation(self, tenant_id: str) -> dict[str, Any] | None:
        rotations = sorted(self._rotations_of(tenant_id), key=lambda d: d["to_version"])
        return _copy(rotations[-1]) if rotations else None

    async def insert_kek_rotation(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        if (tenant_id, doc["to_version"]) in self.kek_rotations:
            raise DuplicateKeyError("duplicate rotation")
        self.kek_rotations[(tenant_id, doc["to_version"])] = {"tenant_id": tenant_id, **copy.deepcopy(doc)}
        self.staged.append(event)

    async def count_wrapped_below(self, tenant_id: str, kek_version: int) -> int:
        return sum(1 for d in self._versions_of(tenant_id) if d["kek_version"] < kek_version and d.get("wrapped") is not None)

    async def count_wrapped_under(self, tenant_id: str, kek_version: int) -> int:
        return sum(1 for d in self._versions_of(tenant_id) if d["kek_version"] == kek_version and d.get("wrapped") is not None)

    async def versions_after(self, tenant_id: str, cursor: Any, *, limit: int) -> list[dict[str, Any]]:
        page = [d for d in self._versions_of(tenant_id) if cursor is None or d["_id"] > cursor]
        return copy.deepcopy(sorted(page, key=lambda d: d["_id"])[:limit])

    async def save_rewrapped(self, tenant_id: str, rewraps: list[Rewrap], to_version: int) -> None:
        for r in rewraps:
            doc = self.versions.get(r.doc_id)
            if doc is not None and doc["kek_version"] == r.from_version and doc.get("wrapped") == r.old:
                doc.update(wrapped=r.new, kek_version=to_version)
            latest = (self.heads.get((tenant_id, r.key_id)) or {}).get("latest_material") or {}
            if latest.get("version") == r.version and latest.get("wrapped") == r.old:
                latest.update(wrapped=r.new, kek_version=to_version)

    def _rotation(self, tenant_id: str, rotation_id: str) -> dict[str, Any] | None:
        return next((d for d in self._rotations_of(tenant_id) if d["rotation_id"] == rotation_id), None)

    async def advance_kek_rotation(self, tenant_id: str, rotation_id: str, cursor: Any, rewrapped: int, now: datetime) -> None:
        if (doc := self._rotation(tenant_id, rotation_id)) is not None:
            doc.update(cursor=cursor, updated_at=now, rewrapped=doc.get("rewrapped", 0) + rewrapped)

    async def restart_kek_sweep(self, tenant_id: str, rotation_id: str) -> None:
        if (doc := self._rotation(tenant_id, rotation_id)) is not None:
            doc["cursor"] = None

    async def retire_keks_below(self, tenant_id: str, kek_version: int) -> list[int]:
        old = [d["kek_version"] for d in self._keks_of(tenant_id) if d["kek_version"] < kek_version]
        for v in old:
            del self.keks[(tenant_id, v)]
        return old

    async def finish_kek_rotation(self, tenant_id: str, rotation_id: str, rewrapped: int, now: datetime,
                                  event: Event) -> bool:
        doc = self._rotation(tenant_id, rotation_id)
        if doc is None or doc["status"] != "running":
            return False
        doc.update(status="done", finished_at=now, cursor=None, rewrapped=rewrapped)
        self.staged.append(event)
        return True
