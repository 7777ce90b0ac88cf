"""AWS: the agent reads its identity through IMDSv2 from a local metadata server; the gateway's
verifier checks the `rsa2048` CMS signature against the pinned region certificate, and the
first-use rule lets an instance enrol once."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from agent.cloud import CloudMetadataError, fetch_evidence
from services.gateway.evidence.aws import FirstUse, check_first_use, verify_aws
from services.gateway.evidence.base import EvidenceError
from tests import cloud_fixtures as fx
from tests.cloud_metadata import AwsImds

CHALLENGE, PUBLIC_KEY = "c" * 32, bytes(range(32))


@pytest.fixture
async def imds():
    server = AwsImds()
    await server.start()
    yield server
    await server.stop()


async def _fetched(imds: AwsImds) -> dict[str, str]:
    return await fetch_evidence("aws", challenge=CHALLENGE, public_key=PUBLIC_KEY, base_url=imds.url)


def _verify(evidence: dict[str, str], **certs: str):
    region_certs = certs or fx.aws_region_certs("eu-west-1", "us-east-1")
    return verify_aws(evidence["document"].encode(), evidence["rsa2048"], region_certs=region_certs, now=fx.NOW)


async def test_agent_fetches_through_imdsv2_and_the_document_verifies(imds):
    evidence = await _fetched(imds)
    assert [(m, p.rsplit("/", 1)[1], live) for m, p, live in imds.requests] == [
        ("PUT", "token", False), ("GET", "document", True), ("GET", "rsa2048", True)]
    verified = _verify(evidence)
    assert verified.provenance == "cloud"
    assert verified.subject == f"aws:{fx.ACCOUNT}/{fx.INSTANCE}"
    assert verified.facts["identity"] == {
        "cloud": "aws", "account_id": fx.ACCOUNT, "instance_id": fx.INSTANCE, "region": "eu-west-1",
        "zone": "eu-west-1a", "image_id": "ami-0abcdef1234567890", "instance_type": "t3.micro",
        "pending_time": fx.PENDING}


async def test_a_document_read_without_a_live_session_token_is_refused_and_the_agent_says_so(imds):
    imds.issue_live_tokens = False
    with pytest.raises(CloudMetadataError, match=r"^AWS identity document: the metadata service answered HTTP 401$"):
        await _fetched(imds)


async def test_an_unreachable_metadata_service_fails_fast_and_clearly(imds):
    url = imds.url
    await imds.stop()
    with pytest.raises(CloudMetadataError, match=r"^AWS IMDSv2 token: the metadata service is unreachable"):
        await fetch_evidence("aws", challenge=CHALLENGE, public_key=PUBLIC_KEY, base_url=url, timeout=1.0)


class SilentImds(AwsImds):
    """Accepts the connection, never answers: a metadata service that hangs."""

    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()

    async def _token(self, request):
        await self.released.wait()


async def test_a_hanging_metadata_service_fails_within_the_short_timeout():
    server = SilentImds()
    await server.start()
    try:
        started = time.monotonic()
        with pytest.raises(CloudMetadataError, match=r"^AWS IMDSv2 token: the metadata service is unreachable \(TimeoutError\)$"):
            await fetch_evidence("aws", challenge=CHALLENGE, public_key=PUBLIC_KEY, base_url=server.url, timeout=0.5)
        assert time.monotonic() - started < 3
    finally:
        server.released.set()
        await server.stop()


async def test_the_agent_names_only_the_clouds_it_knows():
    with pytest.raises(ValueError, match="cloud must be aws, gcp or azure"):
        await fetch_evidence("openstack", challenge=CHALLENGE, public_key=PUBLIC_KEY)


async def test_a_tampered_document_is_refused(imds):
    imds.document = imds.document.replace(fx.INSTANCE.encode(), b"i-0fff1234def567890")
    with pytest.raises(EvidenceError, match=r"^document does not match its signature$"):
        _verify(await _fetched(imds))


async def test_a_document_whose_signed_copy_was_tampered_to_match_is_refused(imds):
    """Both the document and the content inside the signature altered alike: the digest no longer matches."""
    der = bytearray(base64.b64decode(imds.rsa2048))
    at = der.find(fx.INSTANCE.encode())
    der[at:at + len(fx.INSTANCE)] = b"i-0fff1234def567890"
    imds.rsa2048 = base64.b64encode(bytes(der)).decode()
    imds.document = imds.document.replace(fx.INSTANCE.encode(), b"i-0fff1234def567890")
    with pytest.raises(EvidenceError, match=r"^document does not match its signature$"):
        _verify(await _fetched(imds))


async def test_a_document_signed_by_another_key_is_refused(imds):
    imds.rsa2048 = fx.aws_sign(imds.document, signer="stranger")
    with pytest.raises(EvidenceError, match=r"^signature does not verify$"):
        _verify(await _fetched(imds))


async def test_a_document_signed_by_another_regions_key_is_refused(imds):
    imds.rsa2048 = fx.aws_sign(imds.document, signer="us-east-1")
    with pytest.raises(EvidenceError, match=r"^signature does not verify$"):
        _verify(await _fetched(imds))


async def test_a_document_from_a_region_with_no_pinned_certificate_is_refused(imds):
    imds.document = fx.aws_document(region="ap-south-2")
    imds.rsa2048 = fx.aws_sign(imds.document, region="ap-south-2")
    with pytest.raises(EvidenceError, match=r"^unknown region$"):
        _verify(await _fetched(imds))


async def test_the_same_document_enrols_once_and_a_second_enrolment_is_refused_with_an_alert(imds):
    first = _verify(await _fetched(imds))
    decision = check_first_use(None, first, device_id="dev_1")
    assert decision.allowed and decision.record == FirstUse(first.subject, fx.PENDING, "dev_1")
    replayed = _verify(await _fetched(imds))  # lifted from the VM and presented by another enrolment
    refused = check_first_use(decision.record, replayed, device_id="dev_2")
    assert (refused.allowed, refused.reason, refused.alert) == (False, "instance already enrolled", True)
    again = check_first_use(decision.record, replayed)
    assert (again.allowed, again.alert) == (False, True)
    assert check_first_use(decision.record, replayed, device_id="dev_1").allowed  # its holder, presenting it again


async def test_an_older_document_after_a_restart_is_refused_with_an_alert(imds):
    newer = fx.aws_document(pending="2026-12-03T08:00:00Z")
    imds.document, imds.rsa2048 = newer, fx.aws_sign(newer)
    record = check_first_use(None, _verify(await _fetched(imds)), device_id="dev_1").record
    imds.document = fx.aws_document()  # the one from before the stop and start, kept by an attacker
    imds.rsa2048 = fx.aws_sign(imds.document)
    refused = check_first_use(record, _verify(await _fetched(imds)), device_id="dev_1")
    assert (refused.allowed, refused.reason, refused.alert) == (False, "instance launch time moved backwards", True)


async def test_refusals_never_echo_the_document(imds):
    imds.document = json.dumps({**json.loads(fx.aws_document()), "accountId": "<script>secret"}).encode()
    imds.rsa2048 = fx.aws_sign(imds.document)
    with pytest.raises(EvidenceError) as refused:
        _verify(await _fetched(imds))
    assert refused.value.reason == "document field accountId missing or malformed"
    assert "secret" not in str(refused.value)
