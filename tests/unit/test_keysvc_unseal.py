"""Unseal rounds over the in-memory store: several instances, shares counted once, root handed on."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.keysvc import unseal_rounds as rounds
from services.keysvc.clock import now
from services.keysvc.hierarchy import KeyHierarchy
from services.keysvc.rootkey import ShareError, fingerprint, split_root_key
from services.keysvc.store_memory import MemoryKeyStore
from services.keysvc.unseal import Peer, RoundChanged, ShareReplayed, Unsealing
from shared.events import SYSTEM, CustodyInitialized


def test_a_round_counts_only_while_open_and_for_the_recorded_root():
    t = now()
    root_doc = {"fingerprint": "fp1"}
    fresh = rounds.new_round("unr_1", "fp1", now=t)
    assert rounds.is_open(fresh, root_doc, now=t) and rounds.submitted(fresh, now=t) == 0
    assert not rounds.is_open(fresh, {"fingerprint": "fp2"}, now=t)
    later = t + rounds.ROUND_TTL + timedelta(seconds=1)
    fresh["entries"].append({"sealed_digest": "d1"})
    assert not rounds.is_open(fresh, root_doc, now=later) and rounds.submitted(fresh, now=later) == 0
    assert rounds.submitted(fresh, now=t) == 1 and rounds.replayed(fresh, "d1") and not rounds.replayed(fresh, "d2")
    assert not rounds.is_open(None, root_doc, now=t)


async def test_instances_unseal_together_a_replay_counts_once_and_a_late_one_gets_the_root_handed_on():
    store = MemoryKeyStore()
    signing_key = Ed25519PrivateKey.generate()
    root = secrets.token_bytes(32)
    fp = fingerprint(root)
    shares = split_root_key(root, threshold=2, shares=3)
    await store.insert_root_record({"fingerprint": fp, "threshold": 2, "shares": 3, "generation": 1},
                                   CustodyInitialized(tenant_id="_custody", actor=SYSTEM, root_fingerprint=fp,
                                                      custodian_count=3, threshold=2))
    root_doc = await store.root_record()

    def instance() -> tuple[KeyHierarchy, Unsealing]:
        hierarchy = KeyHierarchy(store, root_key=None)
        return hierarchy, Unsealing(store, hierarchy, Peer(signing_key), ttl=timedelta(minutes=5))

    (ha, a), (hb, b) = instance(), instance()
    await a.register()
    await b.register()
    round_id = (await a.open_round(root_doc))["round_id"]
    assert (await b.open_round(root_doc))["round_id"] == round_id  # one round for all instances

    out = await a.submit(shares[0], root_doc, (fp,), by="c1", round_id=round_id, sealed_digest="d1")
    assert out == {"sealed": True, "submitted": 1, "needed": 2}
    with pytest.raises(ShareReplayed):
        await b.submit(shares[0], root_doc, (fp,), by="c1", round_id=round_id, sealed_digest="d1")
    with pytest.raises(RoundChanged):
        await b.submit(shares[1], root_doc, (fp,), by="c2", round_id="unr_other", sealed_digest="d2")
    with pytest.raises(ShareError):
        await b.submit(split_root_key(secrets.token_bytes(32), threshold=2, shares=3)[0], root_doc, (fp,), by="x",
                       round_id=round_id, sealed_digest="d9")
    assert (await a.progress(2))["submitted"] == 1  # nothing stored for the refused ones

    out = await b.submit(shares[1], root_doc, (fp,), by="c2", round_id=round_id, sealed_digest="d2")
    assert out["sealed"] is False and not hb.sealed and hb.root_fingerprint == fp
    assert ha.sealed
    await a.catch_up(root_doc, (fp,))  # opens its copies of both shares
    assert not ha.sealed

    hc, c = instance()  # started after the round: holds no copy, gets the root handed on
    await c.register()
    await c.catch_up(root_doc, (fp,))
    assert hc.sealed
    await a.catch_up(root_doc, (fp,))
    assert store.peers[c.peer.peer_id].get("handoff") is not None
    await c.catch_up(root_doc, (fp,))
    assert not hc.sealed and "handoff" not in store.peers[c.peer.peer_id]
    await b.register()  # the next tick renews b's registration as unsealed
    await a.catch_up(root_doc, (fp,))  # nobody sealed any more: the round's sealed shares go
    assert await store.unseal_round() is None
