"""keysvc's Ed25519 signing key in memory: it signs destruction certificates and the share transport."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .destruction import public_key_id


@dataclass
class Signer:
    """keysvc's Ed25519 key for destruction certificates (the private half never leaves memory)."""

    private_key: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return public_key_id(self.private_key.public_key())

    @property
    def public_key_b64(self) -> str:
        raw = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id})"
