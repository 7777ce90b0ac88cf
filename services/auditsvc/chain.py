"""Signing the heads of the per-tenant audit hash chain; the chain and its checks are in shared/audit_chain.py."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.audit_chain import ChainHead, checkpoint_message
from shared.signatures import key_fingerprint


def make_checkpoint(head: ChainHead, *, signing_key: Ed25519PrivateKey, at: datetime) -> dict[str, Any]:
    """Sign a chain head so a later rewrite of everything up to it cannot go unnoticed."""
    if at.tzinfo is None:
        raise ValueError("checkpoint time must be timezone-aware")
    cp: dict[str, Any] = {
        "tenant_id": head.tenant_id,
        "seq": head.seq,
        "hash": head.hash,
        "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "key_id": key_fingerprint(signing_key.public_key()),
    }
    cp["signature"] = base64.b64encode(signing_key.sign(checkpoint_message(cp))).decode("ascii")
    return cp
