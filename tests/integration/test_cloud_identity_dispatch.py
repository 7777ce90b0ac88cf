"""What the gateway does with the agent's evidence as sent: each cloud through one entry point,
bound to the challenge and key; anything else refused."""

from __future__ import annotations

import pytest

from agent.cloud import fetch_evidence
from services.gateway.evidence.base import EvidenceError
from services.gateway.evidence.cloud import CloudAnchors, verify_cloud_evidence
from tests import cloud_fixtures as fx
from tests.cloud_metadata import AwsImds, AzureImds, GcpMetadata

CHALLENGE, KEY, OTHER_KEY = "challenge-0123456789abcdef", bytes(range(32)), bytes(range(1, 33))
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
    verified = verify_cloud_evidence(evidence, anchors=ANCHORS, challenge=CHALLENGE, public_key=KEY, now=fx.NOW)
    assert verified.facts["identity"]["cloud"] == evidence["kind"]
    assert verified.provenance == ("cloud" if evidence["kind"] == "aws" else "attested")


async def test_evidence_presented_for_another_key_is_refused_except_awss_which_first_use_guards(evidence):
    if evidence["kind"] == "aws":  # carries no binding: check_first_use refuses its second enrolment
        assert verify_cloud_evidence(evidence, anchors=ANCHORS, challenge=CHALLENGE, public_key=OTHER_KEY, now=fx.NOW)
        return
    with pytest.raises(EvidenceError, match="does not match the challenge"):
        verify_cloud_evidence(evidence, anchors=ANCHORS, challenge=CHALLENGE, public_key=OTHER_KEY, now=fx.NOW)


async def test_a_cloud_without_anchors_in_tenant_settings_is_refused(evidence):
    with pytest.raises(EvidenceError, match=r"^no .* configured$"):
        verify_cloud_evidence(evidence, anchors=CloudAnchors(), challenge=CHALLENGE, public_key=KEY, now=fx.NOW)


@pytest.mark.parametrize("evidence", [
    {}, {"kind": "openstack"}, {"kind": "aws", "document": "{}"}, {"kind": "gcp", "token": 5},
    {"kind": "gcp", "token": "a.b.c", "extra": "x"}, ["kind", "aws"],
])
def test_evidence_of_the_wrong_shape_is_refused_by_name(evidence):
    with pytest.raises(EvidenceError, match=r"^evidence must be one of: aws \{document, rsa2048\}, gcp \{token\}, azure \{signature\}$"):
        verify_cloud_evidence(evidence, anchors=ANCHORS, challenge=CHALLENGE, public_key=KEY, now=fx.NOW)


def test_a_challenge_that_cannot_bind_is_refused():
    with pytest.raises(EvidenceError, match="no valid challenge"):
        verify_cloud_evidence({"kind": "gcp", "token": "a.b.c"}, anchors=ANCHORS, challenge="x", public_key=KEY, now=fx.NOW)
