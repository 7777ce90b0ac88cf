"""Unit tests for the per-tenant audit hash chain and its signed checkpoints."""

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.auditsvc.chain import make_checkpoint
from services.auditsvc.records import record_from_event
from shared.audit_chain import (
    GENESIS_HASH,
    ChainHead,
    Reach,
    describe_missing,
    link,
    verify_audit,
    verify_chain,
    verify_checkpoint,
)
from shared.signatures import canonical_bytes, key_fingerprint

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_record(n, tenant="t-acme", **extra):
    return record_from_event({
        "event_id": f"evt-{tenant}-{n}",
        "type": "key.released",
        "version": 1,
        "tenant_id": tenant,
        "occurred_at": f"2024-05-01T12:00:{n:02d}Z",
        "correlation_id": f"corr-{n}",
        "causation_id": None,
        "actor": {"kind": "device", "id": "dev-1", "auth": "signature"},
        "source_ip": None,
        "key_id": f"k-{n}",
        "reasons": [f"reason {n}"],
        **extra,
    })


def build_chain(count=5, tenant="t-acme"):
    head = ChainHead.genesis(tenant)
    chain = []
    for n in range(1, count + 1):
        linked, head = head.append(make_record(n, tenant))
        chain.append(linked)
    return chain, head


def relink(records):
    """What an attacker with write access to the store can do: recompute every hash."""
    head = ChainHead.genesis(records[0]["tenant_id"])
    out = []
    for rec in records:
        linked, head = head.append(rec)
        out.append(linked)
    return out, head


@pytest.fixture
def signing_key():
    return Ed25519PrivateKey.generate()


# ------------------------------------------------------------------ construction

def test_canonical_bytes_sorted_compact_utf8():
    assert canonical_bytes({"b": 1, "a": {"y": [1, 2], "x": "é"}}) == '{"a":{"x":"é","y":[1,2]},"b":1}'.encode()


def test_canonical_bytes_rejects_nan():
    with pytest.raises(ValueError):
        canonical_bytes({"x": float("nan")})


def test_link_genesis_and_hash_definition():
    rec = make_record(1)
    linked = link(rec, seq=1, prev_hash=GENESIS_HASH)
    assert GENESIS_HASH == "0" * 64
    assert linked["seq"] == 1 and linked["prev_hash"] == GENESIS_HASH
    body = {k: v for k, v in linked.items() if k != "hash"}
    expected = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=False).encode()).hexdigest()
    assert linked["hash"] == expected
    assert "seq" not in rec  # input untouched


def test_link_rejects_bad_arguments():
    with pytest.raises(ValueError):
        link(make_record(1), seq=0, prev_hash=GENESIS_HASH)
    with pytest.raises(ValueError):
        link(make_record(1), seq=1, prev_hash="abc")


def test_relinking_a_linked_record_replaces_chain_fields():
    first = link(make_record(1), seq=1, prev_hash=GENESIS_HASH)
    assert link(first, seq=1, prev_hash=GENESIS_HASH) == first


def test_chain_links_each_record_to_its_predecessor():
    chain, head = build_chain(3)
    assert [r["seq"] for r in chain] == [1, 2, 3]
    assert chain[0]["prev_hash"] == GENESIS_HASH
    assert chain[1]["prev_hash"] == chain[0]["hash"]
    assert chain[2]["prev_hash"] == chain[1]["hash"]
    assert head == ChainHead("t-acme", 3, chain[2]["hash"])


def test_chains_are_per_tenant():
    a, _ = build_chain(2, "t-a")
    b, _ = build_chain(2, "t-b")
    assert a[0]["seq"] == b[0]["seq"] == 1
    assert a[0]["hash"] != b[0]["hash"]
    with pytest.raises(ValueError):
        ChainHead.genesis("t-a").append(make_record(1, "t-b"))


# ------------------------------------------------------------------ verification

def test_intact_chain_verifies():
    chain, head = build_chain(5)
    result = verify_chain(chain)
    assert result.ok and result.checked == 5 and result.first_bad_seq is None
    assert result.head == head


def test_empty_chain_verifies():
    assert verify_chain([]).ok


def test_tail_verifies_from_a_trusted_start():
    chain, _ = build_chain(5)
    start = ChainHead("t-acme", 2, chain[1]["hash"])
    assert verify_chain(chain[2:], start=start).ok
    wrong = ChainHead("t-acme", 2, "f" * 64)
    result = verify_chain(chain[2:], start=wrong)
    assert not result.ok and result.first_bad_seq == 3


