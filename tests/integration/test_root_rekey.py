"""Root re-key against the real store and broker, cut short at each stage: while KEKs are being
copied, between verified shares, and in the middle of promotion, with KEKs created meanwhile by
another instance (aware of the re-key or not). Each cut is a cancelled task followed by a fresh
keysvc instance built from the store alone; in the end every KEK opens under the new root only,
and a rolled-back re-key leaves every KEK under the old root only."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from services.keysvc import rekey
from services.keysvc.hierarchy import KeyHierarchy, kek_aad
from services.keysvc.rootkey import fingerprint, share_set_id, split_root_key
from services.keysvc.store import KeyStore
from shared.crypto.envelope import wrap
from shared.outbox import Outbox
from shared.store import service_database

TENANTS = [f"ten_{i:03d}" for i in range(40)]
FIELDS = {"tenant_id": "_custody"}


async def _instance(client, db_prefix: str, root: bytes) -> tuple[KeyStore, KeyHierarchy]:
    """A keysvc instance as it comes up: the store, and a hierarchy that follows the root record."""
    store = KeyStore(service_database(client, "keysvc", prefix=db_prefix))
    await store.create_indexes()
    hierarchy = KeyHierarchy(store, root_key=root)
    hierarchy.follow_root_record(await store.root_record())
    return store, hierarchy


async def _keks(store: KeyStore, hierarchy: KeyHierarchy) -> dict[tuple[str, int], bytes]:
    docs = await store.keks.raw.find({}).to_list(None)
    return {(d["tenant_id"], d["kek_version"]): hierarchy.open_kek_doc(d) for d in docs}


async def _until(check, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)
    return result


async def _crash_after(batches: int, step) -> None:
    """Run `batches` batches of `step`, then crash in the middle of the next: it is cancelled
    (as far as the store can tell, the process died) once it has started talking to the store."""
    for _ in range(batches):
        assert await step()
    in_flight = asyncio.create_task(step())
    await asyncio.sleep(0)
    in_flight.cancel()
    await asyncio.gather(in_flight, return_exceptions=True)


def _outbox(bus, store: KeyStore) -> Outbox:
    return Outbox(bus.publish, store.outbox_collections)


async def test_rekey_cut_short_at_every_stage_loses_no_kek(mongo_client, db_prefix, rabbit_bus):
    old_root = secrets.token_bytes(32)
    store, a = await _instance(mongo_client, db_prefix, old_root)
    await asyncio.gather(*(a.current_kek(t) for t in TENANTS))
    originals = await _keks(store, a)
    new_root = secrets.token_bytes(32)
    shares = split_root_key(new_root, threshold=2, shares=3)
    new_fp = await rekey.begin(store, a, new_root, threshold=2, shares=3, share_set=share_set_id(shares[0]),
                               request_id="req-1", actor="custodian-1", now=datetime.now(UTC), ttl=timedelta(hours=1))

    # 1. Copying cut short.
    await _crash_after(3, lambda: rekey.copy_batch(store, a, new_fp, batch=5))
    copied = await store.keks.raw.count_documents({"next_fp": new_fp})
    assert 15 <= copied < len(TENANTS)
    # Another instance creates a KEK meanwhile: it is written under both roots.
    _, b = await _instance(mongo_client, db_prefix, old_root)
    await b.current_kek("ten_late")
    late = await store.keks.find_one("ten_late", {"kek_version": 1})
    assert late["next_fp"] == new_fp and late["root_fp"] == fingerprint(old_root)

    # 2. A fresh instance resumes the copying; one verified share, then a crash.
    store, c = await _instance(mongo_client, db_prefix, old_root)
    while await rekey.resume(store, c, _outbox(rabbit_bus, store), grace=timedelta(0), batch=5):
        pass
    assert await store.keks.raw.count_documents({"next_fp": {"$ne": new_fp}}) == 0
    out = await rekey.verify_share(store, c, _outbox(rabbit_bus, store), shares[2], by="custodian-3", batch=5,
                                   event_fields=FIELDS)
    assert out == {"verified": False, "submitted": 1, "needed": 2}
    # The same custodian (even holding another share) does not count twice.
    with pytest.raises(rekey.RekeyConflict, match="already verified"):
        await rekey.verify_share(store, c, _outbox(rabbit_bus, store), shares[0], by="custodian-3", batch=5,
                                 event_fields=FIELDS)
    record = await store.root_record()
    assert shares[2] not in repr(record) and shares[2].split()[0] not in repr(record["rekey"]["verify_shares"])
    assert record["fingerprint"] == fingerprint(old_root)  # nothing switched yet

    # 3. Another fresh instance takes the second share: the switch; then promotion cut short.
    store, d = await _instance(mongo_client, db_prefix, old_root)
    out = await rekey.verify_share(store, d, _outbox(rabbit_bus, store), shares[0], by="custodian-1", batch=1,
                                   event_fields=FIELDS)
    assert out["verified"] and out["root_fingerprint"] == new_fp
    await _crash_after(3, lambda: rekey.promote_batch(store, d, new_fp, batch=1))
    assert await store.keks.raw.count_documents({"root_fp": new_fp}) >= 3
    record = await store.root_record()
    assert record["fingerprint"] == new_fp and record["rekey"]["status"] == "switched"
    assert await store.keks.raw.count_documents({"root_fp": {"$ne": new_fp}}) > 0  # promotion incomplete
    # An instance that has not noticed anything writes a KEK under the outgoing root only.
    ghost = secrets.token_bytes(32)
    await store.insert_kek("ten_ghost", 1, wrap(old_root, ghost, aad=kek_aad("ten_ghost", 1)), datetime.now(UTC),
                           fingerprint(old_root))

    # 4. Restart unsealed with the OLD root (the old shares still open custody until the re-key
    #    finishes): it picks up the new root, promotes the rest and finishes.
    assert fingerprint(old_root) in rekey.unseal_fingerprints(record)
    store, e = await _instance(mongo_client, db_prefix, old_root)
    assert e.root_fingerprint == new_fp
    await _until(lambda: _resumed(store, e, rabbit_bus))
    record = await store.root_record()
    assert record["rekey"] is None and rekey.unseal_fingerprints(record) == (new_fp,)
    assert await store.keks.raw.count_documents({"$or": [{"root_fp": {"$ne": new_fp}}, {"next_fp": {"$exists": True}}]}) == 0

    # 5. The new root alone opens every KEK, each unchanged; the old root alone opens none.
    store, f = await _instance(mongo_client, db_prefix, new_root)
    after = await _keks(store, f)
    assert {k: after[k] for k in originals} == originals
    assert after[("ten_ghost", 1)] == ghost and ("ten_late", 1) in after
    _, old_only = await _instance(mongo_client, db_prefix, old_root)
    with pytest.raises(LookupError):
        old_only.open_kek_doc(await store.keks.find_one(TENANTS[0], {"kek_version": 1}))


async def _resumed(store: KeyStore, hierarchy: KeyHierarchy, bus) -> bool:
    await rekey.resume(store, hierarchy, _outbox(bus, store), grace=timedelta(0), batch=5)
    return (await store.root_record())["rekey"] is None


async def test_rekey_cut_short_and_never_verified_rolls_back_to_the_old_root(mongo_client, db_prefix, rabbit_bus):
    old_root = secrets.token_bytes(32)
    store, a = await _instance(mongo_client, db_prefix, old_root)
    await asyncio.gather(*(a.current_kek(t) for t in TENANTS[:10]))
    originals = await _keks(store, a)
    new_root = secrets.token_bytes(32)
    shares = split_root_key(new_root, threshold=2, shares=2)
    new_fp = await rekey.begin(store, a, new_root, threshold=2, shares=2, share_set=share_set_id(shares[0]),
                               request_id="req-1", actor="custodian-1", now=datetime.now(UTC), ttl=timedelta(0))
    with pytest.raises(rekey.RekeyConflict):  # one re-key at a time (and a redelivered request starts none)
        await rekey.begin(store, a, secrets.token_bytes(32), threshold=2, shares=2, share_set=1, request_id="req-2",
                          actor="custodian-1", now=datetime.now(UTC), ttl=timedelta(0))
    await _crash_after(1, lambda: rekey.copy_batch(store, a, new_fp, batch=3))

    # Restarted; the re-key expired unverified, so the scheduler rolls it back.
    store, b = await _instance(mongo_client, db_prefix, old_root)
    assert await rekey.resume(store, b, _outbox(rabbit_bus, store), grace=timedelta(0), batch=5) == 1
    record = await store.root_record()
    assert record["rekey"] is None and record["fingerprint"] == fingerprint(old_root)
    assert await store.keks.raw.count_documents({"next_fp": {"$exists": True}}) == 0
    with pytest.raises(rekey.RekeyConflict):
        await rekey.verify_share(store, b, _outbox(rabbit_bus, store), shares[0], by="custodian-1", batch=5,
                                 event_fields=FIELDS)
    assert await _keks(store, b) == originals
    _, new_only = await _instance(mongo_client, db_prefix, new_root)
    with pytest.raises(LookupError):
        new_only.open_kek_doc(await store.keks.find_one(TENANTS[0], {"kek_version": 1}))
    # The same request redelivered does not start it again.
    with pytest.raises(rekey.RekeyConflict):
        await rekey.begin(store, b, secrets.token_bytes(32), threshold=2, shares=2, share_set=1, request_id="req-1",
                          actor="custodian-1", now=datetime.now(UTC), ttl=timedelta(hours=1))
