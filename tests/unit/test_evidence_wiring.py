"""The pure rules the gateway's evidence wiring applies: which identities zero-touch enrolment
admits, and what a TPM quote's challenge stands for."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from services.gateway.evidence.base import EvidenceContext, EvidenceError, Verified
from services.gateway.evidence.tpm_request import challenge_nonce, verify_tpm_evidence
from services.gateway.views_zero_touch import admitted

AWS = Verified(facts={"identity": {"cloud": "aws", "account_id": "123456789012", "image_id": "ami-1"}},
               provenance="cloud", subject="aws:123456789012/i-1")


@pytest.mark.parametrize(("rule", "verified", "expected"), [
    ({"accounts": ["123456789012"]}, AWS, True),
    ({"accounts": ["123456789012"], "image_ids": ["ami-1", "ami-2"]}, AWS, True),
    ({"accounts": ["123456789012"], "image_ids": ["ami-2"]}, AWS, False),
    ({"accounts": ["999999999999"]}, AWS, False),
    ({"accounts": []}, AWS, False),
    ({"accounts": ["123456789012"]}, None, False),
    ({"accounts": ["123456789012"]}, Verified(facts={"identity": {}}, provenance="cloud"), False),
])
def test_zero_touch_admits_only_named_accounts_and_images(rule, verified, expected):
    assert admitted(rule, verified) is expected


def test_a_quote_must_answer_a_32_byte_challenge():
    nonce = bytes(range(32))
    assert challenge_nonce(base64.urlsafe_b64encode(nonce).decode().rstrip("=")) == nonce
    for bad in (None, "", "short", "!" * 43, base64.urlsafe_b64encode(b"x" * 16).decode()):
        with pytest.raises(EvidenceError, match="must answer a challenge"):
            challenge_nonce(bad)


def test_tpm_evidence_has_exactly_its_fields():
    context = EvidenceContext(tenant_id="ten_a", now=datetime.now(UTC), device_id="dev_a",
                              challenge=base64.urlsafe_b64encode(bytes(32)).decode().rstrip("="))
    with pytest.raises(EvidenceError, match="exactly"):
        verify_tpm_evidence({"kind": "tpm", "attest": "", "signature": "", "pcrs": {}, "extra": 1}, context,
                            ak_public="", counters=None)
