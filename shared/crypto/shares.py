"""Root-of-trust shares in transit: sealed end to end between the custodian's CLI and keysvc, so the
gateway, the broker and logs only ever carry ciphertext.

Suite: HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.

Inbound (`unseal`, `rekey-verify`): the CLI seals a share to keysvc's transport key. That X25519
key is derived (HKDF) from keysvc's Ed25519 signing key, so every instance sharing the signing key
file holds the same one and none has to be picked; keysvc publishes it signed, and the CLI trusts
it only when the signing key's id matches the one the custodian pinned. The `info` names the
purpose and the unseal round (or the re-key's new root fingerprint), so a captured sealed share
opens in no other round.

Outbound (`init`, `rekey`): keysvc seals each new share to an X25519 key the CLI made for that one
request; the `info` names the purpose, the root fingerprint and the share's number, and keysvc
signs the whole answer (recipient key included), so a gateway cannot swap in its own key.

Pure: keysvc (open inbound, seal outbound) and the CLI (the other halves) both use this module.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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


def outbound_info(purpose: str, root_fingerprint: str, number: int) -> bytes:
    """Binds a handed-out share to its purpose, its root and its position."""
    return _label("share delivery", purpose, root_fingerprint, str(number))


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


# --- keysvc's side ----------------------------------------------------------------------------


def transport_key(signing_key: Ed25519PrivateKey) -> X25519PrivateKey:
    """keysvc's share-transport key, derived from its signing key (separate key by HKDF's info)."""
    seed = signing_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
    derived = HKDF(hashes.SHA256(), 32, salt=None, info=b"strongroom share transport key v1").derive(seed)
    return X25519PrivateKey.from_private_bytes(derived)


def _transport_statement(public: bytes) -> bytes:
    return _label("share transport key") + public


def published_transport_key(signing_key: Ed25519PrivateKey) -> dict[str, str]:
    """The transport public key with keysvc's signature over it, for the CLI to check."""
    public = _raw(transport_key(signing_key).public_key())
    signing_public = _raw(signing_key.public_key())
    return {"public_key": _b64(public), "signature": _b64(signing_key.sign(_transport_statement(public))),
            "signing_public_key": _b64(signing_public), "signing_key_id": key_id(signing_public), "suite": SUITE_NAME}


def open_share(sealed_b64: str, signing_key: Ed25519PrivateKey, info: bytes) -> str:
    """The share a CLI sealed for this purpose and round, or ShareTransportError."""
    try:
        sealed = base64.b64decode(sealed_b64, validate=True)
        if len(sealed) > MAX_SEALED_BYTES:
            raise ValueError
        return SUITE.decrypt(sealed, transport_key(signing_key), info=info).decode()
    except (InvalidTag, ValueError, TypeError):
        raise ShareTransportError("sealed_share does not open with keysvc's transport key for this purpose and "
                                  "round (fetch the transport key again and re-seal)") from None


def sealed_digest(sealed_b64: str) -> str:
    """What a round remembers of a sealed share it took, so the same ciphertext is not taken twice."""
    return hashlib.sha256(base64.b64decode(sealed_b64, validate=True)).hexdigest()


def _delivery_statement(purpose: str, root_fingerprint: str, recipient: str, sealed: list[str]) -> bytes:
    return _label("share delivery answer", purpose, root_fingerprint, recipient, *sealed)


def seal_delivery(shares: list[str], recipient_b64: str, *, purpose: str, root_fingerprint: str,
                  signing_key: Ed25519PrivateKey) -> dict[str, object]:
    """Each new share sealed to the requester's key, numbered from 1, and the whole answer signed."""
    recipient = X25519PublicKey.from_public_bytes(parse_public_key(recipient_b64, "recipient_public_key"))
    sealed = [_b64(SUITE.encrypt(s.encode(), recipient, info=outbound_info(purpose, root_fingerprint, n)))
              for n, s in enumerate(shares, start=1)]
    signature = signing_key.sign(_delivery_statement(purpose, root_fingerprint, recipient_b64, sealed))
    signing_public = _raw(signing_key.public_key())
    return {"sealed_shares": sealed, "recipient_public_key": recipient_b64, "signature": _b64(signature),
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
    """A share sealed to keysvc's transport key, once its signature checks out under the pinned key."""
    verifier = _trusted_signer(transport, pinned_key_id)
    public = parse_public_key(transport.get("public_key", ""), "the transport public key")
    _verify(verifier, transport.get("signature", ""), _transport_statement(public))
    sealed = SUITE.encrypt(share.encode(), X25519PublicKey.from_public_bytes(public), info=inbound_info(purpose, round_id))
    return _b64(sealed)


def new_recipient_key() -> tuple[X25519PrivateKey, str]:
    """A one-request key pair for receiving new shares: the private half and the public half in base64."""
    private = X25519PrivateKey.generate()
    return private, _b64(_raw(private.public_key()))


def open_delivery(answer: dict, private: X25519PrivateKey, *, pinned_key_id: str, purpose: str,
                  root_fingerprint: str) -> list[str]:
    """The new shares, once the answer is signed by the pinned key and sealed to our own request key."""
    verifier = _trusted_signer(answer, pinned_key_id)
    ours = _b64(_raw(private.public_key()))
    sealed = list(answer.get("sealed_shares") or [])
    if answer.get("recipient_public_key") != ours:
        raise ShareTransportError("the shares were sealed to another key than this request's: refusing")
    _verify(verifier, answer.get("signature", ""), _delivery_statement(purpose, root_fingerprint, ours, sealed))
    try:
        return [SUITE.decrypt(base64.b64decode(s, validate=True), private,
                              info=outbound_info(purpose, root_fingerprint, n)).decode()
                for n, s in enumerate(sealed, start=1)]
    except (InvalidTag, ValueError, TypeError):
        raise ShareTransportError("a new share does not open with this request's key") from None
