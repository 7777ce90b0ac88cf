"""A device key in the TPM, certified by the AK (TPM2_Certify), on structures captured from swtpm."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.gateway.evidence.base import EvidenceError
from services.gateway.evidence.tpm_devicekey import device_key_from_json, verify_device_key
from services.gateway.evidence.tpm_wire import (
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY,
    parse_certify_attest,
    parse_public,
    tpm2b,
)

from .tpm_samples import FIXTURES, captured, captured_public, ecdsa_signature, software_ak


def evidence(algorithm: str = "ecc") -> tuple[bytes, bytes, bytes]:
    doc = FIXTURES[algorithm]["device_key"]
    return tuple(base64.b64decode(doc[part]) for part in ("public", "attest", "signature"))  # type: ignore[return-value]


def certify_bytes(name: bytes) -> bytes:
    return (struct.pack(">IH", TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY) + tpm2b(b"\x00\x0bsigner") + tpm2b(b"")
            + struct.pack(">QIIB", 1, 1, 0, 1) + struct.pack(">Q", 1) + tpm2b(name) + tpm2b(name))


@pytest.mark.parametrize("algorithm", ["ecc", "rsa"])
def test_a_certified_device_key_is_accepted(algorithm):
    ak, _ = captured(algorithm)
    public, attest, signature = evidence(algorithm)
    key = verify_device_key(public, attest, signature, ak=ak)
    assert isinstance(key.public_key, ec.EllipticCurvePublicKey) and key.name == parse_certify_attest(attest).name
    assert device_key_from_json(FIXTURES[algorithm]["device_key"], ak=ak).name == key.name


def test_a_certification_is_for_one_key_by_one_ak():
    ak, _ = captured("ecc")
    rsa_ak, _ = captured("rsa")
    public, attest, signature = evidence("ecc")
    other_public = evidence("rsa")[0]
    with pytest.raises(EvidenceError, match="for another key"):
        verify_device_key(other_public, attest, signature, ak=ak)
    with pytest.raises(EvidenceError, match="does not match the attestation key"):
        verify_device_key(public, attest, signature, ak=rsa_ak)
    with pytest.raises(EvidenceError, match="signature invalid"):
        verify_device_key(public, attest, signature, ak=software_ak()[1])
    for at in range(len(attest)):
        altered = bytearray(attest)
        altered[at] ^= 1
        with pytest.raises(EvidenceError, match="signature invalid"):
            verify_device_key(public, bytes(altered), signature, ak=ak)


def test_a_quote_is_not_a_certification():
    ak, quote = captured("ecc")
    with pytest.raises(EvidenceError, match="not a certification"):
        verify_device_key(evidence("ecc")[0], quote.attest, quote.signature, ak=ak)


def test_a_key_that_may_leave_its_tpm_is_refused_even_when_certified():
    private, ak = software_ak()
    public = bytearray(evidence("ecc")[0])
    attributes = struct.unpack(">I", public[6:10])[0]
    public[6:10] = struct.pack(">I", attributes & ~0x2)   # fixedTPM cleared
    attest = certify_bytes(parse_public(bytes(public)).name)
    with pytest.raises(EvidenceError, match="generated in and fixed to its TPM"):
        verify_device_key(bytes(public), attest, ecdsa_signature(private, attest), ak=ak)
    # The AK itself (restricted) is no device key either.
    ak_public = captured_public("ecc", "ak_public")
    attest = certify_bytes(parse_public(ak_public).name)
    with pytest.raises(EvidenceError, match="generated in and fixed to its TPM"):
        verify_device_key(ak_public, attest, ecdsa_signature(private, attest), ak=ak)


def test_malformed_device_key_documents_name_the_field():
    ak, _ = captured("ecc")
    for document, field in ((None, "tpm_device_key must be an object"), ({"attest": "AA==", "signature": "AA=="}, "tpm_device_key.public"),
                            ({"public": "AA==", "attest": "!", "signature": "AA=="}, "tpm_device_key.attest")):
        with pytest.raises(EvidenceError) as refused:
            device_key_from_json(document, ak=ak)
        assert refused.value.reason.startswith(field)
