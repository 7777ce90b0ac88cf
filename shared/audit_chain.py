"""Per-tenant hash chain over audit records, the checks of its Ed25519-signed checkpoints, and of how far it must reach (pure)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.signatures import canonical_bytes, key_fingerprint

GENESIS_HASH = "0" * 64
CHAIN_FIELDS = ("seq", "prev_hash", "hash")
# Domain separation: a checkpoint signature can never be mistaken for any other message the
# same key might sign, nor for a future checkpoint layout.
_CHECKPOINT_CONTEXT = b"strongroom.audit.checkpoint.v1\n"
_CHECKPOINT_FIELDS = ("tenant_id", "seq", "hash", "time", "key_id")


def record_hash(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of a record's canonical bytes, its own "hash" field left out."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def link(record: Mapping[str, Any], *, seq: int, prev_hash: str) -> dict[str, Any]:
    """Return a copy of the record placed at `seq` after `prev_hash`, with its own hash."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError("seq is a 1-based positive integer")
    if not _is_hex64(prev_hash):
        raise ValueError("prev_hash must be 64 lowercase hex characters")
    linked = {k: v for k, v in record.items() if k not in CHAIN_FIELDS}
    linked["seq"] = seq
    linked["prev_hash"] = prev_hash
    linked["hash"] = hashlib.sha256(canonical_bytes(linked)).hexdigest()  # record_hash, without a copy
    return linked


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last link of one tenant's chain: what the next record must follow."""

    tenant_id: str
    seq: int
    hash: str

    @classmethod
    def genesis(cls, tenant_id: str) -> ChainHead:
        return cls(tenant_id=tenant_id, seq=0, hash=GENESIS_HASH)

    def append(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], ChainHead]:
        """Link `record` after this head; returns the linked record and the new head."""
        if record.get("tenant_id") != self.tenant_id:
            raise ValueError("record belongs to another tenant's chain")
        linked = link(record, seq=self.seq + 1, prev_hash=self.hash)
        return linked, ChainHead(self.tenant_id, linked["seq"], linked["hash"])


# An inclusive range of sequence numbers, (first, last).
SeqRange = tuple[int, int]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of a chain check; on failure names the first record (or checkpoint) at fault.

    `head` is the chain's last link when it holds, and the last link before the cut when the
    records merely end too early. `missing` names the sequence numbers known to be absent;
    `unsigned` counts the records after the newest signed checkpoint (from `verify_audit`)."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    first_bad_event_id: str | None = None
    problem: str = ""
    head: ChainHead | None = None
    missing: tuple[SeqRange, ...] = ()
    unsigned: int | None = None


def checkpoint_message(cp: Mapping[str, Any]) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return _CHECKPOINT_CONTEXT + canonical_bytes({k: cp[k] for k in _CHECKPOINT_FIELDS})


def verify_checkpoint(cp: Mapping[str, Any], public_key: Ed25519PublicKey) -> bool:
    """True only if the checkpoint is well-formed, names this key, and its signature holds."""
    try:
        if not all(k in cp for k in (*_CHECKPOINT_FIELDS, "signature")):
            return False
        if not isinstance(cp["key_id"], str) or not hmac.compare_digest(
            cp["key_id"], key_fingerprint(public_key)
        ):
            return False
        signature = base64.b64decode(cp["signature"], validate=True)
        public_key.verify(signature, checkpoint_message(cp))
        return True
    except (InvalidSignature, binascii.Error, TypeError, ValueError):
        return False


def _fail(checked: int, seq: Any, event_id: Any, problem: str, *, missing: tuple[SeqRange, ...] = (),
          head: ChainHead | None = None) -> VerifyResult:
    return VerifyResult(
        ok=False,
        checked=checked,
        first_bad_seq=seq if isinstance(seq, int) else None,
        first_bad_event_id=None if event_id is None else str(event_id),
        problem=problem,
        head=head,
        missing=missing,
    )


def _pinned_heads(checkpoints: Iterable[Mapping[str, Any]], trusted_keys: Iterable[Ed25519PublicKey],
                  tenant: str | None) -> dict[int, str] | VerifyResult:
    """The head hash each checkpoint pins, by seq; or the failure of the first unverifiable one.

    Checkpoint signatures are checked up front: an unverifiable checkpoint proves nothing.
    """
    keys = {key_fingerprint(k): k for k in trusted_keys}
    pinned: dict[int, str] = {}
    for cp in checkpoints:
        cp_seq = cp.get("seq")
        key = keys.get(str(cp.get("key_id")))
        if key is None:
            return _fail(0, cp_seq, None, f"checkpoint at seq {cp_seq} is signed by an untrusted key")
        if not verify_checkpoint(cp, key):
            return _fail(0, cp_seq, None, f"checkpoint at seq {cp_seq} has an invalid signature")
        if tenant is not None and cp["tenant_id"] != tenant:
            return _fail(0, cp_seq, None, f"checkpoint at seq {cp_seq} is for another tenant")
        if isinstance(cp_seq, int) and _is_hex64(cp["hash"]):
            if pinned.get(cp_seq, cp["hash"]) != cp["hash"]:
                return _fail(0, cp_seq, None, f"two signed checkpoints disagree at seq {cp_seq}")
            pinned[cp_seq] = cp["hash"]
        else:
            return _fail(0, cp_seq, None, "checkpoint is malformed")
    return pinned


