"""TPM enrolment, pure parts: key checks, MakeCredential's structure, EK certificate chains.

Whether a real TPM recovers the secret is tests/integration/test_tpm_attestation.py's job.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from services.gateway.evidence.base import EvidenceError
from services.gateway.evidence.tpm_credential import kdfa, make_credential
from services.gateway.evidence.tpm_enrol import (
    activation_succeeded,
    attestation_key,
    begin_activation,
    endorsement_key,
    enrolment_from_json,
    verify_ek_certificate,
)
from services.gateway.evidence.tpm_wire import parse_public

from .tpm_samples import captured_public

NOW = dt.datetime.now(dt.UTC)


def test_kdfa_is_sp800_108_counter_mode_with_a_nul_terminated_label():
    import hmac

    key = bytes(range(32))
    first = hmac.new(key, b"\0\0\0\1STORAGE\0ctx-u" + struct.pack(">I", 384), "sha256").digest()
    second = hmac.new(key, b"\0\0\0\2STORAGE\0ctx-u" + struct.pack(">I", 384), "sha256").digest()
    assert kdfa(0x000B, key, b"STORAGE", b"ctx-u", b"", 384) == (first + second)[:48]
    assert kdfa(0x000B, key, b"STORAGE\0", b"ctx-u", b"", 384) == (first + second)[:48]


def test_make_credential_shapes_and_freshness():
    ek = endorsement_key(captured_public("ecc", "ek_public"))
    ak = attestation_key(captured_public("ecc", "ak_public"))
    credential = make_credential(ek, ak.name, b"s" * 32, seed=b"\7" * 32)
    # TPM2B_ID_OBJECT: TPM2B(HMAC-SHA256) then the encrypted TPM2B(secret), as long as its plaintext.
    assert credential.credential_blob[:2] == struct.pack(">H", 32)
    assert len(credential.credential_blob) == 2 + 32 + 2 + 32
    assert len(credential.encrypted_secret) == 256   # RSA-2048 OAEP
    assert make_credential(ek, ak.name, b"s" * 32, seed=b"\7" * 32).credential_blob == credential.credential_blob
    assert make_credential(ek, ak.name, b"s" * 32).credential_blob != credential.credential_blob
    assert "s" * 8 not in repr(credential)


def test_make_credential_refuses_unusable_keys_and_secrets():
    ek = endorsement_key(captured_public("ecc", "ek_public"))
    ak = parse_public(captured_public("ecc", "ak_public"))
    with pytest.raises(EvidenceError, match="unsupported endorsement key"):
        make_credential(ak, ak.name, b"s" * 32)   # an ECC key
    with pytest.raises(EvidenceError, match="secret size"):
        make_credential(ek, ak.name, b"s" * 33)
    with pytest.raises(EvidenceError, match="secret size"):
        make_credential(ek, ak.name, b"")


def test_an_ak_must_be_a_restricted_signing_key_and_an_ek_a_restricted_decryption_key():
    ek_public, ak_public = captured_public("rsa", "ek_public"), captured_public("rsa", "ak_public")
    with pytest.raises(EvidenceError, match="restricted signing key"):
        attestation_key(ek_public)
    with pytest.raises(EvidenceError, match="restricted decryption key"):
        endorsement_key(ak_public)
    # An AK whose attributes say it may leave its TPM (fixedTPM cleared) is refused; its name changes too.
    area = bytearray(ak_public)
    attributes = struct.unpack(">I", area[6:10])[0]
    area[6:10] = struct.pack(">I", attributes & ~0x2)
    with pytest.raises(EvidenceError, match="restricted signing key"):
        attestation_key(bytes(area))


def test_begin_activation_keeps_only_a_digest_of_the_secret():
    activation = begin_activation(captured_public("ecc", "ek_public"), captured_public("ecc", "ak_public"))
    assert len(activation.secret_digest) == 32 and not activation.ek_certified
    assert not activation_succeeded(activation.secret_digest, b"\0" * 32)
    assert activation_succeeded(hashlib.sha256(b"x").digest(), b"x")
    assert "secret" not in repr(activation)
    with pytest.raises(EvidenceError, match="certificate required"):
        begin_activation(captured_public("ecc", "ek_public"), captured_public("ecc", "ak_public"), require_certificate=True)


def test_enrolment_documents():
    from agent.tpm import EnrolmentKeys

    ek, ak = captured_public("ecc", "ek_public"), captured_public("ecc", "ak_public")
    presented = enrolment_from_json(EnrolmentKeys(ek, ak, b"name").to_json())
    assert (presented.ek_public, presented.ak_public, presented.ek_certificate) == (ek, ak, None)
    assert enrolment_from_json(EnrolmentKeys(ek, ak, b"name", b"\x30\x00").to_json()).ek_certificate == b"\x30\x00"
    for document, field in ((None, "tpm must be an object"), ({"ak_public": "AA=="}, "tpm.ek_public"),
                            ({"ek_public": "AA==", "ak_public": "%%"}, "tpm.ak_public"),
                            ({"ek_public": "AA==", "ak_public": "AA==", "ek_certificate": 5}, "tpm.ek_certificate"),
                            ({"ek_public": "A" * 2000, "ak_public": "AA=="}, "tpm.ek_public")):
        with pytest.raises(EvidenceError) as refused:
            enrolment_from_json(document)
        assert refused.value.reason.startswith(field)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, public_key, issuer: str, issuer_key, *, ca: bool, days: int = 365) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def manufacturer():
    """A manufacturer root, an intermediate, and an EK certificate for the captured EK."""
    root_key, intermediate_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _certificate("TPM Root", root_key.public_key(), "TPM Root", root_key, ca=True)
    intermediate = _certificate("TPM Issuing CA", intermediate_key.public_key(), "TPM Root", root_key, ca=True)
    ek = endorsement_key(captured_public("ecc", "ek_public"))
    ek_cert = _certificate("TPM EK", ek.public_key, "TPM Issuing CA", intermediate_key, ca=False)
    return root, intermediate, intermediate_key, ek, ek_cert


def _der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def test_an_ek_certificate_chaining_to_a_root_is_accepted(manufacturer):
    root, intermediate, _, ek, ek_cert = manufacturer
    verify_ek_certificate(_der(ek_cert), ek, roots=[root], intermediates=[intermediate])
    activation = begin_activation(captured_public("ecc", "ek_public"), captured_public("ecc", "ak_public"),
                                  ek_certificate=_der(ek_cert), roots=[root], intermediates=[intermediate])
    assert activation.ek_certified


def test_ek_certificates_that_do_not_prove_the_ek_are_refused(manufacturer):
    root, intermediate, intermediate_key, ek, ek_cert = manufacturer
    with pytest.raises(EvidenceError, match="does not chain"):
        verify_ek_certificate(_der(ek_cert), ek, roots=[root])                       # intermediate missing
    other_root_key = ec.generate_private_key(ec.SECP256R1())
    other_root = _certificate("TPM Root", other_root_key.public_key(), "TPM Root", other_root_key, ca=True)
    with pytest.raises(EvidenceError, match="does not chain"):
        verify_ek_certificate(_der(ek_cert), ek, roots=[other_root], intermediates=[intermediate])
    other_ek = endorsement_key(captured_public("rsa", "ek_public"))
    with pytest.raises(EvidenceError, match="for another key"):
        verify_ek_certificate(_der(ek_cert), other_ek, roots=[root], intermediates=[intermediate])
    expired = _certificate("TPM EK", ek.public_key, "TPM Issuing CA", intermediate_key, ca=False, days=-1)
    with pytest.raises(EvidenceError, match="expired"):
        verify_ek_certificate(_der(expired), ek, roots=[root], intermediates=[intermediate])
    with pytest.raises(EvidenceError, match="not DER"):
        verify_ek_certificate(b"\x30\x03abc", ek, roots=[root])
    self_signed_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = _certificate("TPM EK", ek.public_key, "TPM Issuing CA", self_signed_key, ca=False)  # right issuer name, wrong key
    with pytest.raises(EvidenceError, match="does not chain"):
        verify_ek_certificate(_der(forged), ek, roots=[root], intermediates=[intermediate])
