"""Writing audit archives: a tenant's oldest records, compressed, checksummed and signed, chain included.

The format and its offline checks are in shared/audit_archive.py.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.audit_archive import FORMAT, records_digest, signed_message
from shared.audit_chain import ChainHead
from shared.signatures import canonical_bytes, key_fingerprint

from .signing import public_pem


def build_archive(*, tenant_id: str, archive_id: str, created_at: str, start: ChainHead,
                  records: Sequence[Mapping[str, Any]], checkpoints: Sequence[Mapping[str, Any]],
                  signing_key: Ed25519PrivateKey) -> bytes:
    """The archive file's bytes; deterministic for the same inputs (gzip mtime is zero)."""
    if not records:
        raise ValueError("an archive holds at least one record")
    doc: dict[str, Any] = {
        "format": FORMAT,
        "tenant_id": tenant_id,
        "archive_id": archive_id,
        "created_at": created_at,
        "start": {"seq": start.seq, "hash": start.hash},
        "from_seq": records[0]["seq"],
        "to_seq": records[-1]["seq"],
        "to_hash": records[-1]["hash"],
        "records_sha256": records_digest(records),
        "records": [dict(r) for r in records],
        "checkpoints": [dict(c) for c in checkpoints],
        "key_id": key_fingerprint(signing_key.public_key()),
        "public_key_pem": public_pem(signing_key.public_key()),
    }
    doc["signature"] = base64.b64encode(signing_key.sign(signed_message(doc))).decode("ascii")
    return gzip.compress(canonical_bytes(doc), mtime=0)


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
