"""Root-of-trust shares in transit: sealed end to end between a custodian's CLI and keysvc, so the
gateway, the broker, the store and logs only ever carry ciphertext.

Suite: HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.

Inbound (`unseal`, `rekey-verify`): the CLI seals a share to the round's transport key. keysvc makes
a fresh X25519 key pair for each unseal round and each re-key (private half kept only sealed to the
running instances, or under the current root, and shredded when the round ends), so a sealed share
captured in one round opens in no other, and keysvc's key files open none later. keysvc publishes
the key signed with its Ed25519 signing key over purpose, round and key; the CLI trusts it only
when the signing key's id matches the one the custodian pinned. The `info` names the purpose and
the round (or the re-key's new root fingerprint).

Outbound (`init`, `rekey`): keysvc seals share i to custodian i's enrolled X25519 key (the CLI made
the pair and keeps the private half on the custodian's machine); the `info` names the purpose, the
root fingerprint, the custodian and the share's number, and keysvc signs each delivery (recipient
key included), so a gateway cannot swap in its own key.

Pure: keysvc (open inbound, seal outbound) and the CLI (the other halves) both use this module.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
SUITE_NAME = "HPKE base, DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"
UNSEAL, REKEY_VERIFY = "unseal", "rekey-verify"
INIT, REKEY = "init", "rekey"
MAX_SEALED_BYTES = 1024  # a SLIP-39 share is at most 33 words: well under this once sealed


class ShareTransportError(ValueError):
    """A sealed share or a signed answer that cannot be trusted; never says anything of a share."""


def _label(kind: str, *parts: str) -> bytes:
    if any("\x00" in p for p in parts):
        raise ValueError("share transport info parts must not contain NUL")
    return f"strongroom {kind} v1".encode() + b"\x00" + "\x00".join(parts).encode()


def inbound_info(purpose: str, round_id: str) -> bytes:
    """Binds a submitted share to its purpose and to one unseal round or re-key."""
    return _label("share submission", purpose, round_id)


def _raw(public: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def key_id(signing_public: bytes) -> str:
    """The id a custodian pins: SHA-256 of the raw Ed25519 public key, first 16 hex digits."""
    return hashlib.sha256(signing_public).hexdigest()[:16]


def parse_public_key(b64: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(b64, validate=True)
        X25519PublicKey.from_public_bytes(raw)
        return raw
    except (ValueError, TypeError):
        raise ShareTransportError(f"{what} must be a base64 X25519 public key (32 bytes)") from None


def public_b64(private: X25519PrivateKey) -> str:
    return _b64(_raw(private.public_key()))


def private_bytes(private: X25519PrivateKey) -> bytes:
    return private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())


# --- keysvc's side ----------------------------------------------------------------------------


def new_transport_key() -> X25519PrivateKey:
    """A fresh transport key for one round: never derived from anything kept on disk."""
    return X25519PrivateKey.generate()


def _transport_statement(public: bytes, purpose: str, round_id: str) -> bytes:
    return _label("share transport key", purpose, round_id) + public


def published_transport_key(signing_key: Ed25519PrivateKey, public: bytes, *, purpose: str,
                            round_id: str) -> dict[str, str]:
    """The round's transport public key with keysvc's signature over it, its purpose and its round."""
    signing_public = _raw(signing_key.public_key())
    signature = signing_key.sign(_transport_statement(public, purpose, round_id))
    return {"public_key": _b64(public), "signature": _b64(signature), "signing_public_key": _b64(signing_public),
            "signing_key_id": key_id(signing_public), "suite": SUITE_NAME}


def open_share(sealed_b64: str, transport: X25519PrivateKey, info: bytes) -> str:
    """The share a CLI sealed for this purpose and round, or ShareTransportError."""
    try:
        sealed = base64.b64decode(sealed_b64, validate=True)
        if len(sealed) > MAX_SEALED_BYTES:
            raise ValueError
        return SUITE.decrypt(sealed, transport, info=info).decode()
    except (InvalidTag, ValueError, TypeError):
        raise ShareTransportError("sealed_share does not open with this round's transport key for this purpose "
                                  "(fetch the transport key again and re-seal)") from None


def sealed_digest(sealed_b64: str) -> str:
    """What a round remembers of a sealed share it took, so the same ciphertext is not taken twice."""
    return hashlib.sha256(base64.b64decode(sealed_b64, validate=True)).hexdigest()


def delivery_info(purpose: str, root_fingerprint: str, custodian_id: str, number: int) -> bytes:
    """Binds a handed-out share to its purpose, its root, its custodian and its position."""
    return _label("share delivery", purpose, root_fingerprint, custodian_id, str(number))


def _delivery_statement(d: dict) -> bytes:
    return _label("custodian share delivery", d["purpose"], d["root_fingerprint"], d["custodian_id"], str(d["number"]),
                  d["recipient_public_key"], d["sealed_share"])


def check_recipient(recipient_b64: str) -> None:
    """Refuse a public key no share can be sealed to (malformed, or a low-order X25519 point)."""
    public = X25519PublicKey.from_public_bytes(parse_public_key(recipient_b64, "public_key"))
    try:
        SUITE.encrypt(b"", public, info=_label("recipient check"))
    except ValueError:
        raise ShareTransportError("public_key is not a usable X25519 public key") from None


def seal_to_custodian(share: str, recipient_b64: str, *, purpose: str, root_fingerprint: str, custodian_id: str,
                      number: int, signing_key: Ed25519PrivateKey) -> dict[str, object]:
    """Share `number` sealed to one custodian's enrolled key, the delivery signed by keysvc."""
    recipient = X25519PublicKey.from_public_bytes(parse_public_key(recipient_b64, "the custodian's public key"))
    sealed = SUITE.encrypt(share.encode(), recipient, info=delivery_info(purpose, root_fingerprint, custodian_id, number))
    delivery: dict[str, object] = {"purpose": purpose, "root_fingerprint": root_fingerprint, "custodian_id": custodian_id,
                                   "number": number, "recipient_public_key": recipient_b64, "sealed_share": _b64(sealed)}
    signing_public = _raw(signing_key.public_key())
    return {**delivery, "signature": _b64(signing_key.sign(_delivery_statement(delivery))),
            "signing_public_key": _b64(signing_public), "signing_key_id": key_id(signing_public), "suite": SUITE_NAME}


