"""TPM enrolment: check a device's endorsement and attestation keys, then prove they share one TPM.

1. `begin_activation(ek_public, ak_public, ek_certificate=...)`: the device sends its EK and AK
   public areas (TPM2B_PUBLIC) and, where its TPM has one, the EK certificate. We check the AK is a
   restricted signing key that cannot leave its TPM, the EK is a restricted decryption key, the
   certificate (if any) certifies this EK (and chains to a manufacturer root, if roots are given),
   and seal a random secret to the EK for the AK's name (MakeCredential). Keep the returned
   `secret_digest` with the pending enrolment; send the `credential` to the device.
2. The device runs ActivateCredential and returns the secret; `activation_succeeded` compares its
   digest in constant time. Only then is the AK registered (its TPM2B_PUBLIC, for `verify_quote`).

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from .base import EvidenceError
from .tpm_credential import Credential, make_credential
from .tpm_wire import (
    ALG_RSA,
    ATTR_DECRYPT,
    ATTR_FIXED_PARENT,
    ATTR_FIXED_TPM,
    ATTR_RESTRICTED,
    ATTR_SENSITIVE_DATA_ORIGIN,
    ATTR_SIGN,
    TpmPublic,
    b64_field,
    parse_public,
)

AK_ATTRIBUTES = ATTR_FIXED_TPM | ATTR_FIXED_PARENT | ATTR_SENSITIVE_DATA_ORIGIN | ATTR_RESTRICTED | ATTR_SIGN
EK_ATTRIBUTES = ATTR_FIXED_TPM | ATTR_FIXED_PARENT | ATTR_SENSITIVE_DATA_ORIGIN | ATTR_RESTRICTED | ATTR_DECRYPT
SECRET_BYTES = 32
MAX_CHAIN = 4
MAX_CERTIFICATE_BYTES = 4096
MAX_PUBLIC_BYTES = 1024


@dataclass(frozen=True)
class EnrolmentEvidence:
    """What the device presents at enrolment (the agent's `EnrolmentKeys.to_json()`)."""

    ek_public: bytes
    ak_public: bytes
    ek_certificate: bytes | None


def enrolment_from_json(doc: Any) -> EnrolmentEvidence:
    """`{"ek_public": b64, "ak_public": b64, "ek_certificate": b64 (optional)}`; errors name the field."""
    if not isinstance(doc, Mapping):
        raise EvidenceError("tpm must be an object")
    certificate = doc.get("ek_certificate")
    return EnrolmentEvidence(
        b64_field(doc.get("ek_public"), "tpm.ek_public", MAX_PUBLIC_BYTES),
        b64_field(doc.get("ak_public"), "tpm.ak_public", MAX_PUBLIC_BYTES),
        None if certificate is None else b64_field(certificate, "tpm.ek_certificate", MAX_CERTIFICATE_BYTES))


def attestation_key(ak_public: bytes) -> TpmPublic:
    """The AK's public area, refused unless it is a restricted signing key generated in and fixed to its TPM."""
    ak = parse_public(ak_public)
    if not ak.has(AK_ATTRIBUTES) or ak.has(ATTR_DECRYPT):
        raise EvidenceError("attestation key must be a restricted signing key fixed to its TPM")
    return ak


def endorsement_key(ek_public: bytes) -> TpmPublic:
    ek = parse_public(ek_public)
    if ek.type != ALG_RSA or not ek.has(EK_ATTRIBUTES) or ek.has(ATTR_SIGN):
        raise EvidenceError("endorsement key must be an RSA restricted decryption key")
    return ek


def _same_key(cert: x509.Certificate, ek: TpmPublic) -> bool:
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        certified = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        return False
    return certified.public_bytes(*der) == ek.public_key.public_bytes(*der)


def _issuer_of(cert: x509.Certificate, candidates: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
            continue
        return candidate
    return None


def _valid_now(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def verify_ek_certificate(certificate_der: bytes, ek: TpmPublic, *, roots: Sequence[x509.Certificate],
                          intermediates: Sequence[x509.Certificate] = (), now: datetime | None = None) -> None:
    """The certificate certifies this EK and chains, through valid certificates, to one of `roots`."""
    if not certificate_der or len(certificate_der) > MAX_CERTIFICATE_BYTES:
        raise EvidenceError("endorsement certificate has a bad size")
    try:
        cert = x509.load_der_x509_certificate(certificate_der)
    except ValueError:
        raise EvidenceError("endorsement certificate is not DER X.509") from None
    if not _same_key(cert, ek):
        raise EvidenceError("endorsement certificate is for another key")
    now = now or datetime.now(UTC)
    for _ in range(MAX_CHAIN):
        if not _valid_now(cert, now):
            raise EvidenceError("endorsement certificate chain has an expired certificate")
        root = _issuer_of(cert, roots)
        if root is not None:
            if not _valid_now(root, now):
                raise EvidenceError("endorsement certificate chain has an expired certificate")
            return
        issuer = _issuer_of(cert, intermediates)
        if issuer is None:
            break
        cert = issuer
    raise EvidenceError("endorsement certificate does not chain to a trusted root")


@dataclass(frozen=True)
class Activation:
    """A pending enrolment: the credential for the device, and what to keep to check its answer."""

    credential: Credential
    secret_digest: bytes    # SHA-256 of the sealed secret: keep it, never the secret
    ak: TpmPublic
    ek: TpmPublic
    ek_certified: bool      # an EK certificate was checked against manufacturer roots

    def __repr__(self) -> str:
        return f"Activation(ak={self.ak.name.hex()}, ek_certified={self.ek_certified})"


def begin_activation(ek_public: bytes, ak_public: bytes, *, ek_certificate: bytes | None = None,
                     roots: Sequence[x509.Certificate] = (), intermediates: Sequence[x509.Certificate] = (),
                     require_certificate: bool = False) -> Activation:
    """Check the EK and AK and seal a fresh secret to them (MakeCredential)."""
    ek, ak = endorsement_key(ek_public), attestation_key(ak_public)
    certified = False
    if ek_certificate is not None and roots:
        verify_ek_certificate(ek_certificate, ek, roots=roots, intermediates=intermediates)
        certified = True
    elif require_certificate:
        raise EvidenceError("endorsement certificate required")
    secret = os.urandom(SECRET_BYTES)
    credential = make_credential(ek, ak.name, secret)
    return Activation(credential, hashlib.sha256(secret).digest(), ak, ek, certified)


def activation_succeeded(secret_digest: bytes, returned_secret: bytes) -> bool:
    """Whether the device recovered the sealed secret: its AK is in the TPM that holds the EK."""
    return hmac.compare_digest(secret_digest, hashlib.sha256(returned_secret).digest())
