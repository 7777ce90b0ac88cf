"""Root re-key: a new root key and new shares while serving, safe to cut short at any point.

The root record's `rekey` field carries the state, with the incoming root wrapped under the
outgoing one (`sealed_root`, never in the clear):

  copying    the new shares have been handed out; the scheduler gives every KEK a copy under
             the incoming root (`wrapped_next`, `next_fp`); KEKs created meanwhile are written
             under both roots (hierarchy.create_kek). The current shares stay in force.
  switched   the custodians proved they hold the new shares (a threshold of them submitted to
             verify, each kept meanwhile only wrapped under the outgoing root); the record names
             the incoming root, with custody.rekeyed staged in the same write. The copies are
             promoted to be each KEK's only wrapping.
  (finished) after a grace period, with no KEK left under the outgoing root, the sealed copy
             of the incoming root is shredded and the outgoing root retired everywhere.

Nothing irreversible happens before the custodians have shown the new shares, so a re-key cut
short before the switch is resumed (or cancelled, or rolled back when it expires), and one cut
short after it is finished by the scheduler; until then the old shares still unseal (they open
the sealed incoming root). Every KEK write is a compare-and-swap on the blob it replaces.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared import events
from shared.crypto import shares as transit
from shared.crypto.envelope import aad_for, unwrap, wrap
from shared.outbox import Outbox

from .clock import aware as _aware
from .clock import now as _now
from .hierarchy import KeyHierarchy
from .rootkey import ShareError, Unsealer, share_set_id
from .store import SYSTEM_TENANT, KeyStore

log = structlog.get_logger("strongroom.keysvc")
SERVICE = events.Actor(kind="service", id="keysvc")


class RekeyConflict(Exception):
    """No re-key is pending, another one is, or it moved on meanwhile."""


def unseal_fingerprints(doc: dict[str, Any]) -> tuple[str, ...]:
    """Roots that may unseal: the recorded one, and the outgoing one while a switched re-key is unfinished
    (it opens the sealed incoming root, so no KEK is out of reach)."""
    rekey = doc.get("rekey") or {}
    if rekey.get("status") == "switched" and rekey.get("sealed_root") is not None:
        return (doc["fingerprint"], rekey["previous_fingerprint"])
    return (doc["fingerprint"],)


# --- begin, copy ---------------------------------------------------------------------------


async def begin(store: KeyStore, hierarchy: KeyHierarchy, new_root: bytes, *, threshold: int, shares: int,
                share_set: int, request_id: str, actor: str, now: datetime, ttl: timedelta) -> str:
    """Record the pending re-key (incoming root sealed under the outgoing one) and hold the incoming root."""
    old_fp = hierarchy.root_fingerprint
    assert old_fp is not None
    if await store.root_record() is None:  # a configured root source that was never initialised with shares
        await store.ensure_root_record(old_fp, now)
    new_fp = hierarchy.hold_incoming(new_root)
    # SECURITY: a fresh transport key for this re-key's verification round, kept only wrapped under the
    # outgoing root and shredded with the re-key state (clear_rekey).
    transport = transit.new_transport_key()
    rekey = {"previous_fingerprint": old_fp, "new_fingerprint": new_fp, "status": "copying", "threshold": threshold,
             "shares": shares, "share_set": share_set, "sealed_root": hierarchy.seal_incoming(old_fp, new_fp),
             "transport_public": transport.public_key().public_bytes(serialization.Encoding.Raw,
                                                                     serialization.PublicFormat.Raw),
             "transport_private": wrap(hierarchy.root_key(old_fp), transit.private_bytes(transport),
                                       aad=_transport_aad(new_fp)),
             "verify_shares": [], "verified_by": [], "started_at": now, "expires_at": now + ttl, "started_by": actor}
    del transport
    if not await store.begin_rekey(old_fp, rekey, request_id):
        hierarchy.follow_root_record(await store.root_record())
        raise RekeyConflict("a root re-key is already pending (verify or cancel it first)")
    return new_fp


async def copy_batch(store: KeyStore, hierarchy: KeyHierarchy, new_fp: str, *, batch: int) -> int:
    """Give up to `batch` KEKs without one a copy under the incoming root; 0 when none is left."""
    docs = await store.keks_without_copy(new_fp, limit=batch)
    for doc in docs:
        blob = hierarchy.wrap_kek(doc["tenant_id"], doc["kek_version"], hierarchy.open_kek_doc(doc), root_fp=new_fp)
        await store.add_kek_copy(doc, blob, new_fp)
    return len(docs)


async def copy_all(store: KeyStore, hierarchy: KeyHierarchy, new_fp: str, *, batch: int) -> int:
    copied = 0
    while done := await copy_batch(store, hierarchy, new_fp, batch=batch):
        copied += done
    return copied


# --- verify and switch ----------------------------------------------------------------------


def _share_aad(new_fp: str) -> bytes:
    return aad_for("rekey-verify-share", new_fp)


def _transport_aad(new_fp: str) -> bytes:
    return aad_for("rekey-verify-transport", new_fp)


def transport_private(hierarchy: KeyHierarchy, rekey: dict[str, Any]) -> X25519PrivateKey:
    """The pending re-key's verification transport key (opened under the outgoing root)."""
    old_fp = rekey["previous_fingerprint"]
    if not hierarchy.holds(old_fp):
        raise RekeyConflict("this instance does not hold the current root; retry")
    raw = unwrap(hierarchy.root_key(old_fp), bytes(rekey["transport_private"]), aad=_transport_aad(rekey["new_fingerprint"]))
    return X25519PrivateKey.from_private_bytes(raw)