# --- the custodian's side (CLI) -----------------------------------------------------------------


def _trusted_signer(answer: dict, pinned_key_id: str) -> Ed25519PublicKey:
    try:
        signing_public = base64.b64decode(answer["signing_public_key"], validate=True)
        verifier = Ed25519PublicKey.from_public_bytes(signing_public)
    except (KeyError, ValueError, TypeError):
        raise ShareTransportError("the answer carries no usable keysvc signing key") from None
    if key_id(signing_public) != pinned_key_id.strip().lower():
        raise ShareTransportError(f"keysvc's signing key id is {key_id(signing_public)}, not the pinned "
                                  f"{pinned_key_id}: refusing (check it out of band)")
    return verifier


def _verify(verifier: Ed25519PublicKey, signature_b64: str, statement: bytes) -> None:
    try:
        verifier.verify(base64.b64decode(signature_b64, validate=True), statement)
    except (InvalidSignature, ValueError, TypeError):
        raise ShareTransportError("keysvc's signature does not verify: refusing") from None


def seal_share(share: str, transport: dict, *, pinned_key_id: str, purpose: str, round_id: str) -> str:
    """A share sealed to the round's transport key, once its signature (over purpose and round too)
    checks out under the pinned key."""
    verifier = _trusted_signer(transport, pinned_key_id)
    public = parse_public_key(transport.get("public_key", ""), "the transport public key")
    _verify(verifier, transport.get("signature", ""), _transport_statement(public, purpose, round_id))
    sealed = SUITE.encrypt(share.encode(), X25519PublicKey.from_public_bytes(public), info=inbound_info(purpose, round_id))
    return _b64(sealed)


def new_recipient_key() -> tuple[X25519PrivateKey, str]:
    """A key pair for receiving shares: the private half and the public half in base64."""
    private = X25519PrivateKey.generate()
    return private, public_b64(private)


def open_custodian_share(delivery: dict, private: X25519PrivateKey, *, pinned_key_id: str) -> str:
    """This custodian's share, once the delivery is signed by the pinned key and sealed to our own key."""
    verifier = _trusted_signer(delivery, pinned_key_id)
    if delivery.get("recipient_public_key") != public_b64(private):
        raise ShareTransportError("the share was sealed to another key than the one enrolled here: refusing")
    try:
        fields = {k: delivery[k] for k in ("purpose", "root_fingerprint", "custodian_id", "number",
                                           "recipient_public_key", "sealed_share")}
        statement = _delivery_statement(fields)
    except (KeyError, ValueError):
        raise ShareTransportError("the delivery is incomplete: refusing") from None
    _verify(verifier, delivery.get("signature", ""), statement)
    try:
        return SUITE.decrypt(base64.b64decode(fields["sealed_share"], validate=True), private,
                             info=delivery_info(fields["purpose"], fields["root_fingerprint"], fields["custodian_id"],
                                                int(fields["number"]))).decode()
    except (InvalidTag, ValueError, TypeError):
        raise ShareTransportError("the share does not open with the key enrolled here") from None
