"""keysvc's service-wide queries: the root record and its re-key, the unseal round, peers and leases.

These documents carry SYSTEM_TENANT as their tenant id; the KEK walks of a re-key span all tenants.
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import datetime
from typing import Any

from pymongo import ASCENDING

from shared import outbox
from shared.events import Event
from shared.store import DuplicateKeyError, TenantCollection

SYSTEM_TENANT = "_custody"
ROOT = {"name": "root"}
ROUND = {"name": "unseal"}


class RootQueries:
    """Root of trust, unseal round, peers and scheduler leases; mixed into KeyStore."""

    keks: TenantCollection
    custody: TenantCollection
    peers: TenantCollection
    leases: TenantCollection

    # --- the root record -------------------------------------------------------------------

    async def root_record(self) -> dict[str, Any] | None:
        return await self.custody.find_one(SYSTEM_TENANT, ROOT)

    async def insert_root_record(self, doc: dict[str, Any], event: Event) -> bool:
        """False when custody already has one."""
        try:
            await self.custody.insert(SYSTEM_TENANT, outbox.staged({**ROOT, **doc}, event))
            return True
        except DuplicateKeyError:
            return False

    async def any_kek(self) -> bool:
        """Whether any tenant has a KEK (a root key is in use even without a root record)."""
        return await self.keks.raw.find_one({}) is not None

    async def ensure_root_record(self, fingerprint: str, now: datetime) -> None:
        """A root record for a configured root source that was never initialised with shares."""
        await self.custody.update_one(SYSTEM_TENANT, ROOT, {"$setOnInsert": {
            "fingerprint": fingerprint, "generation": 0, "created_at": now}}, upsert=True)

    async def begin_rekey(self, old_fp: str, rekey: dict[str, Any], request_id: str) -> bool:
        """False when a re-key is pending already, or this request started one before."""
        # rekey_request_id stays after the re-key: a redelivered request must not start a second one.
        return bool(await self.custody.update_one(
            SYSTEM_TENANT, {**ROOT, "fingerprint": old_fp, "rekey": None, "rekey_request_id": {"$ne": request_id}},
            {"$set": {"rekey": rekey, "rekey_request_id": request_id}}))

    async def add_rekey_share(self, new_fp: str, held: int, sealed_share: bytes, by: str) -> bool:
        """Keep one more verified share (wrapped) and who gave it; False when another came in at the
        same moment, or this custodian already gave one."""
        return bool(await self.custody.update_one(
            SYSTEM_TENANT, {**ROOT, "rekey.new_fingerprint": new_fp, "rekey.status": "copying",
                            "rekey.verify_shares": {"$size": held}, "rekey.verified_by": {"$ne": by}},
            {"$push": {"rekey.verify_shares": sealed_share, "rekey.verified_by": by}}))

    async def switch_root(self, doc: dict[str, Any], now: datetime, event: Event) -> bool:
        """The commit point of a re-key: the record names the incoming root (event staged in the same write)."""
        rekey = doc["rekey"]
        return bool(await self.custody.update_one(
            SYSTEM_TENANT, {**ROOT, "fingerprint": rekey["previous_fingerprint"],
                            "rekey.new_fingerprint": rekey["new_fingerprint"], "rekey.status": "copying"},
            {"$set": {"fingerprint": rekey["new_fingerprint"], "previous_fingerprint": rekey["previous_fingerprint"],
                      "threshold": rekey["threshold"], "shares": rekey["shares"], "generation": doc.get("generation", 0) + 1,
                      "rekeyed_at": now, "rekey.status": "switched", "rekey.switched_at": now, "rekey.verify_shares": []},
             **outbox.push(event)}))

    async def mark_rekey_rolling_back(self, new_fp: str, reason: str) -> bool:
        """From here no verification can switch to it; False when switched or ended meanwhile."""
        return bool(await self.custody.update_one(
            SYSTEM_TENANT, {**ROOT, "rekey.new_fingerprint": new_fp, "rekey.status": {"$in": ["copying", "rolling_back"]}},
            {"$set": {"rekey.status": "rolling_back", "rekey.rollback_reason": reason}}))

    async def clear_rekey(self, new_fp: str, status: str, event: Event | None) -> bool:
        """Shred the sealed incoming root and any waiting shares (overwrite, then drop the re-key state)."""
        query = {**ROOT, "rekey.new_fingerprint": new_fp, "rekey.status": status}
        await self.custody.update_one(SYSTEM_TENANT, query, {"$set": {"rekey.sealed_root": secrets.token_bytes(64),
                                                                      "rekey.transport_private": secrets.token_bytes(64),
                                                                      "rekey.verify_shares": []}})
        # Shares nobody fetched of a root that will never be used (rolled back) or is retired (finished).
        stale = new_fp if status == "rolling_back" else {"$ne": new_fp}
        await self.custody.raw.delete_many({"tenant_id": SYSTEM_TENANT, "kind": "delivery", "root_fingerprint": stale})
        update: dict[str, Any] = {"$set": {"rekey": None}}
        if event is not None:
            update.update(outbox.push(event))
        return bool(await self.custody.update_one(SYSTEM_TENANT, query, update))

    # --- root custodians' keys and their sealed shares ----------------------------------------

    async def enrol_custodian_key(self, custodian_id: str, doc: dict[str, Any], event: Event) -> None:
        """Record (or replace) a custodian's public key, the event staged in the same write."""
        await self.custody.update_one(
            SYSTEM_TENANT, {"name": f"custodian:{custodian_id}"},
            {"$set": {**doc, "kind": "custodian_key", "custodian_id": custodian_id}, **outbox.push(event)}, upsert=True)

    async def custodian_keys(self) -> list[dict[str, Any]]:
        return await self.custody.find(SYSTEM_TENANT, {"kind": "custodian_key"}, sort=[("enrolled_at", ASCENDING)])

    async def put_deliveries(self, deliveries: list[dict[str, Any]]) -> None:
        """Each custodian's new share, sealed to their key, waiting for them to fetch it once."""
        docs = [{**d, "kind": "delivery",
                 "name": f"delivery:{d['purpose']}:{d['root_fingerprint']}:{d['custodian_id']}"} for d in deliveries]
        await self.custody.insert_many(SYSTEM_TENANT, docs)

    async def take_delivery(self, custodian_id: str, fingerprints: tuple[str, ...]) -> dict[str, Any] | None:
        """The custodian's newest waiting share for a root still in use, removed as it is taken."""
        return await self.custody.raw.find_one_and_delete(
            {"tenant_id": SYSTEM_TENANT, "kind": "delivery", "custodian_id": custodian_id,
             "root_fingerprint": {"$in": list(fingerprints)}}, sort=[("created_at", -1)])

    # --- KEKs under the roots (all tenants) ------------------------------------------------

    async def keks_without_copy(self, new_fp: str, *, limit: int) -> list[dict[str, Any]]:
        return await self.keks.raw.find({"root_fp": {"$ne": new_fp}, "next_fp": {"$ne": new_fp}},
                                        sort=[("_id", ASCENDING)], limit=limit).to_list(None)

    async def keks_not_under(self, new_fp: str, *, limit: int) -> list[dict[str, Any]]:
        return await self.keks.raw.find({"root_fp": {"$ne": new_fp}}, sort=[("_id", ASCENDING)], limit=limit).to_list(None)

    async def any_kek_not_under(self, new_fp: str) -> bool:
        return await self.keks.raw.find_one({"root_fp": {"$ne": new_fp}}, {"_id": 1}) is not None

    async def add_kek_copy(self, doc: dict[str, Any], blob: bytes, new_fp: str) -> None:
        """A copy under the incoming root, compare-and-swap on the blob it was made from."""
        await self.keks.update_one(doc["tenant_id"], {"_id": doc["_id"], "wrapped": doc["wrapped"]},
                                   {"$set": {"wrapped_next": blob, "next_fp": new_fp}})

    async def promote_kek(self, doc: dict[str, Any], blob: bytes, new_fp: str) -> None:
        """The wrapping under the new root becomes the KEK's only one (compare-and-swap on the old blob)."""
        await self.keks.update_one(doc["tenant_id"], {"_id": doc["_id"], "wrapped": doc["wrapped"]},
                                   {"$set": {"wrapped": blob, "root_fp": new_fp}, "$unset": {"wrapped_next": "", "next_fp": ""}})

    async def drop_kek_copies(self, new_fp: str) -> None:
        await self.keks.raw.update_many({"next_fp": new_fp}, {"$unset": {"wrapped_next": "", "next_fp": ""}})

    # --- the unseal round ------------------------------------------------------------------

    async def unseal_round(self) -> dict[str, Any] | None:
        return await self.custody.find_one(SYSTEM_TENANT, ROUND)

    async def open_unseal_round(self, fresh: dict[str, Any], *, replacing: str | None) -> None:
        """Start a round, replacing the given one; two instances opening one at once: the first one's stays."""
        if replacing is not None:
            await self.custody.update_one(SYSTEM_TENANT, {**ROUND, "round_id": replacing}, {"$set": fresh})
            return
        with contextlib.suppress(DuplicateKeyError):
            await self.custody.update_one(SYSTEM_TENANT, ROUND, {"$setOnInsert": fresh}, upsert=True)

    async def add_round_entry(self, round_id: str, position: int, entry: dict[str, Any]) -> bool:
        """Append a share at `position`; False when another share took that position first."""
        return bool(await self.custody.update_one(
            SYSTEM_TENANT, {**ROUND, "round_id": round_id, "entries": {"$size": position}}, {"$push": {"entries": entry}}))

    async def end_unseal_round(self) -> None:
        """Overwrite the round's sealed shares, then drop it."""
        doc = await self.custody.find_one(SYSTEM_TENANT, ROUND, projection={"round_id": 1, "entries": 1})
        if doc is None:
            return
        query = {**ROUND, "round_id": doc["round_id"]}
        # The digests stay: a stop between these two writes leaves the round open, and a replayed
        # sealed share must still be recognised in it.
        noise = [{"by": e.get("by"), "copies": {}, "sealed_digest": e.get("sealed_digest")} for e in doc.get("entries", [])]
        await self.custody.update_one(SYSTEM_TENANT, query, {"$set": {"entries": noise, "transport.copies": {}}})
        await self.custody.delete_one(SYSTEM_TENANT, query)

    # --- peers (running instances) -------------------------------------------------------------

    async def register_peer(self, peer_id: str, fields: dict[str, Any]) -> None:
        await self.peers.update_one(SYSTEM_TENANT, {"peer_id": peer_id}, {"$set": fields}, upsert=True)

    async def withdraw_peer(self, peer_id: str) -> None:
        await self.peers.delete_one(SYSTEM_TENANT, {"peer_id": peer_id})

    async def live_peers(self, now: datetime) -> list[dict[str, Any]]:
        return await self.peers.find(SYSTEM_TENANT, {"expires_at": {"$gt": now}})

    async def find_peer(self, peer_id: str) -> dict[str, Any] | None:
        return await self.peers.find_one(SYSTEM_TENANT, {"peer_id": peer_id})

    async def hand_root_to(self, peer_id: str, sealed: bytes, fingerprint: str, signature: bytes) -> None:
        """Leave the root, sealed to a peer, for it to take (only while it is still sealed)."""
        await self.peers.update_one(SYSTEM_TENANT, {"peer_id": peer_id, "sealed": True},
                                    {"$set": {"handoff": sealed, "handoff_fp": fingerprint, "handoff_signature": signature}})

    async def shred_handoff(self, peer_id: str) -> None:
        """Overwrite a taken hand-off, then remove it."""
        await self.peers.update_one(SYSTEM_TENANT, {"peer_id": peer_id},
                                    {"$set": {"handoff": secrets.token_bytes(16)},
                                     "$unset": {"handoff_fp": "", "handoff_signature": ""}})
        await self.peers.update_one(SYSTEM_TENANT, {"peer_id": peer_id}, {"$unset": {"handoff": ""}})

    # --- scheduler leases -------------------------------------------------------------------

    async def find_lease(self, name: str) -> dict[str, Any] | None:
        return await self.leases.find_one(SYSTEM_TENANT, {"name": name})

    async def insert_lease(self, name: str, holder: str, expires_at: datetime) -> bool:
        """False when another instance created it first."""
        try:
            await self.leases.insert(SYSTEM_TENANT, {"name": name, "holder": holder, "expires_at": expires_at, "version": 1})
            return True
        except DuplicateKeyError:
            return False

    async def claim_lease(self, name: str, version: int, holder: str, expires_at: datetime) -> bool:
        """Compare-and-swap on the lease's version: take or renew it; False when another holder won."""
        return bool(await self.leases.update_one(
            SYSTEM_TENANT, {"name": name, "version": version},
            {"$set": {"holder": holder, "expires_at": expires_at, "version": version + 1}}))

    async def expire_lease(self, name: str, version: int, now: datetime) -> None:
        """Give the lease up (a clean stop), so another instance need not wait for it to expire."""
        await self.leases.update_one(SYSTEM_TENANT, {"name": name, "version": version},
                                     {"$set": {"expires_at": now, "version": version + 1}})