async def verify_share(store: KeyStore, hierarchy: KeyHierarchy, outbox: Outbox, share: str, *, by: str, batch: int,
                       event_fields: dict[str, Any]) -> dict[str, Any]:
    """One custodian proves a new share. Shares wait in the record wrapped under the outgoing root
    (any unsealed instance may take the next one); the threshold-th, from as many distinct
    custodians, switches to the new root: whoever started the re-key counts once, like anyone."""
    doc = await store.root_record()
    rekey = (doc or {}).get("rekey")
    if rekey is None or rekey["status"] != "copying":
        raise RekeyConflict("no root re-key is waiting for verification")
    hierarchy.follow_root_record(doc)
    old_fp, new_fp = rekey["previous_fingerprint"], rekey["new_fingerprint"]
    if not hierarchy.holds(old_fp):
        raise RekeyConflict("this instance does not hold the current root; retry")
    if by in rekey.get("verified_by", []):
        raise RekeyConflict("you already verified a share of this re-key: another custodian must verify the next")
    if share_set_id(share) != rekey["share_set"]:
        raise ShareError("this share is not one of the new shares of the pending re-key")
    old_root = hierarchy.root_key(old_fp)
    unsealer = Unsealer(expected_fingerprint=new_fp)
    for blob in rekey["verify_shares"]:
        unsealer.submit(unwrap(old_root, bytes(blob), aad=_share_aad(new_fp)).decode())
    held = unsealer.progress.submitted
    root = unsealer.submit(share)  # ShareError: damaged, foreign, or the combination is not the new root
    if root is None:
        if unsealer.progress.submitted == held:
            return {"verified": False, "submitted": held, "needed": unsealer.progress.needed}
        if not await store.add_rekey_share(new_fp, held, wrap(old_root, share.encode(), aad=_share_aad(new_fp)), by):
            raise RekeyConflict("another share was submitted at the same moment; submit again")
        return {"verified": False, "submitted": held + 1, "needed": unsealer.progress.needed}
    hierarchy.add_root(root)
    del root
    copied = await copy_all(store, hierarchy, new_fp, batch=batch)  # any the scheduler has not reached yet
    event = events.CustodyRekeyed(**event_fields, root_fingerprint=new_fp, previous_fingerprint=old_fp,
                                  custodian_count=rekey["shares"], threshold=rekey["threshold"], keks_rewrapped=copied)
    await switch(store, hierarchy, doc or {}, event)
    await outbox.publish(store.outbox_of("custody"), SYSTEM_TENANT, event)
    # The copies are promoted by the scheduler (resume): every KEK already opens under the new root.
    log.info("custody_rekeyed", root_fingerprint=new_fp, previous_fingerprint=old_fp)
    return {"verified": True, "root_fingerprint": new_fp, "previous_fingerprint": old_fp,
            "submitted": rekey["threshold"], "needed": rekey["threshold"]}


