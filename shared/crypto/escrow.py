"""Escrow of a volume's recovery passphrase: sealed by the agent to a single-use keysvc key, and
released to an operator's one-time key after a break-glass approval.

Both directions use HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
AES-256-GCM (the suite of ``release.py``). The `info` names the direction, tenant, volume and
token or request, so a sealed passphrase cannot be replayed into another tenant, volume or request.
Pure: the agent and the CLI seal and open, keysvc opens and seals.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .release import SUITE, ReleaseError

MAX_PASSPHRASE_BYTES = 1024
_ESCROW_LABEL = b"strongroom volume recovery escrow v1\x00"
_RELEASE_LABEL = b"strongroom volume recovery release v1\x00"


def _info(label: bytes, *parts: str) -> bytes:
    if any("\x00" in p for p in parts):
        raise ValueError("info parts must not contain NUL")
    return label + "\x00".join(parts).encode()


def escrow_info(*, tenant_id: str, volume_id: str, escrow_token: str) -> bytes:
    """HPKE info of a passphrase sealed by the agent to keysvc's single-use escrow key."""
    return _info(_ESCROW_LABEL, tenant_id, volume_id, escrow_token)


def recovery_info(*, tenant_id: str, volume_id: str, request_id: str) -> bytes:
    """HPKE info of a passphrase sealed by keysvc to the requesting operator's one-time key."""
    return _info(_RELEASE_LABEL, tenant_id, volume_id, request_id)


def public_key_b64(private: X25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def seal_b64(secret: bytes, public_key_b64_text: str, *, info: bytes) -> str:
    """`secret` sealed to the base64 raw X25519 public key, base64 (enc || ciphertext)."""
    try:
        public = X25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64_text, validate=True))
    except Exception:
        raise ReleaseError("public_key must be a base64 X25519 public key (32 bytes)") from None
    return base64.b64encode(SUITE.encrypt(secret, public, info=info)).decode("ascii")


def open_b64(sealed_b64: str, private: X25519PrivateKey, *, info: bytes) -> bytes:
    """The secret, or ReleaseError when it was not sealed to this key with this info."""
    try:
        return SUITE.decrypt(base64.b64decode(sealed_b64, validate=True), private, info=info)
    except Exception:
        raise ReleaseError("the sealed passphrase does not open with this key for this volume") from None
