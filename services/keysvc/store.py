"""keysvc's MongoDB store: key heads, key versions, tenant KEKs and the release ledger here, the
other areas' queries in store_custody.py, store_kek.py and store_root.py (mixed into KeyStore).

Versions live in their own collection so that rotating a key writes one small document
whatever the number of versions. Wrapped material is ciphertext under the tenant KEK;
the plaintext data key is never written anywhere.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from shared import outbox
from shared.events import Event
from shared.group_insert import GroupInserter, GroupUpdater
from shared.group_read import GroupReader
from shared.store import DuplicateKeyError, TenantCollection, stored_now, tenant_key

from .key_docs import head_doc, key_from, release_view_from, version_doc
from .keys import Key, KeyVersion, ReleaseView
from .store_custody import CustodyQueries
from .store_kek import KekRotationQueries
from .store_root import SYSTEM_TENANT, RootQueries
from .store_volumes import VolumeRecoveryQueries

__all__ = ["OUTBOX_AREAS", "SYSTEM_TENANT", "KeyStore"]

# Areas whose documents stage events for the outbox, by collection attribute.
OUTBOX_AREAS = ("keys", "settings", "destructions", "kek_rotations", "custody", "offboardings", "volume_recovery")

_BY_REQUEST_INDEX = "tenant_id_1_request_id_1"  # the releases' unique index of a ledger from before


def release_key(tenant_id: str, request_id: str) -> str:
    """A release's `_id`: `_id` uniqueness is the check that a request is answered once."""
    return tenant_key(tenant_id, request_id)


_RELEASE_FIELDS = {"_id": 0, "key_id": 1, "algorithm": 1, "state": 1, "latest_version": 1,
                   "min_decryption_version": 1, "latest_material": 1}