async def switch(store: KeyStore, hierarchy: KeyHierarchy, doc: dict[str, Any], event: events.CustodyRekeyed) -> None:
    """The commit point: the root record names the incoming root (event staged in the same write)."""
    if not await store.switch_root(doc, _now(), event):
        raise RekeyConflict("the re-key was cancelled or switched meanwhile")
    hierarchy.make_primary(doc["rekey"]["new_fingerprint"])


async def promote_batch(store: KeyStore, hierarchy: KeyHierarchy, new_fp: str, *, batch: int) -> int:
    """Make each KEK's copy under the new root its only wrapping (re-wrapping any without a copy)."""
    docs = await store.keks_not_under(new_fp, limit=batch)
    for doc in docs:
        if doc.get("next_fp") == new_fp and doc.get("wrapped_next") is not None:
            blob = doc["wrapped_next"]
        else:
            blob = hierarchy.wrap_kek(doc["tenant_id"], doc["kek_version"], hierarchy.open_kek_doc(doc), root_fp=new_fp)
        await store.promote_kek(doc, blob, new_fp)
    return len(docs)


async def promote_all(store: KeyStore, hierarchy: KeyHierarchy, new_fp: str, *, batch: int) -> int:
    promoted = 0
    while done := await promote_batch(store, hierarchy, new_fp, batch=batch):
        promoted += done
    return promoted


# --- the scheduler's part: resume, finish, expire; cancel ------------------------------------


async def resume(store: KeyStore, hierarchy: KeyHierarchy, outbox: Outbox, *, grace: timedelta, batch: int) -> int:
    """Scheduler job: copy (before the switch), promote and finish (after it), roll back an expired one."""
    doc = await store.root_record()
    rekey = (doc or {}).get("rekey")
    if rekey is None:
        return 0
    hierarchy.follow_root_record(doc)
    now = _now()
    new_fp = rekey["new_fingerprint"]
    if rekey["status"] == "copying":
        if now >= _aware(rekey["expires_at"]):
            await roll_back(store, hierarchy, outbox, rekey, reason="the new shares were not verified in time")
            return 1
        return await copy_batch(store, hierarchy, new_fp, batch=batch) if hierarchy.holds(new_fp) else 0
    if rekey["status"] == "rolling_back":
        await roll_back(store, hierarchy, outbox, rekey, reason=rekey.get("rollback_reason", "cancelled"))
        return 1
    if not hierarchy.holds(new_fp):
        return 0
    done = await promote_batch(store, hierarchy, new_fp, batch=batch)
    if done or now - _aware(rekey["switched_at"]) < grace:
        return done
    await _finish(store, hierarchy, rekey)
    return 0


async def roll_back(store: KeyStore, hierarchy: KeyHierarchy, outbox: Outbox, rekey: dict[str, Any], *, reason: str,
                    actor: events.Actor = SERVICE) -> None:
    """Abandon a re-key before its switch: drop the copies and the sealed incoming root; the current shares stay."""
    new_fp = rekey["new_fingerprint"]
    # Mark it first, so no verification can switch to it any more; then drop the copies and the record.
    if not await store.mark_rekey_rolling_back(new_fp, reason):
        raise RekeyConflict("the re-key was switched or ended meanwhile")
    await store.drop_kek_copies(new_fp)
    event = events.CustodyRekeyRolledBack(tenant_id=SYSTEM_TENANT, actor=actor, root_fingerprint=rekey["previous_fingerprint"],
                                          abandoned_fingerprint=new_fp, reason=reason)
    if await store.clear_rekey(new_fp, "rolling_back", event):
        await outbox.publish(store.outbox_of("custody"), SYSTEM_TENANT, event)
        log.warning("custody_rekey_rolled_back", root_fingerprint=rekey["previous_fingerprint"], reason=reason)
    await hierarchy.refresh_roots()


async def _finish(store: KeyStore, hierarchy: KeyHierarchy, rekey: dict[str, Any]) -> None:
    new_fp = rekey["new_fingerprint"]
    if await store.any_kek_not_under(new_fp):
        return  # written under the outgoing root meanwhile: the next tick promotes it first
    if await store.clear_rekey(new_fp, "switched", None):
        log.info("custody_rekey_finished", root_fingerprint=new_fp, retired=rekey["previous_fingerprint"])
    await hierarchy.refresh_roots()


__all__ = [
    "RekeyConflict",
    "begin",
    "copy_all",
    "promote_all",
    "resume",
    "roll_back",
    "transport_private",
    "unseal_fingerprints",
    "verify_share",
]