@pytest.mark.parametrize("mutate", [
    lambda r: r.update(outcome="denied"),
    lambda r: r.update(time="2030-01-01T00:00:00Z"),
    lambda r: r["actor"].update(id="someone-else"),
    lambda r: r["resource"].update(id="k-other"),
    lambda r: r["reasons"].append("added later"),
    lambda r: r["details"].update(note="injected"),
    lambda r: r.pop("source_ip"),
    lambda r: r.update(hash="0" * 64),
])
def test_edited_record_is_detected(mutate):
    chain, _ = build_chain(5)
    mutate(chain[2])
    result = verify_chain(chain)
    assert not result.ok
    assert result.first_bad_seq == 3
    assert result.first_bad_event_id == "evt-t-acme-3"
    assert result.checked == 2
    assert "altered" in result.problem


def test_deleted_record_is_detected():
    chain, _ = build_chain(5)
    del chain[2]
    result = verify_chain(chain)
    assert not result.ok
    assert result.first_bad_seq == 4 and result.first_bad_event_id == "evt-t-acme-4"
    assert "missing" in result.problem


def test_deleted_first_record_is_detected():
    chain, _ = build_chain(3)
    result = verify_chain(chain[1:])
    assert not result.ok and result.first_bad_seq == 2


def test_swapped_records_are_detected():
    chain, _ = build_chain(5)
    chain[1], chain[2] = chain[2], chain[1]
    result = verify_chain(chain)
    assert not result.ok
    assert result.first_bad_seq == 3 and result.first_bad_event_id == "evt-t-acme-3"
    assert result.checked == 1


def test_swapped_and_renumbered_records_are_detected():
    chain, _ = build_chain(5)
    chain[1], chain[2] = chain[2], chain[1]
    chain[1]["seq"], chain[2]["seq"] = 2, 3
    result = verify_chain(chain)
    assert not result.ok and result.first_bad_seq == 2 and "altered" in result.problem


def test_inserted_forged_record_with_valid_link_is_named():
    chain, _ = build_chain(5)
    forged = link(make_record(99), seq=3, prev_hash=chain[1]["hash"])
    chain.insert(2, forged)
    result = verify_chain(chain)
    assert not result.ok
    assert result.first_bad_seq == 3 and result.first_bad_event_id == "evt-t-acme-99"
    assert "inserted" in result.problem
    assert result.checked == 2


def test_inserted_forged_record_at_the_front_is_named():
    chain, _ = build_chain(3)
    chain.insert(0, link(make_record(99), seq=1, prev_hash=GENESIS_HASH))
    result = verify_chain(chain)
    assert not result.ok and result.first_bad_event_id == "evt-t-acme-99" and result.checked == 0


def test_inserted_record_with_bad_hash_is_detected():
    chain, _ = build_chain(5)
    forged = copy.deepcopy(chain[1])
    forged["event_id"] = "evt-forged"
    chain.insert(2, forged)
    result = verify_chain(chain)
    assert not result.ok and result.first_bad_event_id == "evt-forged"


def test_record_from_another_tenant_is_detected():
    chain, _ = build_chain(3)
    other, _ = build_chain(3, "t-other")
    chain.insert(1, other[1])
    result = verify_chain(chain)
    assert not result.ok and result.first_bad_event_id == "evt-t-other-2"
    assert "tenant" in result.problem


def test_replayed_record_is_detected():
    chain, _ = build_chain(3)
    chain.append(copy.deepcopy(chain[1]))
    result = verify_chain(chain)
    assert not result.ok and result.first_bad_seq == 2 and result.checked == 3


def test_record_without_chain_fields_is_rejected():
    chain, _ = build_chain(2)
    chain.append(make_record(3))
    result = verify_chain(chain)
    assert not result.ok and result.first_bad_event_id == "evt-t-acme-3"


# ------------------------------------------------------------------ checkpoints

def test_checkpoint_shape_and_signature(signing_key):
    _, head = build_chain(3)
    cp = make_checkpoint(head, signing_key=signing_key, at=AT)
    raw = signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert cp["key_id"] == hashlib.sha256(raw).hexdigest()[:16] == key_fingerprint(signing_key.public_key())
    assert (cp["tenant_id"], cp["seq"], cp["hash"]) == ("t-acme", 3, head.hash)
    assert cp["time"] == "2024-05-01T12:00:00.000000Z"
    assert len(base64.b64decode(cp["signature"], validate=True)) == 64
    assert verify_checkpoint(cp, signing_key.public_key())


def test_checkpoint_time_is_normalised_to_utc(signing_key):
    _, head = build_chain(1)
    at = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert make_checkpoint(head, signing_key=signing_key, at=at)["time"] == "2024-05-01T12:00:00.000000Z"
    with pytest.raises(ValueError):
        make_checkpoint(head, signing_key=signing_key, at=datetime(2024, 5, 1))


def test_checkpoint_fails_under_the_wrong_key(signing_key):
    _, head = build_chain(3)
    cp = make_checkpoint(head, signing_key=signing_key, at=AT)
    assert not verify_checkpoint(cp, Ed25519PrivateKey.generate().public_key())
    forged_id = dict(cp, key_id=key_fingerprint(Ed25519PrivateKey.generate().public_key()))
    assert not verify_checkpoint(forged_id, signing_key.public_key())