def verify_chain(
    records: Iterable[Mapping[str, Any]],
    *,
    start: ChainHead | None = None,
    checkpoints: Iterable[Mapping[str, Any]] = (),
    trusted_keys: Iterable[Ed25519PublicKey] = (),
) -> VerifyResult:
    """Walk records in order and report the first one that is edited, missing, misplaced or forged.

    Hashes alone show the chain is self-consistent; someone able to rewrite the store can
    recompute every hash after an edit. Signed checkpoints pin heads the rewriter cannot
    re-sign, so a record whose hash disagrees with one exposes such a rewrite. `start` lets a
    caller verify a tail from a head it already trusts; without it the tenant is taken from the
    first record, so pass `ChainHead.genesis(tenant)` to pin it.
    """
    records = list(records)
    tenant = start.tenant_id if start else (records[0].get("tenant_id") if records else None)
    pinned = _pinned_heads(checkpoints, trusted_keys, tenant)
    if isinstance(pinned, VerifyResult):
        return pinned

    head = start or (ChainHead.genesis(tenant) if tenant is not None else None)
    if head is not None and head.seq in pinned and not hmac.compare_digest(pinned[head.seq], head.hash):
        return _fail(0, head.seq, None, "start head disagrees with a signed checkpoint")

    checked = 0
    before_prev: str | None = None  # hash of the record before the last good one
    last: Mapping[str, Any] | None = None
    for rec in records:
        seq, event_id = rec.get("seq"), rec.get("event_id")
        if isinstance(seq, bool) or not isinstance(seq, int) or not _is_hex64(rec.get("hash")) \
                or not _is_hex64(rec.get("prev_hash")):
            return _fail(checked, seq, event_id, "record lacks a valid seq/prev_hash/hash")
        if rec.get("tenant_id") != head.tenant_id:
            return _fail(checked, seq, event_id,
                         f"record belongs to tenant {rec.get('tenant_id')!r}, not {head.tenant_id!r}")
        if not hmac.compare_digest(record_hash(rec), rec["hash"]):
            return _fail(checked, seq, event_id, f"record at seq {seq} was altered: hash mismatch")
        if seq != head.seq + 1 or not hmac.compare_digest(rec["prev_hash"], head.hash):
            # A validly-hashed interloper only shows when its successor links past it.
            if (last is not None and seq == head.seq and before_prev is not None
                    and hmac.compare_digest(rec["prev_hash"], before_prev)):
                return _fail(checked - 1, last.get("seq"), last.get("event_id"),
                             f"record at seq {head.seq} was inserted: its successor links past it")
            if seq > head.seq + 1:
                return _fail(checked, seq, event_id,
                             f"seq {seq} follows {head.seq}: records missing or out of order",
                             missing=((head.seq + 1, seq - 1),))
            if seq <= head.seq:
                return _fail(checked, seq, event_id,
                             f"seq {seq} follows {head.seq}: record replayed or out of order")
            return _fail(checked, seq, event_id, f"record at seq {seq} does not link to its predecessor")
        if seq in pinned and not hmac.compare_digest(pinned[seq], rec["hash"]):
            return _fail(checked, seq, event_id,
                         f"record at seq {seq} disagrees with a signed checkpoint: "
                         "the chain up to here was rewritten")
        before_prev, last = head.hash, rec
        head = ChainHead(head.tenant_id, seq, rec["hash"])
        checked += 1

    beyond = [s for s in pinned if head is None or s > head.seq]
    if beyond:
        end = head.seq if head else 0
        return _fail(checked, end + 1, None,
                     f"chain ends at seq {end} but a signed checkpoint covers seq {max(beyond)}: "
                     "records were truncated", missing=((end + 1, max(beyond)),), head=head)
    return VerifyResult(ok=True, checked=checked, head=head)


# --- the tail: how far the chain must reach --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reach:
    """Evidence from outside the records of how far a tenant's chain reaches.

    Hashes and the store's own checkpoints cannot show that the newest records were deleted: the
    unsigned tail after the newest checkpoint leaves no trace in what remains. What auditsvc reports
    as its head, what forwarders have already sent to a SIEM, and a checkpoint kept elsewhere do.
    Gather them before the records, so every claim is one the records read afterwards must meet."""

    reported_seq: int | None = None  # the head seq auditsvc reports (GET /v1/audit/status)
    cursors: Mapping[str, int] = field(default_factory=dict)  # forwarder id -> last seq it sent
    trusted_checkpoint: Mapping[str, Any] | None = None  # a signed checkpoint kept elsewhere


