"""keysvc's custody queries: tenant key policy, scheduled destructions, import keys and offboarding."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from shared import outbox
from shared.events import Event
from shared.key_states import DESTROYED_STATES
from shared.store import DuplicateKeyError, TenantCollection

_SETTINGS_FIELDS = ("min_key_bits", "destruction_wait_days", "dependency_window_days", "export_deactivated")


class CustodyQueries:
    """Tenant settings, destructions, import keys; mixed into KeyStore."""

    keys: TenantCollection
    keks: TenantCollection
    settings: TenantCollection
    destructions: TenantCollection
    import_keys: TenantCollection
    versions: TenantCollection
    offboardings: TenantCollection

    # --- tenant key policy --------------------------------------------------------------

    async def load_settings(self, tenant_id: str) -> dict[str, Any]:
        """The tenant's stored policy fields (empty until a custodian sets one)."""
        doc = await self.settings.find_one(tenant_id, {}, projection={"_id": 0, "tenant_id": 0, "_outbox": 0})
        return {f: doc[f] for f in _SETTINGS_FIELDS if f in doc} if doc else {}

    async def save_settings(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        await self.settings.update_one(tenant_id, {}, {"$set": doc, **outbox.push(event)}, upsert=True)

    # --- destructions ----------------------------------------------------------------------

    async def insert_destruction(self, tenant_id: str, doc: dict[str, Any], event: Event) -> bool:
        """One destruction document per key: a cancelled one may be replaced, an open one may not (False)."""
        try:
            await self.destructions.insert(tenant_id, outbox.staged(doc, event))
            return True
        except DuplicateKeyError:
            matched = await self.destructions.update_one(
                tenant_id, {"key_id": doc["key_id"], "status": "cancelled"}, {"$set": doc, **outbox.push(event)})
            return bool(matched)

    async def find_destruction(self, tenant_id: str, key_id: str) -> dict[str, Any] | None:
        return await self.destructions.find_one(tenant_id, {"key_id": key_id})

    async def find_destroyed(self, tenant_id: str, key_id: str) -> dict[str, Any] | None:
        """The destruction of a key that has run (it carries the certificate)."""
        return await self.destructions.find_one(tenant_id, {"key_id": key_id, "status": "destroyed"})

    async def add_destruction_approval(self, tenant_id: str, key_id: str, destruction_id: str,
                                       before: list[str], after: list[str], event: Event) -> bool:
        """Compare-and-swap on the approvals seen: False when another custodian approved meanwhile."""
        return bool(await self.destructions.update_one(
            tenant_id, {"key_id": key_id, "destruction_id": destruction_id, "status": "scheduled", "approvals": before},
            {"$set": {"approvals": after}, **outbox.push(event)}))

    async def cancel_destruction(self, tenant_id: str, key_id: str, destruction_id: str, by: str, event: Event) -> bool:
        """False when it already ran or changed."""
        return bool(await self.destructions.update_one(
            tenant_id, {"key_id": key_id, "destruction_id": destruction_id, "status": "scheduled"},
            {"$set": {"status": "cancelled", "cancelled_by": by}, **outbox.push(event)}))

    async def destructions_to_run(self, now: datetime, *, limit: int) -> list[dict[str, Any]]:
        """Scheduled ones past their waiting period and any cut short while destroying (all tenants)."""
        return await self.destructions.raw.find(
            {"$or": [{"status": "scheduled", "not_before": {"$lte": now}}, {"status": "destroying"}]}, limit=limit
        ).to_list(None)

    async def claim_destruction(self, tenant_id: str, key_id: str, destruction_id: str, *,
                                certificate: dict[str, Any], signature: str, destroyed_at: datetime) -> bool:
        """scheduled -> destroying with its signed certificate; False when cancelled or claimed meanwhile."""
        return bool(await self.destructions.update_one(
            tenant_id, {"key_id": key_id, "destruction_id": destruction_id, "status": "scheduled"},
            {"$set": {"status": "destroying", "certificate": certificate, "signature": signature,
                      "destroyed_at": destroyed_at}}))

    async def record_destruction(self, tenant_id: str, key_id: str, destruction_id: str, event: Event) -> bool:
        """destroying -> destroyed, with key.destroyed staged in the same write."""
        return bool(await self.destructions.update_one(
            tenant_id, {"key_id": key_id, "destruction_id": destruction_id, "status": "destroying"},
            {"$set": {"status": "destroyed"}, **outbox.push(event)}))

    # --- offboarding ------------------------------------------------------------------------

    async def shred_keks(self, tenant_id: str) -> list[int]:
        """Overwrite every KEK of the tenant, then delete it; returns the versions shredded."""
        keks = await self.keks.find(tenant_id, {}, projection={"_id": 1, "kek_version": 1, "wrapped": 1})
        for doc in keks:
            noise = secrets.token_bytes(len(bytes(doc["wrapped"])))
            await self.keks.update_one(tenant_id, {"_id": doc["_id"]},
                                       {"$set": {"wrapped": noise}, "$unset": {"wrapped_next": ""}})
            await self.keks.delete_one(tenant_id, {"_id": doc["_id"]})
        return [d["kek_version"] for d in keks]

    async def mark_all_keys_destroyed(self, tenant_id: str, now: datetime) -> int:
        """Every key of the tenant not destroyed yet becomes destroyed; returns how many changed."""
        result = await self.keys.raw.update_many(
            {"tenant_id": tenant_id, "state": {"$nin": sorted(str(s) for s in DESTROYED_STATES)}},
            {"$set": {"state": "destroyed", "destroyed_at": now, "updated_at": now, "next_rotation_at": None}},
        )
        return result.modified_count

    async def tenant_material(self, tenant_id: str) -> tuple[dict[int, bytes], int, int]:
        """What offboarding is about to shred: the wrapped KEKs by version, the keys not destroyed yet,
        and the wrapped data-key blobs."""
        keks = await self.keks.find(tenant_id, {}, projection={"kek_version": 1, "wrapped": 1})
        live = await self.keys.count(tenant_id, {"state": {"$nin": sorted(str(s) for s in DESTROYED_STATES)}})
        blobs = await self.versions.count(tenant_id, {"wrapped": {"$ne": None}})
        return {d["kek_version"]: bytes(d["wrapped"]) for d in keks}, live, blobs

    async def find_offboarding(self, tenant_id: str) -> dict[str, Any] | None:
        return await self.offboardings.find_one(tenant_id, {}, projection={"_id": 0, "_outbox": 0})

    async def claim_offboarding(self, tenant_id: str, doc: dict[str, Any]) -> bool:
        """The tenant's one offboarding, with its certificate signed before anything is shredded;
        False when it was claimed already (a redelivery, or another instance)."""
        try:
            await self.offboardings.insert(tenant_id, doc)
            return True
        except DuplicateKeyError:
            return False

    async def record_offboarding(self, tenant_id: str, offboarding_id: str, shredded_at: datetime,
                                 event: Event) -> bool:
        """shredding -> shredded, with tenant.destroyed staged in the same write."""
        return bool(await self.offboardings.update_one(
            tenant_id, {"offboarding_id": offboarding_id, "status": "shredding"},
            {"$set": {"status": "shredded", "shredded_at": shredded_at}, **outbox.push(event)}))

    # --- import keys (bring your own key) ---------------------------------------------------

    async def insert_import_key(self, tenant_id: str, doc: dict[str, Any]) -> None:
        await self.import_keys.insert(tenant_id, doc)

    async def find_import_key(self, tenant_id: str, token: str) -> dict[str, Any] | None:
        return await self.import_keys.find_one(tenant_id, {"import_token": token})

    async def consume_import_key(self, tenant_id: str, token: str) -> bool:
        """Single use: False when another request consumed it first."""
        return bool(await self.import_keys.delete_one(tenant_id, {"import_token": token}))

    async def drop_import_keys(self, tenant_id: str) -> None:
        await self.import_keys.raw.delete_many({"tenant_id": tenant_id})
