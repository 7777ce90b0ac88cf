"""Envelope encryption: wrap and unwrap key material under a key-encryption key with AES-256-GCM."""

from __future__ import annotations

import hmac
import secrets
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "FORMAT_VERSION",
    "KEK_BYTES",
    "NONCE_BYTES",
    "SecretBytes",
    "UnwrapError",
    "aad_for",
    "generate_key",
    "unwrap",
    "wrap",
]

# Blob layout: version (1 byte) || nonce (12 bytes) || ciphertext || GCM tag (16 bytes).
FORMAT_VERSION = 1
KEK_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = bytes([FORMAT_VERSION])
_KEY_SIZES_BITS = (128, 192, 256)


class UnwrapError(Exception):
    """A wrapped blob could not be opened. The message never contains key or plaintext bytes."""


class SecretBytes:
    """Bytes that never show themselves in repr(), str() or f-strings; read them with get_secret_value()."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("SecretBytes holds bytes")
        self._value = bytes(value)

    def get_secret_value(self) -> bytes:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"SecretBytes(<{len(self._value)} bytes>)"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretBytes):
            return hmac.compare_digest(self._value, other._value)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # secrets are not dictionary keys


def _raw(key: bytes | SecretBytes) -> bytes:
    return key.get_secret_value() if isinstance(key, SecretBytes) else bytes(key)


def _aead(kek: bytes | SecretBytes) -> AESGCM:
    raw = _raw(kek)
    if len(raw) != KEK_BYTES:
        # Security invariant: report the length only, never the key.
        raise ValueError(f"a KEK must be {KEK_BYTES} bytes (AES-256); got {len(raw)}")
    return AESGCM(raw)


def wrap(kek: bytes | SecretBytes, plaintext: bytes | SecretBytes, *, aad: bytes) -> bytes:
    """Encrypt plaintext under kek, binding it to aad; returns version || nonce || ciphertext+tag."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    # The format version is authenticated too, so it cannot be swapped without detection.
    sealed = _aead(kek).encrypt(nonce, _raw(plaintext), _HEADER + aad)
    return _HEADER + nonce + sealed


def unwrap(kek: bytes | SecretBytes, blob: bytes, *, aad: bytes) -> bytes:
    """Open a blob made by wrap() with the same kek and aad, or raise UnwrapError."""
    aead = _aead(kek)
    if len(blob) < 1 + NONCE_BYTES + TAG_BYTES:
        raise UnwrapError("wrapped blob is truncated")
    if blob[0] != FORMAT_VERSION:
        raise UnwrapError(f"unsupported wrapped-blob format version {blob[0]}")
    nonce = blob[1 : 1 + NONCE_BYTES]
    try:
        return aead.decrypt(nonce, blob[1 + NONCE_BYTES :], _HEADER + aad)
    except InvalidTag:
        raise UnwrapError(
            "authentication failed: wrong key-encryption key, wrong associated data, or a tampered blob"
        ) from None


def aad_for(*parts: str) -> bytes:
    """Associated data from labelled parts, each length-prefixed so ("ab", "c") != ("a", "bc")."""
    if not parts:
        raise ValueError("associated data needs at least one part")
    out = bytearray(struct.pack(">I", len(parts)))
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"associated-data parts are str; got {type(part).__name__}")
        encoded = part.encode("utf-8")
        out += struct.pack(">I", len(encoded))
        out += encoded
    return bytes(out)


def generate_key(bits: int) -> bytes:
    """A fresh random AES key of 128, 192 or 256 bits from the OS CSPRNG."""
    if bits not in _KEY_SIZES_BITS:
        raise ValueError(f"key size must be one of {_KEY_SIZES_BITS} bits; got {bits}")
    return secrets.token_bytes(bits // 8)