@pytest.mark.parametrize(("field", "value"), [
    ("seq", 4), ("hash", "a" * 64), ("tenant_id", "t-other"),
    ("time", "2099-01-01T00:00:00.000000Z"), ("signature", "not base64!"),
    ("signature", base64.b64encode(b"\0" * 64).decode()),
])
def test_altered_checkpoint_fails(signing_key, field, value):
    _, head = build_chain(3)
    cp = make_checkpoint(head, signing_key=signing_key, at=AT)
    cp[field] = value
    assert not verify_checkpoint(cp, signing_key.public_key())


def test_checkpoint_missing_a_field_fails(signing_key):
    _, head = build_chain(1)
    cp = make_checkpoint(head, signing_key=signing_key, at=AT)
    del cp["time"]
    assert not verify_checkpoint(cp, signing_key.public_key())


def test_chain_recomputed_after_edit_is_caught_by_checkpoint(signing_key):
    chain, _ = build_chain(5)
    cp = make_checkpoint(ChainHead("t-acme", 4, chain[3]["hash"]), signing_key=signing_key, at=AT)
    tampered = copy.deepcopy(chain)
    tampered[1]["outcome"] = "denied"
    rewritten, _ = relink(tampered)
    # Hashes alone cannot see this: the rewriter recomputed them.
    assert verify_chain(rewritten).ok
    result = verify_chain(rewritten, checkpoints=[cp], trusted_keys=[signing_key.public_key()])
    assert not result.ok
    assert result.first_bad_seq == 4 and result.first_bad_event_id == "evt-t-acme-4"
    assert "checkpoint" in result.problem
    assert verify_chain(chain, checkpoints=[cp], trusted_keys=[signing_key.public_key()]).ok


def test_truncated_tail_is_caught_by_checkpoint(signing_key):
    chain, head = build_chain(5)
    cp = make_checkpoint(head, signing_key=signing_key, at=AT)
    assert verify_chain(chain[:3]).ok  # undetectable by hashes alone
    result = verify_chain(chain[:3], checkpoints=[cp], trusted_keys=[signing_key.public_key()])
    assert not result.ok and "truncated" in result.problem and result.first_bad_seq == 4


def test_checkpoint_with_bad_signature_fails_verification(signing_key):
    chain, head = build_chain(3)
    cp = make_checkpoint(head, signing_key=signing_key, at=AT)
    cp["hash"] = chain[1]["hash"]
    result = verify_chain(chain, checkpoints=[cp], trusted_keys=[signing_key.public_key()])
    assert not result.ok and "signature" in result.problem and result.first_bad_seq == 3


def test_checkpoint_from_untrusted_key_fails_verification(signing_key):
    chain, head = build_chain(3)
    cp = make_checkpoint(head, signing_key=Ed25519PrivateKey.generate(), at=AT)
    result = verify_chain(chain, checkpoints=[cp], trusted_keys=[signing_key.public_key()])
    assert not result.ok and "untrusted" in result.problem


def test_checkpoint_for_another_tenant_fails_verification(signing_key):
    chain, _ = build_chain(3)
    _, other_head = build_chain(3, "t-other")
    cp = make_checkpoint(other_head, signing_key=signing_key, at=AT)
    result = verify_chain(chain, checkpoints=[cp], trusted_keys=[signing_key.public_key()])
    assert not result.ok and "tenant" in result.problem


def test_rotated_checkpoint_keys_are_all_trusted():
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    chain, head = build_chain(4)
    cps = [make_checkpoint(ChainHead("t-acme", 2, chain[1]["hash"]), signing_key=old, at=AT),
           make_checkpoint(head, signing_key=new, at=AT)]
    assert verify_chain(chain, checkpoints=cps, trusted_keys=[old.public_key(), new.public_key()]).ok


# ------------------------------------------------------------------ the tail


def _signed(head, signing_key):
    return make_checkpoint(head, signing_key=signing_key, at=AT)


def test_verify_chain_names_a_gap_in_the_middle():
    chain, _ = build_chain(6)
    result = verify_chain(chain[:2] + chain[4:])
    assert not result.ok and result.missing == ((3, 4),)


def test_tail_deleted_below_a_checkpoint_names_every_missing_seq(signing_key):
    chain, _ = build_chain(8)
    cp = _signed(ChainHead("t-acme", 6, chain[5]["hash"]), signing_key)
    result = verify_audit(chain[:4], start=ChainHead.genesis("t-acme"), checkpoints=[cp],
                          trusted_keys=[signing_key.public_key()], reach=Reach(reported_seq=8))
    assert not result.ok and "truncated" in result.problem
    assert result.missing == ((5, 8),) and result.first_bad_seq == 5
    assert describe_missing(result.missing) == "missing seq 5-8"


