"""What the gateway does with the agent's evidence as sent: each cloud's through its verifier,
bound to the challenge and the device's key; anything else refused."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from agent.cloud import fetch_evidence
from services.gateway.evidence.base import EvidenceError
from services.gateway.evidence.cloud import BindingContext, CloudAnchors, verifiers, verify_cloud_evidence
from tests import cloud_fixtures as fx
from tests.cloud_metadata import AwsImds, AzureImds, GcpMetadata

CHALLENGE, KEY, OTHER_KEY = "challenge-0123456789abcdef", bytes(range(32)), bytes(range(1, 33))
CONTEXT = BindingContext(now=fx.NOW, public_key=base64.b64encode(KEY).decode(), challenge=CHALLENGE)
ROOT, MID, _ = fx.azure_chain()
ANCHORS = CloudAnchors(aws_region_certs=fx.aws_region_certs(), gcp_jwks=fx.gcp_jwks(),
                       azure_roots=(fx.pem(ROOT),), azure_intermediates=(fx.pem(MID),))
SERVERS = {"aws": AwsImds, "gcp": GcpMetadata, "azure": AzureImds}


@pytest.fixture(params=sorted(SERVERS))
async def evidence(request):
    server = SERVERS[request.param]()
    await server.start()
    try:
        yield await fetch_evidence(request.param, challenge=CHALLENGE, public_key=KEY, base_url=server.url)
    finally:
        await server.stop()


async def test_each_clouds_evidence_verifies_as_sent_by_the_agent(evidence):
    verified = verify_cloud_evidence(evidence, CONTEXT, anchors=ANCHORS)
    assert verified.facts["identity"]["cloud"] == evidence["kind"]
    assert verified.provenance == ("cloud" if evidence["kind"] == "aws" else "attested")
    assert verifiers(ANCHORS)[evidence["kind"]](evidence, CONTEXT) == verified


async def test_evidence_presented_for_another_key_is_refused_except_awss_which_first_use_guards(evidence):
    other = replace(CONTEXT, public_key=base64.b64encode(OTHER_KEY).decode())
    if evidence["kind"] == "aws":  # carries no binding: check_first_use refuses its second enrolment
        assert verify_cloud_evidence(evidence, other, anchors=ANCHORS)
        return
    with pytest.raises(EvidenceError, match="does not match the challenge"):
        verify_cloud_evidence(evidence, other, anchors=ANCHORS)


async def test_bound_evidence_without_a_challenge_or_key_is_refused(evidence):
    for context in (replace(CONTEXT, challenge=None), replace(CONTEXT, public_key=None),
                    replace(CONTEXT, public_key="not base64"), replace(CONTEXT, challenge="has:a:colon-0123456789")):
        if evidence["kind"] == "aws":
            assert verify_cloud_evidence(evidence, context, anchors=ANCHORS)
            continue
        with pytest.raises(EvidenceError, match=r"^evidence must answer a challenge for the device's key$"):
            verify_cloud_evidence(evidence, context, anchors=ANCHORS)


async def test_a_cloud_without_anchors_in_tenant_settings_is_refused(evidence):
    assert verifiers(CloudAnchors()) == {}
    with pytest.raises(EvidenceError, match=r"^no trust anchors configured for this kind of evidence$"):
        verify_cloud_evidence(evidence, CONTEXT, anchors=CloudAnchors())


@pytest.mark.parametrize(("evidence", "reason"), [
    ({"kind": "aws", "document": "{}"}, "aws evidence must hold exactly: kind, document, rsa2048"),
    ({"kind": "gcp", "token": 5}, "gcp evidence must hold exactly: kind, token"),
    ({"kind": "gcp", "token": "a.b.c", "extra": "x"}, "gcp evidence must hold exactly: kind, token"),
    ({"kind": "azure"}, "azure evidence must hold exactly: kind, signature"),
    ({}, "no trust anchors configured for this kind of evidence"),
    ({"kind": "openstack"}, "no trust anchors configured for this kind of evidence"),
    ({"kind": ["aws"]}, "no trust anchors configured for this kind of evidence"),
])
def test_evidence_of_the_wrong_shape_is_refused_by_name(evidence, reason):
    with pytest.raises(EvidenceError) as refused:
        verify_cloud_evidence(evidence, CONTEXT, anchors=ANCHORS)
    assert refused.value.reason == reason
