"""GCP: the agent asks a local metadata server for its identity token with an audience bound to
the server's challenge and its own key; the gateway's verifier checks it against the JWKS the
tests minted."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta

import pytest
from joserfc import jwt

from agent.cloud import CloudMetadataError, fetch_evidence
from services.gateway.evidence.base import EvidenceError
from services.gateway.evidence.gcp import gcp_audience, verify_gcp
from tests import cloud_fixtures as fx
from tests.cloud_metadata import GcpMetadata

CHALLENGE, OTHER_CHALLENGE = "challenge-0123456789abcdef", "challenge-fedcba9876543210"
KEY, OTHER_KEY = bytes(range(32)), bytes(range(1, 33))


@pytest.fixture
async def metadata():
    server = GcpMetadata()
    await server.start()
    yield server
    await server.stop()


async def _token(metadata: GcpMetadata, *, public_key: bytes = KEY, challenge: str = CHALLENGE) -> str:
    evidence = await fetch_evidence("gcp", challenge=challenge, public_key=public_key, base_url=metadata.url)
    assert evidence["kind"] == "gcp"
    return evidence["token"]


def _verify(token: str, *, challenge: str = CHALLENGE, public_key: bytes = KEY, now=fx.NOW, jwks=None):
    return verify_gcp(token, jwks=jwks or fx.gcp_jwks("gcp-0", "gcp-1"), audience=gcp_audience(challenge, public_key), now=now)


async def test_the_agent_asks_for_an_audience_bound_to_the_challenge_and_its_key_and_the_token_verifies(metadata):
    verified = _verify(await _token(metadata))
    assert metadata.audiences == [f"strongroom:{CHALLENGE}:" + hashlib.sha256(KEY).hexdigest()]
    assert verified.provenance == "attested"
    assert verified.subject == "gcp:strongroom-test/4567890123456789"
    identity = verified.facts["identity"]
    assert (identity["cloud"], identity["account_id"], identity["region"], identity["zone"], identity["instance_id"]) == (
        "gcp", "strongroom-test", "europe-west1", "europe-west1-b", "4567890123456789")
    assert (identity["project_number"], identity["instance_name"]) == ("987654321", "vm-1")


async def test_the_agent_refuses_a_reply_without_the_metadata_flavor_header(metadata):
    metadata.flavor_header = False
    with pytest.raises(CloudMetadataError, match=r"^GCP identity token: the reply lacks Metadata-Flavor: Google$"):
        await _token(metadata)


async def test_the_agent_reports_an_http_error_by_its_status_only(metadata):
    with pytest.raises(CloudMetadataError, match=r"^GCP identity token: the metadata service answered HTTP 404$"):
        await fetch_evidence("gcp", challenge=CHALLENGE, public_key=KEY, base_url=metadata.url + "/elsewhere")


async def test_a_token_signed_by_a_key_outside_the_configured_jwks_is_refused(metadata):
    metadata.token_for = lambda audience: fx.gcp_token(audience, kid="gcp-rogue")
    with pytest.raises(EvidenceError, match=r"^identity token signature does not verify$"):
        _verify(await _token(metadata))


async def test_a_token_signed_by_a_stranger_under_a_trusted_key_id_is_refused(metadata):
    stranger = fx.gcp_key("gcp-rogue")
    metadata.token_for = lambda audience: jwt.encode(
        {"alg": "RS256", "kid": "gcp-1"}, fx.gcp_claims(audience), stranger)
    with pytest.raises(EvidenceError, match=r"^identity token signature does not verify$"):
        _verify(await _token(metadata))


async def test_a_tampered_token_is_refused(metadata):
    header, payload, signature = (await _token(metadata)).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["google"]["compute_engine"]["instance_id"] = "1"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(EvidenceError, match=r"^identity token signature does not verify$"):
        _verify(f"{header}.{forged}.{signature}")


async def test_an_expired_token_is_refused(metadata):
    token = await _token(metadata)
    assert _verify(token, now=fx.NOW + timedelta(minutes=59))
    with pytest.raises(EvidenceError, match=r"^identity token expired$"):
        _verify(token, now=fx.NOW + timedelta(hours=1, minutes=2))


async def test_a_token_for_another_audience_is_refused(metadata):
    metadata.token_for = lambda audience: fx.gcp_token("https://example.com/other-service")
    with pytest.raises(EvidenceError, match=r"^identity token audience does not match the challenge$"):
        _verify(await _token(metadata))


async def test_a_token_replayed_against_a_new_challenge_is_refused(metadata):
    token = await _token(metadata)
    with pytest.raises(EvidenceError, match=r"^identity token audience does not match the challenge$"):
        _verify(token, challenge=OTHER_CHALLENGE)


async def test_a_token_bound_to_another_agents_key_cannot_enrol_this_one(metadata):
    lifted = await _token(metadata, public_key=OTHER_KEY)  # fetched on another VM, by an agent holding OTHER_KEY
    with pytest.raises(EvidenceError, match=r"^identity token audience does not match the challenge$"):
        _verify(lifted, public_key=KEY)