def test_tail_deleted_above_the_newest_checkpoint_is_caught_by_the_reported_head(signing_key):
    chain, _ = build_chain(8)
    cp = _signed(ChainHead("t-acme", 5, chain[4]["hash"]), signing_key)
    keys = [signing_key.public_key()]
    # Hashes and checkpoints alone cannot see it: the cut is in the unsigned tail.
    assert verify_chain(chain[:7], checkpoints=[cp], trusted_keys=keys).ok
    result = verify_audit(chain[:7], checkpoints=[cp], trusted_keys=keys, reach=Reach(reported_seq=8))
    assert not result.ok and "auditsvc reports head seq 8" in result.problem
    assert result.missing == ((8, 8),) and result.first_bad_seq == 8
    assert describe_missing(result.missing) == "missing seq 8"
    assert result.unsigned == 2  # seq 6 and 7 are after the checkpoint


def test_forwarder_cursors_show_a_cut_tail_even_when_the_head_was_rewritten_too():
    chain, _ = build_chain(8)
    result = verify_audit(chain[:6], reach=Reach(reported_seq=6, cursors={"fwd_a": 8, "fwd_b": 3}))
    assert not result.ok and "forwarder fwd_a has sent through seq 8" in result.problem
    assert "fwd_b" not in result.problem and result.missing == ((7, 8),)


def test_a_complete_chain_reports_its_unsigned_tail(signing_key):
    chain, head = build_chain(8)
    cp = _signed(ChainHead("t-acme", 5, chain[4]["hash"]), signing_key)
    keys = [signing_key.public_key()]
    result = verify_audit(chain, checkpoints=[cp], trusted_keys=keys, reach=Reach(reported_seq=8, cursors={"f": 8}))
    assert result.ok and result.head == head and result.unsigned == 3 and result.missing == ()
    assert verify_audit(chain).unsigned == 8  # never signed at all


def test_trusted_checkpoint_ahead_of_the_chain_fails(signing_key):
    chain, head = build_chain(8)
    trusted = _signed(head, signing_key)
    # The store's own checkpoints and head were rewritten along with the cut: only the kept one shows it.
    result = verify_audit(chain[:5], trusted_keys=[signing_key.public_key()],
                          reach=Reach(reported_seq=5, trusted_checkpoint=trusted))
    assert not result.ok and "trusted checkpoint covers seq 8" in result.problem
    assert result.missing == ((6, 8),)
    ok = verify_audit(chain, trusted_keys=[signing_key.public_key()], reach=Reach(trusted_checkpoint=trusted))
    assert ok.ok


def test_trusted_checkpoint_with_a_different_hash_fails(signing_key):
    chain, _ = build_chain(6)
    forged, _ = relink([{**r, "outcome": "failure"} if r["seq"] == 2 else r for r in chain])
    trusted = _signed(ChainHead("t-acme", 4, chain[3]["hash"]), signing_key)
    result = verify_audit(forged, trusted_keys=[signing_key.public_key()], reach=Reach(trusted_checkpoint=trusted))
    assert not result.ok and "record at seq 4 differs from the trusted checkpoint" in result.problem
    assert result.first_bad_seq == 4 and result.missing == ()


@pytest.mark.parametrize("tamper", ["signature", "key", "tenant"])
def test_trusted_checkpoint_must_be_signed_by_a_trusted_key_for_this_tenant(signing_key, tamper):
    chain, head = build_chain(4)
    trusted = _signed(head, signing_key)
    keys = [signing_key.public_key()]
    if tamper == "signature":
        trusted = {**trusted, "hash": chain[0]["hash"]}
    elif tamper == "key":
        keys = [Ed25519PrivateKey.generate().public_key()]
    else:
        trusted = _signed(ChainHead("t-other", head.seq, head.hash), signing_key)
    result = verify_audit(chain, trusted_keys=keys, reach=Reach(trusted_checkpoint=trusted))
    assert not result.ok and "trusted checkpoint" in result.problem


def test_trusted_checkpoint_before_the_online_chain_points_at_the_archive(signing_key):
    chain, _ = build_chain(6)
    trusted = _signed(ChainHead("t-acme", 2, chain[1]["hash"]), signing_key)
    start = ChainHead("t-acme", 3, chain[2]["hash"])
    result = verify_audit(chain[3:], start=start, trusted_keys=[signing_key.public_key()],
                          reach=Reach(trusted_checkpoint=trusted))
    assert not result.ok and "verify the archive" in result.problem
    at_start = _signed(start, signing_key)
    assert verify_audit(chain[3:], start=start, trusted_keys=[signing_key.public_key()],
                        reach=Reach(trusted_checkpoint=at_start)).ok
