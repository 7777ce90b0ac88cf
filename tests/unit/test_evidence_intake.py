"""The gateway's evidence intake: the registry, merging verified facts over claimed ones, and the
``signed`` verifier (services/gateway/evidence)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.gateway import evidence
from services.gateway.evidence import signed
from services.gateway.evidence.base import EvidenceContext, EvidenceError, Verified, merge, with_observed
from services.gateway.settings import GatewaySettings
from shared.provenance import GATEWAY_OBSERVED

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
ISSUER = Ed25519PrivateKey.generate()
DEVICE = Ed25519PrivateKey.generate()


def raw(key) -> str:
    return base64.b64encode(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw)).decode()


CONTEXT = EvidenceContext(tenant_id="ten_1", now=NOW, device_id="dev_1", public_key=raw(DEVICE))
PROVED = {"identity": {"cloud": "aws", "region": "eu-west-1", "account_id": "1234"}}


def document(facts=PROVED, *, issuer=ISSUER, **claims) -> dict:
    body = json.dumps({"facts": facts, "public_key": raw(DEVICE), "subject": "aws:1234/i-1", **claims}).encode()
    return {"kind": "signed", "document": base64.b64encode(body).decode(),
            "signature": base64.b64encode(issuer.sign(body)).decode()}


def registry():
    return evidence.registry(GatewaySettings(evidence_signers=raw(ISSUER)))


# --- merging ---

def test_verified_facts_win_are_marked_and_a_contradicting_claim_is_recorded():
    claimed = {"identity": {"region": "us-east-1", "hostname": "web-1"}, "integrity": {"firewall_enabled": True}}
    merged = merge(claimed, Verified(PROVED, "cloud", "aws:1234/i-1"))
    assert merged.facts["identity"] == {"region": "eu-west-1", "hostname": "web-1", "cloud_provider": "aws",
                                        "account": "1234"}  # aliases become the names policies test
    assert merged.provenance == {"identity.cloud_provider": "cloud", "identity.region": "cloud",
                                 "identity.account": "cloud"}
    assert merged.contradicted == ("identity.region",)
    assert claimed["identity"]["region"] == "us-east-1"  # the caller's facts are untouched


def test_claims_stay_claimed_and_evidence_cannot_speak_for_the_gateway():
    claimed = {"identity": {"region": "eu-west-1"}, "observed": {"source_ip": "10.9.9.9"}}
    merged = merge(claimed, Verified({"observed": {"source_ip": "10.1.1.1"}, "identity": {"device_id": "dev_x"}},
                                     "attested"))
    final = with_observed(merged, {"source_ip": "192.0.2.1"}, "dev_1")
    assert final.facts["observed"] == {"source_ip": "192.0.2.1"}
    assert final.facts["identity"]["device_id"] == "dev_1"
    assert final.provenance == GATEWAY_OBSERVED  # the agent's region is claimed: absent from the map
    assert merge(claimed, None).provenance == {}


def test_a_verified_object_is_marked_leaf_by_leaf_and_a_claimed_scalar_in_its_way_is_replaced():
    merged = merge({"integrity": {"attestation": "trust me"}},
                   Verified({"integrity": {"attestation": {"pcr7": "ab", "secure_boot": True}}}, "attested"))
    assert merged.facts["integrity"]["attestation"] == {"pcr7": "ab", "secure_boot": True}
    assert merged.provenance == {"integrity.attestation.pcr7": "attested", "integrity.attestation.secure_boot": "attested"}


# --- the registry ---

def test_only_configured_kinds_are_registered():
    assert evidence.registry(GatewaySettings()) == {}
    assert set(registry()) == {"signed"}


def test_check_refuses_unknown_kinds_and_contains_a_verifier_that_breaks():
    with pytest.raises(EvidenceError) as caught:
        evidence.check({"kind": "tpm"}, registry(), CONTEXT)
    assert caught.value.reason == "unknown evidence kind"
    with pytest.raises(EvidenceError, match="unknown evidence kind"):
        evidence.check({"kind": ["signed"]}, registry(), CONTEXT)

    def broken(evidence, context):
        raise IndexError("parser bug on hostile input: secret-ish detail")

    with pytest.raises(EvidenceError) as caught:
        evidence.check({"kind": "x"}, {"x": broken}, CONTEXT)
    assert caught.value.reason == "malformed evidence"

    def claims_only(evidence, context):
        return Verified({"identity": {"region": "eu-west-1"}}, "claimed")  # type: ignore[arg-type]

    with pytest.raises(EvidenceError):
        evidence.check({"kind": "x"}, {"x": claims_only}, CONTEXT)


# --- signed evidence ---

def test_signed_evidence_from_a_trusted_issuer_bound_to_the_device_proves_cloud_facts():
    verified = evidence.check(document(expires_at="2027-01-01T00:00:00+00:00"), registry(), CONTEXT)
    assert verified == Verified(PROVED, "cloud", "aws:1234/i-1")


@pytest.mark.parametrize("evidence_doc, reason", [
    (document(issuer=Ed25519PrivateKey.generate()), "not signed by a trusted issuer"),
    (document(public_key=raw(Ed25519PrivateKey.generate())), "evidence is bound to another device"),
    (document(expires_at="2026-12-05T08:59:59+00:00"), "evidence has expired"),
    (document(expires_at="next tuesday"), "evidence has expired"),
    (document(facts=["not", "an", "object"]), "malformed signed evidence"),
    ({"kind": "signed", "document": "%%%", "signature": "AA=="}, "malformed signed evidence"),
    ({"kind": "signed", "document": base64.b64encode(b"{}").decode()}, "malformed signed evidence"),
])
def test_signed_evidence_that_proves_nothing_is_refused_with_a_generic_reason(evidence_doc, reason):
    with pytest.raises(EvidenceError) as caught:
        evidence.check(evidence_doc, registry(), CONTEXT)
    assert caught.value.reason == reason


def test_a_tampered_document_fails_its_signature():
    good = document()
    body = json.loads(base64.b64decode(good["document"]))
    body["facts"]["identity"]["region"] = "us-east-1"
    good["document"] = base64.b64encode(json.dumps(body).encode()).decode()
    with pytest.raises(EvidenceError, match="not signed by a trusted issuer"):
        signed.verify(good, CONTEXT, signers=signed.trusted_signers(raw(ISSUER)))


def test_without_a_device_key_nothing_is_bound():
    unbound = EvidenceContext(tenant_id="ten_1", now=NOW)
    with pytest.raises(EvidenceError, match="bound to another device"):
        evidence.check(document(), registry(), unbound)