def describe_missing(missing: Iterable[SeqRange]) -> str:
    """"missing seq 7, seq 9-12": the sequence numbers a check found absent."""
    return "missing " + ", ".join(f"seq {a}" if a == b else f"seq {a}-{b}" for a, b in missing)


def _merged(ranges: Iterable[SeqRange]) -> tuple[SeqRange, ...]:
    out: list[SeqRange] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return tuple(out)


def _claims_beyond(head: ChainHead, reach: Reach) -> tuple[str, SeqRange] | None:
    """The reported head and forwarder cursors the walked chain falls short of."""
    claims = [] if reach.reported_seq is None else [(reach.reported_seq, f"auditsvc reports head seq {reach.reported_seq}")]
    claims += [(seq, f"forwarder {fid} has sent through seq {seq}") for fid, seq in sorted(reach.cursors.items())]
    beyond = [(seq, why) for seq, why in claims if seq > head.seq]
    if not beyond:
        return None
    far = max(seq for seq, _ in beyond)
    return (f"chain ends at seq {head.seq} but {'; '.join(why for _, why in beyond)}: "
            "records were deleted from the tail", (head.seq + 1, far))


def _trusted_checkpoint_problem(cp: Mapping[str, Any], keys: Iterable[Ed25519PublicKey], head: ChainHead,
                                hashes: Mapping[int, str]) -> tuple[str, SeqRange | None] | None:
    """Why the chain fails a checkpoint kept elsewhere: unsigned, another tenant's, not reached, differing."""
    key = {key_fingerprint(k): k for k in keys}.get(str(cp.get("key_id")))
    # SECURITY: a checkpoint file is only evidence once its signature holds under a trusted key.
    if key is None or not verify_checkpoint(cp, key):
        return "the trusted checkpoint is not validly signed by a trusted key", None
    seq = cp["seq"]
    if cp["tenant_id"] != head.tenant_id or isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return "the trusted checkpoint is malformed or for another tenant", None
    if seq > head.seq:
        return (f"chain ends at seq {head.seq} but the trusted checkpoint covers seq {seq}: "
                "records were deleted from the tail"), (head.seq + 1, seq)
    if seq not in hashes:
        return (f"the trusted checkpoint at seq {seq} precedes the records checked here: "
                "verify the archive that holds it"), None
    if not hmac.compare_digest(hashes[seq], str(cp["hash"])):
        return f"record at seq {seq} differs from the trusted checkpoint: the chain up to there was rewritten", None
    return None


def verify_audit(
    records: Iterable[Mapping[str, Any]],
    *,
    start: ChainHead | None = None,
    checkpoints: Iterable[Mapping[str, Any]] = (),
    trusted_keys: Iterable[Ed25519PublicKey] = (),
    reach: Reach | None = None,
) -> VerifyResult:
    """`verify_chain`, then whether the chain reaches as far as everything else says it does.

    Names every sequence number known to be missing and counts the unsigned tail: the records after
    the newest signed checkpoint, the ones only outside evidence (`reach`) can show deleted."""
    records, checkpoints, trusted_keys = list(records), list(checkpoints), list(trusted_keys)
    reach = reach or Reach()
    result = verify_chain(records, start=start, checkpoints=checkpoints, trusted_keys=trusted_keys)
    head = result.head
    if head is None:  # broken before the end of the records, or nothing at all to compare with
        return result
    problems, missing = ([] if result.ok else [result.problem]), list(result.missing)
    found = [_claims_beyond(head, reach)]
    if reach.trusted_checkpoint is not None:
        hashes = {r["seq"]: r["hash"] for r in records} | {head.seq: head.hash}
        if start is not None:
            hashes[start.seq] = start.hash
        found.append(_trusted_checkpoint_problem(reach.trusted_checkpoint, trusted_keys, head, hashes))
    for problem, span in filter(None, found):
        problems.append(problem)
        missing += [span] if span else []
    signed = [cp["seq"] for cp in checkpoints] + [start.seq if start else 0]
    unsigned = max(0, head.seq - max(signed))
    if not problems:
        return VerifyResult(ok=True, checked=result.checked, head=head, unsigned=unsigned)
    merged = _merged(missing)
    first_bad = result.first_bad_seq if not result.ok else (merged[0][0] if merged else None)
    if first_bad is None and reach.trusted_checkpoint is not None:
        cp_seq = reach.trusted_checkpoint.get("seq")
        first_bad = cp_seq if isinstance(cp_seq, int) and not isinstance(cp_seq, bool) else None
    return VerifyResult(ok=False, checked=result.checked, first_bad_seq=first_bad,
                        first_bad_event_id=result.first_bad_event_id, problem="; ".join(problems),
                        head=head, missing=merged, unsigned=unsigned)
