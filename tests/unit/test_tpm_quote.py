"""Quote verification: what a quote proves, and every way a forged or replayed one is refused."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.tpm import Quote as AgentQuote
from agent.tpm import TpmError, quote_nonce
from services.gateway.evidence.base import EvidenceError
from services.gateway.evidence.tpm import (
    boot_change,
    golden_mismatches,
    qualifying_data,
    quote_from_json,
    subject_of,
    verify_quote,
)

from .tpm_samples import (
    FIXTURES,
    REQUEST_PUBLIC_KEY,
    SERVER_NONCE,
    altered,
    captured,
    software_ak,
    synthetic_quote,
)

ALGORITHMS = ["ecc", "rsa"]


def verify(quote, ak, **overrides):
    arguments = {"ak": ak, "server_nonce": SERVER_NONCE, "request_public_key": REQUEST_PUBLIC_KEY} | overrides
    return verify_quote(quote, **arguments)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_captured_quote_verifies_and_yields_attested_facts(algorithm):
    ak, quote = captured(algorithm)
    verified = verify(quote, ak, required_pcrs=[0, 7])
    assert verified.provenance == "attested"
    assert verified.subject == subject_of(ak) == f"tpm:{FIXTURES[algorithm]['ak_name']}"
    integrity = verified.facts["integrity"]
    assert integrity["pcr"] == FIXTURES[algorithm]["quote"]["pcrs"]
    assert integrity["pcr"]["16"] != "00" * 32
    assert integrity["reset_count"] >= 1 and integrity["restart_count"] == 0


def test_agent_and_server_bind_the_nonce_the_same_way():
    assert quote_nonce(SERVER_NONCE, REQUEST_PUBLIC_KEY) == qualifying_data(SERVER_NONCE, REQUEST_PUBLIC_KEY)
    assert qualifying_data(SERVER_NONCE, REQUEST_PUBLIC_KEY) == hashlib.sha256(SERVER_NONCE + REQUEST_PUBLIC_KEY).digest()
    with pytest.raises(TpmError, match="32 bytes"):
        quote_nonce(b"short", REQUEST_PUBLIC_KEY)
    ak, quote = captured("ecc")
    round_trip = quote_from_json(AgentQuote(quote.attest, quote.signature, dict(quote.pcrs)).to_json())
    assert round_trip == quote


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_wrong_nonce_or_another_requests_key_is_refused(algorithm):
    ak, quote = captured(algorithm)
    with pytest.raises(EvidenceError, match="nonce"):
        verify(quote, ak, server_nonce=b"\0" * 32)
    with pytest.raises(ValueError, match="32 bytes"):   # nonce ‖ key must split one way only
        verify(quote, ak, server_nonce=SERVER_NONCE + REQUEST_PUBLIC_KEY[:1], request_public_key=REQUEST_PUBLIC_KEY[1:])
    with pytest.raises(EvidenceError, match="nonce"):
        verify(quote, ak, request_public_key=REQUEST_PUBLIC_KEY[:-1] + b"\0")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_an_altered_pcr_value_is_refused(algorithm):
    ak, quote = captured(algorithm)
    for pcr in quote.pcrs:
        value = bytearray(quote.pcrs[pcr])
        value[0] ^= 1
        with pytest.raises(EvidenceError, match="PCR values do not match"):
            verify(altered(quote, pcrs={**quote.pcrs, pcr: bytes(value)}), ak)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_any_altered_attest_byte_is_refused(algorithm):
    ak, quote = captured(algorithm)
    for at in range(len(quote.attest)):
        attest = bytearray(quote.attest)
        attest[at] ^= 0x01
        with pytest.raises(EvidenceError, match="signature invalid"):
            verify(altered(quote, attest=bytes(attest)), ak)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_an_altered_signature_is_refused(algorithm):
    ak, quote = captured(algorithm)
    signature = bytearray(quote.signature)
    signature[-1] ^= 0x01
    with pytest.raises(EvidenceError, match="signature invalid"):
        verify(altered(quote, signature=bytes(signature)), ak)


def test_a_foreign_ak_is_refused():
    ecc_ak, ecc_quote = captured("ecc")
    rsa_ak, rsa_quote = captured("rsa")
    with pytest.raises(EvidenceError, match="does not match the attestation key"):
        verify(ecc_quote, rsa_ak)
    with pytest.raises(EvidenceError, match="does not match the attestation key"):
        verify(rsa_quote, ecc_ak)
    _, other_ecc = software_ak()
    with pytest.raises(EvidenceError, match="signature invalid"):
        verify(ecc_quote, other_ecc)


def test_reported_pcrs_must_be_exactly_the_quoted_selection():
    ak, quote = captured("ecc")
    fewer = {pcr: value for pcr, value in quote.pcrs.items() if pcr != 16}
    with pytest.raises(EvidenceError, match="differ from the quoted selection"):
        verify(altered(quote, pcrs=fewer), ak)
    with pytest.raises(EvidenceError, match="differ from the quoted selection"):
        verify(altered(quote, pcrs={**quote.pcrs, 8: bytes(32)}), ak)
    with pytest.raises(EvidenceError, match="required PCRs"):
        verify(quote, ak, required_pcrs=[0, 4])


def test_a_software_key_cannot_stand_in_for_the_registered_ak():
    """A signature is only as good as the key checked against: the registered AK, not one the request names."""
    private, public = software_ak()
    pcrs = {0: bytes(32), 7: bytes(32)}
    assert verify(synthetic_quote(private, pcrs), public).provenance == "attested"
    ak, _ = captured("ecc")
    with pytest.raises(EvidenceError, match="signature invalid"):
        verify(synthetic_quote(private, pcrs), ak)


def test_only_the_sha256_bank_and_consistent_selections_are_accepted():
    private, public = software_ak()
    pcrs = {0: bytes(32), 7: bytes(32)}
    with pytest.raises(EvidenceError, match="SHA-256 PCR bank"):
        verify(synthetic_quote(private, pcrs, selections=[(0x0004, [0, 7])]), public)
    with pytest.raises(EvidenceError, match="SHA-256 PCR bank"):
        verify(synthetic_quote(private, pcrs, selections=[]), public)
    with pytest.raises(EvidenceError, match="selection invalid"):
        verify(synthetic_quote(private, pcrs, selections=[(0x000B, [0, 7]), (0x000B, [7])]), public)
    # Values hashed in another order than the selection's do not match the digest.
    with pytest.raises(EvidenceError, match="PCR values do not match"):
        verify(synthetic_quote(private, {0: bytes(32), 7: b"\1" * 32}, digest_of=[7, 0]), public)


@pytest.mark.parametrize("document, field", [
    (None, "tpm must be an object"),
    ({"signature": "AA==", "pcrs": {"0": "00" * 32}}, "tpm.attest"),
    ({"attest": "not base64!", "signature": "AA==", "pcrs": {"0": "00" * 32}}, "tpm.attest"),
    ({"attest": "AA==", "signature": "", "pcrs": {"0": "00" * 32}}, "tpm.signature"),
    ({"attest": base64.b64encode(b"x" * 4000).decode(), "signature": "AA==", "pcrs": {"0": "00" * 32}}, "tpm.attest"),
    ({"attest": "AA==", "signature": "AA==", "pcrs": []}, "tpm.pcrs"),
    ({"attest": "AA==", "signature": "AA==", "pcrs": {}}, "tpm.pcrs"),
    ({"attest": "AA==", "signature": "AA==", "pcrs": {"07": "00" * 32}}, "tpm.pcrs"),
    ({"attest": "AA==", "signature": "AA==", "pcrs": {"²": "00" * 32}}, "tpm.pcrs"),
    ({"attest": "AA==", "signature": "AA==", "pcrs": {"24": "00" * 32}}, "tpm.pcrs"),
    ({"attest": "AA==", "signature": "AA==", "pcrs": {"0": "00" * 31}}, "tpm.pcrs"),
    ({"attest": "AA==", "signature": "AA==", "pcrs": {"0": "zz" * 32}}, "tpm.pcrs"),
])
def test_malformed_quote_documents_name_the_field(document, field):
    with pytest.raises(EvidenceError) as refused:
        quote_from_json(document)
    assert refused.value.reason.startswith(field)


@pytest.mark.parametrize("previous, current, change", [
    (None, {"reset_count": 3, "restart_count": 0}, "none"),
    ({"reset_count": 3, "restart_count": 0}, {"reset_count": 3, "restart_count": 0}, "none"),
    ({"reset_count": 3, "restart_count": 2}, {"reset_count": 4, "restart_count": 0}, "rebooted"),
    ({"reset_count": 3, "restart_count": 0}, {"reset_count": 3, "restart_count": 1}, "resumed"),
    ({"reset_count": 3, "restart_count": 0}, {"reset_count": 2, "restart_count": 5}, "rolled_back"),
    ({"reset_count": 3, "restart_count": 2}, {"reset_count": 3, "restart_count": 1}, "rolled_back"),
])
def test_boot_change(previous, current, change):
    assert boot_change(previous, current) == change


def test_golden_values():
    pcrs = {"0": "aa" * 32, "7": "bb" * 32}
    assert golden_mismatches(pcrs, {"0": "AA" * 32, "7": ["cc" * 32, "bb" * 32]}) == []
    assert golden_mismatches(pcrs, {"7": "cc" * 32, "0": "aa" * 32}) == ["PCR 7 differs from its golden value"]
    assert golden_mismatches(pcrs, {"16": "00" * 32}) == ["PCR 16 was not quoted"]


@settings(max_examples=300, deadline=None)
@given(attest=st.binary(max_size=300), signature=st.binary(max_size=300), algorithm=st.sampled_from(ALGORITHMS))
def test_arbitrary_bytes_are_refused_as_evidence_never_an_unexpected_error(attest, signature, algorithm):
    ak, quote = captured(algorithm)
    for candidate in (altered(quote, attest=attest), altered(quote, signature=signature),
                      altered(quote, signature=quote.signature[:4] + signature)):
        with pytest.raises(EvidenceError):
            verify(candidate, ak)
