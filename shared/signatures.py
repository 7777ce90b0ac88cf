"""Ed25519 signatures over canonical JSON: the bytes, key ids and public keys signers and verifiers share."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """Deterministic JSON (sorted keys, no whitespace, UTF-8): the exact bytes that get hashed or signed.

    Documents hold strings, ints, bools, nulls, lists and objects; NaN/Infinity are refused
    because they have no JSON spelling another verifier would reproduce.
    """
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """Short stable key id: first 16 hex chars of SHA-256 over the raw public key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_pem(data: str | bytes) -> Ed25519PublicKey:
    key = load_pem_public_key(data.encode() if isinstance(data, str) else data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key
