"""One set of store behaviours run against keysvc's MongoDB store and its in-memory twin, so the
handler unit tests over the twin say something about the real store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.keysvc import kek_rotation as rotation
from services.keysvc import keys as domain
from services.keysvc.clock import now
from services.keysvc.key_docs import version_doc
from services.keysvc.store import SYSTEM_TENANT, KeyStore
from services.keysvc.store_memory import MemoryKeyStore
from shared.events import SYSTEM, CustodyCustodianKeyEnrolled, KeyCreated, KeyRotated, TenantDestroyed
from shared.store import DuplicateKeyError, service_database

T = "ten_contract"


@pytest.fixture(params=["mongo", "memory"])
async def store(request, mongo_client, db_prefix):
    if request.param == "memory":
        return MemoryKeyStore()
    s = KeyStore(service_database(mongo_client, "keysvc", prefix=db_prefix))
    await s.create_indexes()
    return s


def _key(key_id: str, name: str, **fields) -> domain.Key:
    return domain.new_key(tenant_id=T, key_id=key_id, name=name, algorithm="AES-256", wrapped=b"w" * 40,
                          kek_version=1, now=now().replace(microsecond=0), **fields)


def _created(key: domain.Key) -> KeyCreated:
    return KeyCreated(tenant_id=T, actor=SYSTEM, key_id=key.key_id, name=key.name, algorithm=key.algorithm)


async def test_keys_insert_once_and_save_by_compare_and_swap(store):
    key = _key("key_1", "one", rotation_period_seconds=3600)
    await store.insert_new_key(key, _created(key))
    with pytest.raises(DuplicateKeyError):
        await store.insert_new_key(_key("key_2", "one"), _created(key))
    loaded = await store.load_key(T, "key_1")
    assert loaded == key and await store.load_key(T, "key_x") is None
    later = loaded.updated_at + timedelta(seconds=1)
    rotated = domain.rotate(loaded, wrapped_new=b"v" * 40, kek_version=1, now=later)
    event = KeyRotated(tenant_id=T, actor=SYSTEM, key_id="key_1", key_version=2, reason="r")
    assert await store.save_key(loaded, rotated, event)
    stale = domain.rotate(loaded, wrapped_new=b"z" * 40, kek_version=1, now=later + timedelta(seconds=1))
    assert not await store.save_key(loaded, stale, event)  # lost the swap (its version 2 exists)
    view = await store.load_release_view(T, "key_1")
    assert view.latest_version == 2 and view.versions[2].wrapped == b"v" * 40
    assert [h["key_id"] for h in await store.list_heads(T)] == ["key_1"]
    assert await store.keys_due_for_rotation(later + timedelta(hours=2), limit=10) == [(T, "key_1")]
    assert await store.keys_due_for_rotation(later, limit=10) == []
    assert await store.shred_key_material(T, "key_1") == 2
    assert await store.wrapped_by_version(T, "key_1") == {1: None, 2: None}


async def _leave_version(store, key: domain.Key, version: int) -> None:
    """What a writer that died between its new version and its head leaves behind."""
    doc = version_doc(key, key.versions[version])
    if isinstance(store, MemoryKeyStore):
        store._add_version(T, doc)
    else:
        await store.versions.insert(T, doc)


async def test_a_version_left_by_a_writer_that_died_before_its_head_does_not_block_rotation(store):
    key = _key("key_1", "one")
    await store.insert_new_key(key, _created(key))
    later = key.updated_at + timedelta(seconds=1)
    event = KeyRotated(tenant_id=T, actor=SYSTEM, key_id="key_1", key_version=2, reason="r")
    await _leave_version(store, domain.rotate(key, wrapped_new=b"d" * 40, kek_version=1, now=later), 2)
    rotated = domain.rotate(key, wrapped_new=b"v" * 40, kek_version=1, now=later + timedelta(seconds=1))
    assert await store.save_key(key, rotated, event)  # 409 for ever before: its version 2 existed
    loaded = await store.load_key(T, "key_1")
    assert loaded.latest_version == 2 and loaded.versions[2].wrapped == b"v" * 40
    assert (await store.load_release_view(T, "key_1")).versions[2].wrapped == b"v" * 40
    assert await store.wrapped_by_version(T, "key_1") == {1: b"w" * 40, 2: b"v" * 40}
    third = domain.rotate(loaded, wrapped_new=b"x" * 40, kek_version=1, now=later + timedelta(seconds=2))
    assert await store.save_key(loaded, third, event)


async def test_a_writer_whose_version_was_taken_over_loses_its_swap(store):
    key = _key("key_1", "one")
    await store.insert_new_key(key, _created(key))
    later = key.updated_at + timedelta(seconds=1)
    event = KeyRotated(tenant_id=T, actor=SYSTEM, key_id="key_1", key_version=2, reason="r")
    slow = domain.rotate(key, wrapped_new=b"s" * 40, kek_version=1, now=later)
    await _leave_version(store, slow, 2)  # a slow writer, alive, between its version and its head
    fast = domain.rotate(key, wrapped_new=b"f" * 40, kek_version=1, now=later + timedelta(seconds=1))
    assert await store.save_key(key, fast, event)
    assert not await store.save_key(key, slow, event)  # its version is gone; the head names the fast one
    loaded = await store.load_key(T, "key_1")
    assert loaded.versions[2].wrapped == b"f" * 40
    assert (await store.load_release_view(T, "key_1")).versions[2].wrapped == b"f" * 40


async def test_destructions_follow_their_status_by_compare_and_swap(store):
    event = _created(_key("key_1", "one"))
    doc = {"key_id": "key_1", "destruction_id": "dst_1", "status": "scheduled", "approvals": [],
           "not_before": now() - timedelta(seconds=1)}
    assert await store.insert_destruction(T, doc, event)
    assert not await store.insert_destruction(T, {**doc, "destruction_id": "dst_2"}, event)  # one open per key
    assert not await store.add_destruction_approval(T, "key_1", "dst_1", ["x"], ["x", "bob"], event)
    assert await store.add_destruction_approval(T, "key_1", "dst_1", [], ["bob"], event)
    assert [d["key_id"] for d in await store.destructions_to_run(now(), limit=10) if d["tenant_id"] == T] == ["key_1"]
    assert await store.claim_destruction(T, "key_1", "dst_1", certificate={"c": 1}, signature="s", destroyed_at=now())
    assert not await store.cancel_destruction(T, "key_1", "dst_1", "alice", event)  # already destroying
    assert await store.record_destruction(T, "key_1", "dst_1", event)
    assert (await store.find_destroyed(T, "key_1"))["certificate"] == {"c": 1}


async def test_the_kek_walk_pages_by_cursor_and_swaps_only_the_blob_it_read(store):
    for i in range(3):
        key = _key(f"key_{i}", f"k{i}")
        await store.insert_new_key(key, _created(key))
    assert await store.insert_kek(T, 1, b"k1", now()) and not await store.insert_kek(T, 1, b"k1", now())
    assert await store.count_wrapped_below(T, 2) == 3
    first = await store.versions_after(T, None, limit=2)
    rest = await store.versions_after(T, first[-1]["_id"], limit=2)
    assert len(first) == 2 and len(rest) == 1
    rewraps = [rotation.Rewrap(doc_id=d["_id"], key_id=d["key_id"], version=d["version"], from_version=1,
                               old=d["wrapped"], new=b"n" * 40) for d in [*first, *rest]]
    stale = rotation.Rewrap(doc_id=first[0]["_id"], key_id="key_0", version=1, from_version=1, old=b"gone", new=b"x" * 40)
    await store.save_rewrapped(T, [*rewraps[:1], stale, *rewraps[1:]], 2)
    assert await store.count_wrapped_below(T, 2) == 0 and await store.count_wrapped_under(T, 2) == 3
    assert (await store.load_release_view(T, "key_0")).versions[1].wrapped == b"n" * 40


async def test_leases_and_unseal_rounds_are_taken_by_one_writer(store):
    t = now()
    assert await store.insert_lease("jobs", "a", t) and not await store.insert_lease("jobs", "b", t)
    lease = await store.find_lease("jobs")
    assert await store.claim_lease("jobs", lease["version"], "b", t)
    assert not await store.claim_lease("jobs", lease["version"], "c", t)  # the version moved on
    await store.open_unseal_round({"round_id": "r1", "fingerprint": "fp", "entries": [], "expires_at": t}, replacing=None)
    await store.open_unseal_round({"round_id": "r2", "fingerprint": "fp", "entries": [], "expires_at": t}, replacing=None)
    assert (await store.unseal_round())["round_id"] == "r1"  # the first one's stays
    assert await store.add_round_entry("r1", 0, {"by": "c1"}) and not await store.add_round_entry("r1", 0, {"by": "c2"})
    await store.end_unseal_round()
    assert await store.unseal_round() is None


async def test_a_custodian_key_is_replaced_by_its_owner_and_a_sealed_share_is_taken_once(store):
    t = now().replace(microsecond=0)

    def enrolled(custodian: str, key: str) -> CustodyCustodianKeyEnrolled:
        return CustodyCustodianKeyEnrolled(tenant_id=SYSTEM_TENANT, actor=SYSTEM, custodian_id=custodian, key_id=key)

    await store.enrol_custodian_key("usr_a", {"public_key": "pk1", "key_id": "k1", "enrolled_at": t}, enrolled("usr_a", "k1"))
    await store.enrol_custodian_key("usr_b", {"public_key": "pk2", "key_id": "k2", "enrolled_at": t + timedelta(seconds=1)},
                                    enrolled("usr_b", "k2"))
    await store.enrol_custodian_key("usr_a", {"public_key": "pk3", "key_id": "k3", "enrolled_at": t + timedelta(seconds=2)},
                                    enrolled("usr_a", "k3"))
    assert [(d["custodian_id"], d["public_key"]) for d in await store.custodian_keys()] == [("usr_b", "pk2"), ("usr_a", "pk3")]

    def delivery(custodian: str, fp: str, at) -> dict:
        return {"purpose": "init", "root_fingerprint": fp, "custodian_id": custodian, "number": 1, "sealed_share": "c",
                "created_at": at}

    await store.put_deliveries([delivery("usr_a", "fp1", t), delivery("usr_b", "fp1", t)])
    await store.put_deliveries([{**delivery("usr_a", "fp2", t + timedelta(seconds=1)), "purpose": "rekey"}])
    assert await store.take_delivery("usr_a", ("fp9",)) is None  # a root no longer in use
    assert (await store.take_delivery("usr_a", ("fp1", "fp2")))["root_fingerprint"] == "fp2"  # the newest first
    assert (await store.take_delivery("usr_a", ("fp1", "fp2")))["root_fingerprint"] == "fp1"
    assert await store.take_delivery("usr_a", ("fp1", "fp2")) is None  # each shown once
    assert (await store.take_delivery("usr_b", ("fp1",)))["custodian_id"] == "usr_b"


async def test_an_offboarding_is_claimed_once_and_recorded_once(store):
    key = _key("key_1", "one")
    await store.insert_new_key(key, _created(key))
    assert await store.insert_kek(T, 1, b"k" * 40, now())
    keks, live, blobs = await store.tenant_material(T)
    assert keks == {1: b"k" * 40} and (live, blobs) == (1, 1)
    doc = {"offboarding_id": "evt_1", "status": "shredding", "certificate": {"keys": 1}, "signature": "sig"}
    assert await store.claim_offboarding(T, doc)
    assert not await store.claim_offboarding(T, {**doc, "offboarding_id": "evt_2"})  # one per tenant
    assert (await store.find_offboarding(T))["offboarding_id"] == "evt_1" and await store.find_offboarding("ten_x") is None
    assert await store.shred_keks(T) == [1] and await store.shred_key_material(T) == 1
    assert await store.mark_all_keys_destroyed(T, now()) == 1
    assert await store.tenant_material(T) == ({}, 0, 0)
    done = TenantDestroyed(tenant_id=T, actor=SYSTEM, offboarding_id="evt_1", certificate_id="tdc_1", keys=1,
                           kek_versions=(1,), wrapped_blobs_shredded=1, certificate={}, signature="sig",
                           signing_key_id="k")
    assert await store.record_offboarding(T, "evt_1", now(), done)
    assert not await store.record_offboarding(T, "evt_1", now(), done)  # recorded once
    assert (await store.find_offboarding(T))["status"] == "shredded"


async def test_a_release_is_collectable_only_once_its_audit_record_is_queued(store):
    def release(request_id: str) -> dict:
        return {"request_id": request_id, "key_id": "key_1", "device_id": "dev_1", "released": True, "key_version": 1,
                "at": now(), "outcome": '{"type": "key.released"}', "pending_audit": True}

    assert await store.record_release(T, release("req_1"))
    assert not await store.record_release(T, release("req_1"))  # a redelivery
    assert await store.find_device_release(T, "req_1", "dev_1") is None
    assert (await store.find_release(T, "req_1"))["released"]  # the ledger still knows it, for redeliveries
    await store.mark_release_audited(T, "req_1")
    assert (await store.find_device_release(T, "req_1", "dev_1"))["outcome"] == '{"type": "key.released"}'
    assert await store.find_device_release(T, "req_1", "dev_other") is None
    assert await store.find_device_release("ten_other", "req_1", "dev_1") is None  # scoped to its tenant

    assert await store.record_release(T, release("req_2"))
    await store.refuse_release(T, "req_2", '{"type": "key.release_refused"}')
    refused = await store.find_device_release(T, "req_2", "dev_1")
    assert refused["outcome"] == '{"type": "key.release_refused"}' and not refused["released"]
    await store.refuse_release(T, "req_2", '{"type": "key.release_refused", "again": true}')  # refused once
    assert (await store.find_release(T, "req_2"))["outcome"] == '{"type": "key.release_refused"}'
    assert await store.record_release("ten_other", release("req_2"))  # another tenant's request of that id
    assert (await store.find_release("ten_other", "req_2"))["pending_audit"]


async def test_a_ledger_from_before_releases_were_keyed_by_id_still_answers_each_request_once(mongo_client, db_prefix):
    # The old layout: generated `_id`s, found through a unique (tenant_id, request_id) index that stays.
    db = service_database(mongo_client, "keysvc", prefix=db_prefix)
    await db["releases"].create_index([("tenant_id", 1), ("request_id", 1)], unique=True)

    def release(request_id: str) -> dict:
        return {"tenant_id": T, "request_id": request_id, "key_id": "key_1", "device_id": "dev_1", "released": True,
                "key_version": 1, "at": now(), "outcome": '{"type": "key.released"}', "pending_audit": True}

    await db["releases"].insert_many([release("req_old"), release("req_old_refused")])
    store = KeyStore(db)
    await store.create_indexes()
    assert not await store.record_release(T, release("req_old"))  # a redelivery of an older request
    assert await store.find_device_release(T, "req_old", "dev_1") is None
    await store.mark_release_audited(T, "req_old")
    assert (await store.find_device_release(T, "req_old", "dev_1"))["released"]
    await store.refuse_release(T, "req_old_refused", '{"type": "key.release_refused"}')
    assert not (await store.find_release(T, "req_old_refused"))["released"]
    assert await store.record_release(T, release("req_new"))
    assert not await store.record_release(T, release("req_new"))
    await store.mark_release_audited(T, "req_new")
    assert (await store.find_device_release(T, "req_new", "dev_1"))["released"]
