"""``signed`` evidence: a fact document signed by an issuer the operator trusts, bound to the device's key.

For clouds without a signed identity document of their own (OpenStack's dynamic vendordata, say) and
for deployers' own pipelines: a service the host cannot reach signs, with Ed25519,
``{"facts": {...}, "subject": "...", "public_key": "<the device's Ed25519 key>", "expires_at": "..."}``.
The agent sends ``{"kind": "signed", "document": base64(JSON), "signature": base64(sig)}``.
Not fresh (no server nonce), so what it proves is ``cloud``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .base import EvidenceContext, EvidenceError, Verified

MAX_DOCUMENT_BYTES = 16 * 1024


def trusted_signers(setting: str) -> tuple[Ed25519PublicKey, ...]:
    """The issuers' public keys from a comma-separated list of base64 raw Ed25519 keys."""
    return tuple(Ed25519PublicKey.from_public_bytes(base64.b64decode(item.strip(), validate=True))
                 for item in setting.split(",") if item.strip())


def verify(evidence: Mapping[str, Any], context: EvidenceContext, *, signers: Sequence[Ed25519PublicKey]) -> Verified:
    document, signature = _decoded(evidence.get("document")), _decoded(evidence.get("signature"))
    if len(document) > MAX_DOCUMENT_BYTES or len(signature) != 64:
        raise EvidenceError("malformed signed evidence")
    if not any(_signed_by(key, signature, document) for key in signers):
        raise EvidenceError("not signed by a trusted issuer")
    try:
        claims = json.loads(document)
    except (ValueError, RecursionError):
        raise EvidenceError("malformed signed evidence") from None
    if not isinstance(claims, dict) or not isinstance(claims.get("facts"), dict):
        raise EvidenceError("malformed signed evidence")
    bound = claims.get("public_key")
    # SECURITY: bound to the requesting device's key, so one VM's document proves nothing for another.
    if not isinstance(bound, str) or context.public_key is None or not hmac.compare_digest(
            bound.encode(), context.public_key.encode()):
        raise EvidenceError("evidence is bound to another device")
    expires = claims.get("expires_at")
    if expires is not None and not (isinstance(expires, str) and _after(expires, context.now)):
        raise EvidenceError("evidence has expired")
    subject = claims.get("subject")
    return Verified(claims["facts"], "cloud", subject if isinstance(subject, str) else None)


def _decoded(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_DOCUMENT_BYTES * 2:
        raise EvidenceError("malformed signed evidence")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceError("malformed signed evidence") from None


def _signed_by(key: Ed25519PublicKey, signature: bytes, document: bytes) -> bool:
    try:
        key.verify(signature, document)
    except InvalidSignature:
        return False
    return True


def _after(text: str, now: datetime) -> bool:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return False
    return when.tzinfo is not None and when > now
