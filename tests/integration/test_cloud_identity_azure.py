"""Azure: the agent asks a local IMDS for its attested document with a nonce bound to the
server's challenge and its own key; the gateway's verifier chains the signer to the roots the
tests minted and checks the nonce."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from agent.cloud import CloudMetadataError, fetch_evidence
from services.gateway.evidence.azure import azure_nonce, verify_azure
from services.gateway.evidence.base import EvidenceError
from tests import cloud_fixtures as fx
from tests.cloud_metadata import AzureImds

CHALLENGE, OTHER_CHALLENGE = "challenge-0123456789abcdef", "challenge-fedcba9876543210"
KEY, OTHER_KEY = bytes(range(32)), bytes(range(1, 33))


@pytest.fixture
async def imds():
    server = AzureImds()
    await server.start()
    yield server
    await server.stop()


async def _signature(imds: AzureImds, *, public_key: bytes = KEY) -> str:
    evidence = await fetch_evidence("azure", challenge=CHALLENGE, public_key=public_key, base_url=imds.url)
    assert evidence["kind"] == "azure"
    return evidence["signature"]


def _verify(signature: str, *, challenge: str = CHALLENGE, public_key: bytes = KEY, now=fx.NOW, label: str = "azure"):
    root, intermediate, _ = fx.azure_chain(label)
    return verify_azure(signature, roots=[fx.pem(root)], intermediates=[fx.pem(intermediate)],
                        nonce=azure_nonce(challenge, public_key), now=now)


async def test_the_agent_sends_a_nonce_bound_to_the_challenge_and_its_key_and_the_document_verifies(imds):
    verified = _verify(await _signature(imds))
    assert imds.nonces == [azure_nonce(CHALLENGE, KEY)] and len(imds.nonces[0]) == 32
    assert verified.provenance == "attested"
    assert verified.subject == f"azure:{fx.SUBSCRIPTION}/{fx.VM_ID}"
    assert verified.facts["identity"] == {"cloud": "azure", "account_id": fx.SUBSCRIPTION, "instance_id": fx.VM_ID,
                                          "sku": "22_04-lts-gen2", "created_on": fx.NOW.isoformat()}


async def test_the_agent_reports_a_refused_request_by_its_status(imds):
    with pytest.raises(CloudMetadataError, match=r"^Azure attested document: the metadata service answered HTTP 404$"):
        await fetch_evidence("azure", challenge=CHALLENGE, public_key=KEY, base_url=imds.url + "/x")


async def test_a_document_bound_to_another_key_is_refused(imds):
    lifted = await _signature(imds, public_key=OTHER_KEY)
    with pytest.raises(EvidenceError, match=r"^document nonce does not match the challenge$"):
        _verify(lifted)


async def test_a_document_replayed_against_a_new_challenge_is_refused(imds):
    signature = await _signature(imds)
    with pytest.raises(EvidenceError, match=r"^document nonce does not match the challenge$"):
        _verify(signature, challenge=OTHER_CHALLENGE)


async def test_a_tampered_document_is_refused(imds):
    der = bytearray(base64.b64decode(await _signature(imds)))
    at = der.find(fx.VM_ID.encode())
    der[at] = ord("1")
    with pytest.raises(EvidenceError, match=r"^document does not match its signature$"):
        _verify(base64.b64encode(bytes(der)).decode())


async def test_a_signer_chained_to_another_root_is_refused(imds):
    imds.sign = lambda nonce: fx.azure_sign(fx.azure_document(nonce), label="rogue")
    with pytest.raises(EvidenceError, match=r"^signer does not chain to a trusted root$"):
        _verify(await _signature(imds))


async def test_a_document_signed_by_a_key_other_than_the_carried_certificate_is_refused(imds):
    leaf = fx.azure_chain()[2]
    imds.sign = lambda nonce: fx.cms_sign(fx.azure_document(nonce), leaf, fx.rsa_key("rogue:leaf"), with_certs=True)
    with pytest.raises(EvidenceError, match=r"^signature does not verify$"):
        _verify(await _signature(imds))


async def test_a_document_past_its_expiry_is_refused(imds):
    signature = await _signature(imds)
    assert _verify(signature, now=fx.NOW + timedelta(hours=5))
    with pytest.raises(EvidenceError, match=r"^document is not valid now$"):
        _verify(signature, now=fx.NOW + timedelta(hours=7))


async def test_the_agent_refuses_a_reply_that_is_not_a_pkcs7_document(imds):
    imds.sign = lambda nonce: 42
    with pytest.raises(CloudMetadataError, match=r"^Azure attested document: the reply holds no PKCS#7 signature$"):
        await _signature(imds)
