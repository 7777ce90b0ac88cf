"""Destruction certificates: the key service's Ed25519 signature over the canonical JSON, checked anywhere (pure)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.signatures import canonical_bytes


def sign_certificate(body: Mapping[str, Any], signing_key: Ed25519PrivateKey) -> str:
    """Ed25519 over the canonical JSON (sorted keys, no spaces); base64."""
    return base64.b64encode(signing_key.sign(canonical_bytes(body))).decode()


def verify_certificate(body: Mapping[str, Any], signature: str, public_key: Ed25519PublicKey | bytes) -> bool:
    if isinstance(public_key, bytes):
        public_key = Ed25519PublicKey.from_public_bytes(public_key)
    try:
        public_key.verify(base64.b64decode(signature, validate=True), canonical_bytes(body))
        return True
    except (InvalidSignature, ValueError):
        return False
