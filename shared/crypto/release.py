"""Sealing a released data key to an agent's one-time X25519 key (HPKE, RFC 9180).

Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, base mode. The `info`
binds the ciphertext to the tenant, request, key and version, so a sealed key cannot be
replayed as the answer to another request. keysvc seals; only the agent can open.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
SUITE_NAME = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"


class ReleaseError(ValueError):
    """A sealed key or a public key that cannot be used; never says anything of the key."""


def release_info(*, tenant_id: str, request_id: str, key_id: str, key_version: int) -> bytes:
    return b"strongroom key release v1\x00" + "\x00".join([tenant_id, request_id, key_id, str(key_version)]).encode()


def parse_public_key(b64: str) -> X25519PublicKey:
    try:
        raw = base64.b64decode(b64, validate=True)
        return X25519PublicKey.from_public_bytes(raw)
    except Exception:
        raise ReleaseError("ephemeral_public_key must be a base64 X25519 public key (32 bytes)") from None


def seal(data_key: bytes, public_key: X25519PublicKey, info: bytes) -> bytes:
    return SUITE.encrypt(data_key, public_key, info=info)


def open_sealed(sealed: bytes, private_key: X25519PrivateKey, info: bytes) -> bytes:
    try:
        return SUITE.decrypt(sealed, private_key, info=info)
    except Exception:
        raise ReleaseError("sealed key does not open with this request's key") from None
