"""The pure parts of cloud identity: key binding, document checks, first use, token claims."""

from __future__ import annotations

import base64
import re
from datetime import timedelta

import pytest
from asn1crypto import cms

from services.gateway.evidence.aws import FirstUse, check_first_use, verify_aws
from services.gateway.evidence.base import EvidenceError, Verified
from services.gateway.evidence.gcp import gcp_audience
from shared.crypto.cloud_binding import azure_nonce, key_digest
from tests import cloud_fixtures as fx

KEY = bytes(range(32))
CHALLENGE = "Zk9vYmFyYmF6cXV4LTAxMjM0NTY3"


def test_binding_names_the_challenge_and_the_key_and_differs_for_either():
    audience = gcp_audience(CHALLENGE, KEY)
    assert audience == f"strongroom:{CHALLENGE}:{key_digest(KEY)}" and len(key_digest(KEY)) == 64
    nonce = azure_nonce(CHALLENGE, KEY)
    assert re.fullmatch(r"[0-9a-f]{32}", nonce)
    other_key, other_challenge = bytes(range(1, 33)), CHALLENGE[::-1]
    assert len({audience, gcp_audience(other_challenge, KEY), gcp_audience(CHALLENGE, other_key)}) == 3
    assert len({nonce, azure_nonce(other_challenge, KEY), azure_nonce(CHALLENGE, other_key)}) == 3


@pytest.mark.parametrize("challenge", ["short", "has:colon-0123456789", "a" * 129, "space in it 0123456"])
def test_binding_refuses_a_challenge_that_could_blur_the_audience(challenge):
    with pytest.raises(ValueError, match="challenge"):
        gcp_audience(challenge, KEY)
    with pytest.raises(ValueError, match="challenge"):
        azure_nonce(challenge, KEY)


# --- AWS ----------------------------------------------------------------------------------


def _aws(document: bytes, signature: str | None = None, **kwargs):
    kwargs.setdefault("region_certs", fx.aws_region_certs())
    kwargs.setdefault("now", fx.NOW)
    return verify_aws(document, fx.aws_sign(document) if signature is None else signature, **kwargs)


@pytest.mark.parametrize(("signature", "reason"), [
    ("not base64 at all!", "signature is not base64"),
    ("", "signature missing or too large"),
    ("A" * 20000, "signature missing or too large"),
    (base64.b64encode(b"\x30\x03\x02\x01\x01").decode(), "malformed signature"),
])
def test_aws_refuses_a_signature_that_is_not_cms(signature, reason):
    with pytest.raises(EvidenceError) as refused:
        _aws(fx.aws_document(), signature)
    assert refused.value.reason == reason


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"accountId": "12345"}, "document field accountId missing or malformed"),
    ({"instanceId": None}, "document field instanceId missing or malformed"),
    ({"pendingTime": "yesterday"}, "document field pendingTime missing or malformed"),
    ({"availabilityZone": "us-east-1a"}, "document field availabilityZone is not in its region"),
    ({"pendingTime": "2026-12-05T08:00:00Z"}, "document pendingTime is in the future"),
])
def test_aws_refuses_a_signed_document_with_bad_fields(overrides, reason):
    with pytest.raises(EvidenceError) as refused:
        _aws(fx.aws_document(**overrides))
    assert refused.value.reason == reason


@pytest.mark.parametrize(("region", "zone"), [("us-west-2", "us-west-2-lax-1a"), ("us-gov-west-1", "us-gov-west-1b"),
                                             ("cn-north-1", "cn-north-1a")])
def test_aws_accepts_the_regions_and_zones_aws_names(region, zone):
    verified = _aws(fx.aws_document(region=region, availabilityZone=zone), fx.aws_sign(
        fx.aws_document(region=region, availabilityZone=zone), region=region), region_certs=fx.aws_region_certs(region))
    assert (verified.facts["identity"]["region"], verified.facts["identity"]["zone"]) == (region, zone)


def test_aws_refuses_a_signed_document_that_is_not_a_json_object():
    for document in (b"[1, 2]", b"\xff\xfe", b"not json"):
        with pytest.raises(EvidenceError, match=r"^document is not"):
            _aws(document)


def test_aws_refuses_when_the_pinned_certificate_is_unreadable_or_expired():
    with pytest.raises(EvidenceError, match="unreadable"):
        _aws(fx.aws_document(), region_certs={"eu-west-1": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"})
    with pytest.raises(EvidenceError, match="not valid now"):
        _aws(fx.aws_document(), now=fx.NOW + timedelta(days=3651))


def test_aws_refuses_a_detached_signature():
    document = fx.aws_document()
    der = base64.b64decode(fx.aws_sign(document))
    info = cms.ContentInfo.load(der)
    info["content"]["encap_content_info"]["content"] = None
    with pytest.raises(EvidenceError, match=r"^signature carries no document$"):
        _aws(document, base64.b64encode(info.dump(force=True)).decode())


def test_aws_accepts_a_signature_without_signed_attributes_over_the_document_itself():
    document = fx.aws_document()
    plain = fx.aws_sign(document, attributes=False)
    assert _aws(document, plain).subject == f"aws:{fx.ACCOUNT}/{fx.INSTANCE}"
    info = cms.ContentInfo.load(base64.b64decode(plain))
    assert not info["content"]["signer_infos"][0]["signed_attrs"]
    tampered = document.replace(b"t3.micro", b"t3.large")
    info["content"]["encap_content_info"]["content"] = tampered
    with pytest.raises(EvidenceError, match=r"^signature does not verify$"):
        _aws(tampered, base64.b64encode(info.dump(force=True)).decode())
    with pytest.raises(EvidenceError, match=r"^signature does not verify$"):
        _aws(document, fx.aws_sign(document, signer="stranger", attributes=False))


def _verified(pending: str = fx.PENDING) -> Verified:
    return _aws(fx.aws_document(pending=pending))


def test_first_use_enrols_once_then_only_the_holder_may_present_it_again():
    first = check_first_use(None, _verified(), device_id="dev_a")
    assert (first.allowed, first.alert, first.record) == (True, False, FirstUse(_verified().subject, fx.PENDING, "dev_a"))
    for device in (None, "dev_b"):
        refused = check_first_use(first.record, _verified(), device_id=device)
        assert (refused.allowed, refused.reason, refused.alert, refused.record) == (False, "instance already enrolled", True, None)
    restarted = check_first_use(first.record, _verified("2026-12-02T00:00:00Z"), device_id="dev_a")
    assert restarted.allowed and restarted.record.pending_time == "2026-12-02T00:00:00Z"
    backwards = check_first_use(restarted.record, _verified(), device_id="dev_a")
    assert (backwards.allowed, backwards.reason, backwards.alert) == (False, "instance launch time moved backwards", True)
    assert FirstUse.from_dict(restarted.record.as_dict()) == restarted.record


def test_first_use_of_an_unclaimed_record_refuses_every_presenter():
    """A record kept without a device (enrolment refused later) never lets anyone in again."""
    record = FirstUse(_verified().subject, fx.PENDING)
    assert not check_first_use(record, _verified(), device_id="dev_a").allowed
    with pytest.raises(ValueError, match="another instance"):
        check_first_use(FirstUse("aws:000000000000/i-00000000", fx.PENDING), _verified())