class KeyStore(CustodyQueries, KekRotationQueries, RootQueries, VolumeRecoveryQueries):
    """Every MongoDB query of keysvc, behind methods named for what they do (tenant id in each)."""

    def __init__(self, db: AsyncDatabase):
        self.keys = TenantCollection(db["keys"])
        self.versions = TenantCollection(db["key_versions"])
        self.keks = TenantCollection(db["keks"])
        self.releases = TenantCollection(db["releases"])
        self._release_inserts = GroupInserter(self.releases.raw)
        self._release_updates = GroupUpdater(self.releases.raw)
        # A ledger from before releases were keyed by `_id` (see `release_key`) has a unique
        # (tenant_id, request_id) index, and releases with generated `_id`s that only it finds: while
        # it has that index, releases are looked up through it. Known once `create_indexes` ran.
        self._releases_by_request = True
        self._release_views = GroupReader(self.keys, "key_id", projection=_RELEASE_FIELDS)  # cache misses, grouped
        self.settings = TenantCollection(db["custody_settings"])
        self.destructions = TenantCollection(db["destructions"])
        self.kek_rotations = TenantCollection(db["kek_rotations"])
        self.offboardings = TenantCollection(db["offboardings"])  # one per offboarded tenant, with its certificate
        # Service-wide documents (root of trust, leases, import keys) carry SYSTEM_TENANT as tenant id.
        self.custody = TenantCollection(db["custody"])
        self.leases = TenantCollection(db["leases"])
        self.import_keys = TenantCollection(db["import_keys"])
        self.peers = TenantCollection(db["peers"])  # running keysvc instances (unseal.py)
        self.escrow_keys = TenantCollection(db["volume_escrow_keys"])
        self.volume_recovery = TenantCollection(db["volume_recovery"])
        self.recovery_releases = TenantCollection(db["volume_recovery_releases"])

    @property
    def outbox_collections(self) -> list[Any]:
        return [self.outbox_of(name) for name in OUTBOX_AREAS]

    def outbox_of(self, area: str) -> Any:
        """The collection whose documents stage an area's events (what Outbox.publish unstages from)."""
        if area not in OUTBOX_AREAS:
            raise KeyError(area)
        return getattr(self, area).raw

    async def create_indexes(self) -> None:
        await self.keys.raw.create_index([("tenant_id", ASCENDING), ("key_id", ASCENDING)], unique=True)
        await self.keys.raw.create_index([("tenant_id", ASCENDING), ("name", ASCENDING)], unique=True)
        # save_key's compare-and-swap filter, exactly: the embedded store scans for any filter not covered.
        await self.keys.raw.create_index([("tenant_id", ASCENDING), ("key_id", ASCENDING), ("updated_at", ASCENDING)])
        await self.versions.raw.create_index(
            [("tenant_id", ASCENDING), ("key_id", ASCENDING), ("version", ASCENDING)], unique=True
        )
        await self.keks.raw.create_index([("tenant_id", ASCENDING), ("kek_version", ASCENDING)], unique=True)
        # Releases are unique by `_id` (`release_key`): no unique index of their own, which would cost the
        # embedded store an entry to write on every insert and to rewrite on the audited mark.
        self._releases_by_request = _BY_REQUEST_INDEX in await self.releases.raw.index_information()
        await self.releases.raw.create_index([("tenant_id", ASCENDING), ("key_id", ASCENDING), ("at", DESCENDING)])
        await self.keys.raw.create_index([("next_rotation_at", ASCENDING)])
        # KEK rotation walks a tenant's versions still under an old KEK, in _id order (its cursor).
        await self.versions.raw.create_index([("tenant_id", ASCENDING), ("_id", ASCENDING)])
        await self.settings.raw.create_index([("tenant_id", ASCENDING)], unique=True)
        await self.destructions.raw.create_index([("tenant_id", ASCENDING), ("key_id", ASCENDING)], unique=True)
        await self.destructions.raw.create_index([("status", ASCENDING), ("not_before", ASCENDING)])
        await self.kek_rotations.raw.create_index([("tenant_id", ASCENDING), ("to_version", ASCENDING)], unique=True)
        await self.kek_rotations.raw.create_index([("status", ASCENDING)])
        await self.offboardings.raw.create_index([("tenant_id", ASCENDING)], unique=True)
        await self.custody.raw.create_index([("tenant_id", ASCENDING), ("name", ASCENDING)], unique=True)
        await self.leases.raw.create_index([("tenant_id", ASCENDING), ("name", ASCENDING)], unique=True)
        await self.import_keys.raw.create_index([("tenant_id", ASCENDING), ("import_token", ASCENDING)], unique=True)
        await self.peers.raw.create_index([("tenant_id", ASCENDING), ("peer_id", ASCENDING)], unique=True)
        await self.create_volume_indexes()

    # --- keys -------------------------------------------------------------------------

    async def insert_new_key(self, key: Key, event: Event) -> None:
        """Versions first, head last: a head is only visible once its material exists. DuplicateKeyError
        when the name is taken, or the key id (derived from a request id) was inserted before."""
        try:
            await self.versions.insert_many(key.tenant_id, [version_doc(key, kv) for kv in key.versions.values()])
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
            raise DuplicateKeyError(f"versions of {key.key_id} exist") from None
        await self.keys.insert(key.tenant_id, outbox.staged(head_doc(key), event))

    async def load_key(self, tenant_id: str, key_id: str) -> Key | None:
        # Both indexed reads at once: a cache miss costs one round trip, whatever the tenant's size.
        head, docs = await asyncio.gather(
            self.keys.find_one(tenant_id, {"key_id": key_id}),
            self.versions.find(tenant_id, {"key_id": key_id}, sort=[("version", ASCENDING)]),
        )
        if head is None:
            return None
        return key_from(head, docs)

    async def load_release_view(self, tenant_id: str, key_id: str) -> ReleaseView | None:
        """One indexed read of the head (grouped with concurrent misses): what releasing the latest
        version needs. None when the key is missing or its head predates the latest-material copy
        (load_key then)."""
        head = await self._release_views.find_one(tenant_id, key_id)
        return None if head is None else release_view_from(tenant_id, key_id, head)

    async def list_heads(self, tenant_id: str, *, limit: int = 100, after: str | None = None) -> list[dict[str, Any]]:
        query = {"key_id": {"$gt": after}} if after else {}
        return await self.keys.find(tenant_id, query, sort=[("key_id", ASCENDING)], limit=limit,
                                    projection={"_id": 0, "latest_material": 0, "_outbox": 0})

    async def save_key(self, before: Key, after: Key, event: Event) -> bool:
        """Compare-and-swap on `updated_at`: False when another writer changed the key first.

        New versions go in before the head names them. One found already there was left by a
        writer that has not moved the head (yet, or ever: it died in between, and would otherwise
        block every later rotation); it is taken over (`_take_over_version`)."""
        base: datetime | None = before.updated_at
        new_versions = [after.versions[v] for v in range(before.latest_version + 1, after.latest_version + 1)]
        for kv in new_versions:
            try:
                await self.versions.insert(after.tenant_id, version_doc(after, kv))
            except DuplicateKeyError:
                base = await self._take_over_version(before, after, kv, base)
                if base is None:
                    return False
        matched = await self.keys.update_one(
            after.tenant_id,
            {"key_id": after.key_id, "updated_at": base},
            {"$set": head_doc(after), **outbox.push(event)},
        )
        if matched and any(kv.destroyed for kv in after.versions.values()):
            await self.shred_key_material(after.tenant_id, after.key_id)
        return bool(matched)

    async def _take_over_version(self, before: Key, after: Key, kv: KeyVersion, base: datetime) -> datetime | None:
        """Replace a version no head names yet; the head's new `updated_at` to swap on, or None when
        the head moved on (another writer saved: its version stands).

        The head is taken first, by a swap to a new `updated_at` with nothing else changed: a writer
        still alive between its version and its head then loses its swap, so the head never names a
        version whose material another writer replaced."""
        taken = max(stored_now(), base + timedelta(milliseconds=1))
        if not await self.keys.update_one(
                after.tenant_id, {"key_id": after.key_id, "updated_at": base, "latest_version": before.latest_version},
                {"$set": {"updated_at": taken}}):
            return None
        await self.versions.update_one(after.tenant_id, {"key_id": after.key_id, "version": kv.version},
                                       {"$set": version_doc(after, kv)})
        return taken

    async def shred_key_material(self, tenant_id: str, key_id: str | None = None) -> int:
        """Crypto-shredding: overwrite each wrapped blob with random bytes, then remove the field."""
        # Read by indexed fields only (tenant, or tenant and key); what holds no material is skipped here.
        query: dict[str, Any] = {"key_id": key_id} if key_id is not None else {}
        shredded = 0
        for doc in await self.versions.find(tenant_id, query, projection={"_id": 1, "wrapped": 1}):
            if doc.get("wrapped") is None:
                continue
            noise = secrets.token_bytes(len(bytes(doc["wrapped"])))
            await self.versions.update_one(tenant_id, {"_id": doc["_id"]}, {"$set": {"wrapped": noise}})
            await self.versions.update_one(tenant_id, {"_id": doc["_id"]}, {"$unset": {"wrapped": ""}})
            shredded += 1
        # The heads' copies of their latest version's material go the same way.
        for doc in await self.keys.find(tenant_id, query, projection={"_id": 1, "latest_material.wrapped": 1}):
            if (doc.get("latest_material") or {}).get("wrapped") is None:
                continue
            noise = secrets.token_bytes(len(bytes(doc["latest_material"]["wrapped"])))
            await self.keys.update_one(tenant_id, {"_id": doc["_id"]}, {"$set": {"latest_material.wrapped": noise}})
            await self.keys.update_one(tenant_id, {"_id": doc["_id"]}, {"$set": {"latest_material.wrapped": None}})
        return shredded

    async def wrapped_by_version(self, tenant_id: str, key_id: str) -> dict[int, bytes | None]:
        docs = await self.versions.find(tenant_id, {"key_id": key_id}, projection={"version": 1, "wrapped": 1})
        return {d["version"]: (bytes(d["wrapped"]) if d.get("wrapped") is not None else None) for d in docs}

    async def keys_due_for_rotation(self, now: datetime, *, limit: int) -> list[tuple[str, str]]:
        """(tenant, key) of every head whose next rotation time has passed (indexed, all tenants)."""
        heads = await self.keys.raw.find({"next_rotation_at": {"$lte": now}}, {"tenant_id": 1, "key_id": 1},
                                         limit=limit).to_list(None)
        return [(h["tenant_id"], h["key_id"]) for h in heads]

    # --- KEKs -------------------------------------------------------------------------

    async def current_kek(self, tenant_id: str) -> dict[str, Any] | None:
        docs = await self.keks.find(tenant_id, {}, sort=[("kek_version", DESCENDING)], limit=1)
        return docs[0] if docs else None

    async def kek_versions(self, tenant_id: str) -> list[int]:
        """The tenant's KEK versions, newest first."""
        docs = await self.keks.find(tenant_id, {}, projection={"kek_version": 1}, sort=[("kek_version", DESCENDING)])
        return [d["kek_version"] for d in docs]

    async def kek(self, tenant_id: str, version: int) -> dict[str, Any] | None:
        return await self.keks.find_one(tenant_id, {"kek_version": version})

    async def insert_kek(
        self, tenant_id: str, version: int, wrapped: bytes, now: datetime, root_fingerprint: str | None = None,
        *, copy: tuple[bytes, str] | None = None,
    ) -> bool:
        """`copy` is the same KEK wrapped under the incoming root of a pending re-key, and its root."""
        doc: dict[str, Any] = {"kek_version": version, "wrapped": wrapped, "created_at": now, "root_fp": root_fingerprint}
        if copy is not None:
            doc["wrapped_next"], doc["next_fp"] = copy
        try:
            await self.keks.insert(tenant_id, doc)
            return True
        except DuplicateKeyError:
            return False

    # --- release ledger (idempotency and dependency reports) --------------------------

    async def find_release(self, tenant_id: str, request_id: str) -> dict[str, Any] | None:
        if self._releases_by_request:
            return await self.releases.find_one(tenant_id, {"request_id": request_id})
        doc = await self.releases.find_by_key(tenant_id, release_key(tenant_id, request_id))
        return doc if doc is not None and doc["request_id"] == request_id else None

    async def find_device_release(self, tenant_id: str, request_id: str, device_id: str) -> dict[str, Any] | None:
        """One device's recorded release outcome (an agent collecting what it waited for); a release
        whose audit record is not queued yet is not there to collect. Read by its key alone and
        checked here: the embedded store scans the tenant's whole ledger for a filter that names
        more fields than an index holds."""
        doc = await self.find_release(tenant_id, request_id)
        if doc is None or doc.get("device_id") != device_id or doc.get("pending_audit") is True:
            return None
        return doc

    async def releases_since(self, tenant_id: str, key_id: str, since: datetime) -> list[dict[str, Any]]:
        """The key's released (not refused) versions since a time, newest first, for dependency reports."""
        # Filtered on exactly the indexed fields (tenant, key, time); refusals are dropped here.
        docs = await self.releases.find(
            tenant_id, {"key_id": key_id, "at": {"$gte": since}},
            projection={"device_id": 1, "at": 1, "key_version": 1, "released": 1}, sort=[("at", DESCENDING)], limit=10_000,
        )
        return [d for d in docs if d.get("released")]

    async def record_release(self, tenant_id: str, doc: dict[str, Any]) -> bool:
        """False when this request was already answered (a redelivery)."""
        return await self._release_inserts.insert(tenant_id, {"_id": release_key(tenant_id, doc["request_id"]), **doc})

    async def mark_release_audited(self, tenant_id: str, request_id: str) -> None:
        """The release's audit record is queued: its agent may collect it now.

        Filtered on its key alone (with `pending_audit` in the filter the embedded store scanned the
        tenant's whole ledger, the most costly store operation of a release); a refused release
        already has `pending_audit` false, so the result is the same. Grouped with the concurrent
        releases' marks into one write."""
        audited = {"$set": {"pending_audit": False}}
        if self._releases_by_request:
            await self._release_updates.update_one(tenant_id, {"request_id": request_id}, audited)
        else:
            await self._release_updates.update_by_id(release_key(tenant_id, request_id), audited)

    async def refuse_release(self, tenant_id: str, request_id: str, outcome_json: str) -> None:
        """A recorded release that never left (its audit record could not be queued) becomes a refusal;
        one refused already keeps its outcome."""
        if self._releases_by_request:
            await self.releases.update_one(tenant_id, {"request_id": request_id, "released": True}, {"$set": {
                "released": False, "key_version": None, "outcome": outcome_json, "pending_audit": False}})
            return
        # By its key alone (see `find_release`), the outcome replaced only if it still says released
        # (the other fields already hold these values on a refusal).
        await self.releases.raw.update_one({"_id": release_key(tenant_id, request_id)}, [{"$set": {
            "outcome": {"$cond": [{"$eq": ["$released", True]}, {"$literal": outcome_json}, "$outcome"]},
            "released": False, "key_version": None, "pending_audit": False}}])
