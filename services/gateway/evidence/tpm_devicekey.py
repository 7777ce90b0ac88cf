"""A device key that lives in the TPM: proved by a certification (TPM2_Certify) signed by the enrolled AK.

The agent may keep its request-signing key in the TPM instead of a file: an ECDSA P-256 key created
in the TPM (sensitiveDataOrigin), that can never leave it (fixedTPM, fixedParent). It presents the
key's TPM2B_PUBLIC and a TPMS_ATTEST of type certify over it, signed by its AK. `verify_device_key`
checks the AK's signature, that the certified name is this public area's name, and the attributes;
the gateway then registers `public_key` as the device's request-signing key (ECDSA P-256 with SHA-256,
DER signatures as `tpm2_sign -f plain` makes them).

The certification carries no nonce of ours (tpm2-tools 5.4's `tpm2_certify` sets none): replaying
one only re-proves a key the replayer cannot use. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from .base import EvidenceError
from .tpm import check_ak_signature
from .tpm_enrol import MAX_PUBLIC_BYTES
from .tpm_wire import (
    ATTR_DECRYPT,
    ATTR_FIXED_PARENT,
    ATTR_FIXED_TPM,
    ATTR_RESTRICTED,
    ATTR_SENSITIVE_DATA_ORIGIN,
    ATTR_SIGN,
    TpmPublic,
    b64_field,
    parse_certify_attest,
    parse_public,
    parse_signature,
)

DEVICE_KEY_ATTRIBUTES = ATTR_FIXED_TPM | ATTR_FIXED_PARENT | ATTR_SENSITIVE_DATA_ORIGIN | ATTR_SIGN
MAX_ATTEST_BYTES = 1024
MAX_SIGNATURE_BYTES = 1024


def verify_device_key(key_public: bytes, attest: bytes, signature: bytes, *, ak: TpmPublic) -> TpmPublic:
    """The device key's public area, once the AK certified it is a P-256 signing key born in and fixed to its TPM."""
    key = parse_public(key_public)
    check_ak_signature(ak, parse_signature(signature), attest)
    certified = parse_certify_attest(attest)
    if certified.name != key.name:
        raise EvidenceError("certification is for another key")
    if not key.has(DEVICE_KEY_ATTRIBUTES) or key.attributes & (ATTR_DECRYPT | ATTR_RESTRICTED):
        raise EvidenceError("device key must be a signing key generated in and fixed to its TPM")
    if not isinstance(key.public_key, ec.EllipticCurvePublicKey) or not isinstance(key.public_key.curve, ec.SECP256R1):
        raise EvidenceError("device key must be ECDSA P-256")
    return key


def device_key_from_json(doc: Any, *, ak: TpmPublic) -> TpmPublic:
    """`{"public": b64, "attest": b64, "signature": b64}` (the agent's `DeviceKeyEvidence.to_json()`), verified."""
    if not isinstance(doc, Mapping):
        raise EvidenceError("tpm_device_key must be an object")
    return verify_device_key(b64_field(doc.get("public"), "tpm_device_key.public", MAX_PUBLIC_BYTES),
                             b64_field(doc.get("attest"), "tpm_device_key.attest", MAX_ATTEST_BYTES),
                             b64_field(doc.get("signature"), "tpm_device_key.signature", MAX_SIGNATURE_BYTES), ak=ak)
