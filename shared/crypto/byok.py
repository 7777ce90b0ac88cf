"""Bring your own key: the import key pairs keysvc offers and how key material is wrapped to them.

Two wrappings, as with KMS's GetParametersForImport: RSA-OAEP-3072 with SHA-256, and HPKE
(RFC 9180) base mode to an X25519 key with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
AES-256-GCM. The HPKE `info` names the tenant, the key id and the import token, so material
wrapped for one import cannot be replayed into another tenant, key or token. Pure: both the
service (open) and the client (wrap) use this module.
"""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

__all__ = [
    "RSA_OAEP",
    "WRAPPING_ALGORITHMS",
    "X25519_HPKE",
    "ImportWrapError",
    "import_info",
    "new_import_key",
    "open_material",
    "public_params",
    "wrap_material",
]

RSA_OAEP = "RSAES_OAEP_SHA_256"
X25519_HPKE = "HPKE_X25519_HKDF_SHA256_AES_256_GCM"
WRAPPING_ALGORITHMS = (RSA_OAEP, X25519_HPKE)
RSA_BITS = 3072
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_INFO_LABEL = b"strongroom key import v1\x00"


class ImportWrapError(ValueError):
    """Wrapped material that does not open under the import key; never says anything of the key."""


def import_info(*, tenant_id: str, key_id: str, import_token: str) -> bytes:
    """HPKE info: label, then tenant, key id and token separated by NUL (none of them may hold one)."""
    parts = [tenant_id, key_id, import_token]
    if any("\x00" in p for p in parts):
        raise ValueError("import info parts must not contain NUL")
    return _INFO_LABEL + "\x00".join(parts).encode()


def new_import_key(algorithm: str) -> bytes:
    """A fresh import private key, serialised (RSA: PKCS#8 DER; X25519: raw 32 bytes)."""
    if algorithm == RSA_OAEP:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        return private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    if algorithm == X25519_HPKE:
        return X25519PrivateKey.generate().private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                         serialization.NoEncryption())
    raise ValueError(f"wrapping_algorithm must be one of {', '.join(WRAPPING_ALGORITHMS)}")


def public_params(algorithm: str, private: bytes) -> dict[str, object]:
    """What the client needs to wrap: the public key and how it is encoded."""
    if algorithm == RSA_OAEP:
        public = serialization.load_der_private_key(private, password=None).public_key()
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return {"wrapping_algorithm": RSA_OAEP, "key_size": RSA_BITS, "public_key": base64.b64encode(der).decode(),
                "public_key_format": "SubjectPublicKeyInfo DER, base64"}
    raw = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"wrapping_algorithm": X25519_HPKE, "key_size": 256, "public_key": base64.b64encode(raw).decode(),
            "public_key_format": "raw X25519 public key (32 bytes), base64",
            "hpke": {"mode": "base", "kem": "DHKEM(X25519, HKDF-SHA256)", "kdf": "HKDF-SHA256", "aead": "AES-256-GCM",
                     "info": "'strongroom key import v1' NUL tenant_id NUL key_id NUL import_token",
                     "ciphertext": "enc (32 bytes) || AEAD ciphertext, base64"}}


def wrap_material(algorithm: str, public_key_b64: str, material: bytes, *, info: bytes) -> str:
    """Client side: the key material wrapped to the import public key, base64."""
    raw = base64.b64decode(public_key_b64, validate=True)
    if algorithm == RSA_OAEP:
        public = serialization.load_der_public_key(raw)
        if not isinstance(public, rsa.RSAPublicKey):
            raise ValueError("the import public key is not an RSA key")
        return base64.b64encode(public.encrypt(material, _OAEP)).decode()
    if algorithm == X25519_HPKE:
        return base64.b64encode(_SUITE.encrypt(material, X25519PublicKey.from_public_bytes(raw), info=info)).decode()
    raise ValueError(f"wrapping_algorithm must be one of {', '.join(WRAPPING_ALGORITHMS)}")


def open_material(algorithm: str, private: bytes, wrapped: bytes, *, info: bytes) -> bytes:
    """Service side: the key material, or ImportWrapError when it does not open (wrong key, info or bytes)."""
    try:
        if algorithm == RSA_OAEP:
            key = serialization.load_der_private_key(private, password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            return key.decrypt(wrapped, _OAEP)
        if algorithm == X25519_HPKE:
            return _SUITE.decrypt(wrapped, X25519PrivateKey.from_private_bytes(private), info=info)
    except (InvalidTag, ValueError):
        what = "RSA-OAEP, SHA-256" if algorithm == RSA_OAEP else "HPKE X25519 with this import's tenant, key id and token"
        raise ImportWrapError(f"wrapped_key_material does not decrypt under the import key ({what})") from None
    raise ImportWrapError(f"unknown wrapping algorithm {algorithm!r}")
