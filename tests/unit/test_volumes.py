"""Volumes without I/O: placements, the `volume.*` facts a key request gets, attachments and the
alert, registration rules, the escrow sealing, and break-glass approvals that settle no key request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.gateway import volumes as domain
from services.gateway.evidence.base import Merged
from services.gateway.views_volumes import VolumeContext, with_volume
from services.policysvc import approvals as voting
from shared import events
from shared.commands_volumes import VolumeRef
from shared.crypto import escrow
from shared.crypto.release import ReleaseError

NOW = datetime(2026, 12, 5, tzinfo=UTC)
FIELDS = {"tenant_id": "ten_1", "correlation_id": "c", "actor": events.Actor(kind="device", id="dev_home")}
HOME = {"device_id": "dev_home", "subject": "aws:111/i-home", "identity": {"instance_id": "i-home",
                                                                           "image_id": "ami-1", "provenance": "attested"}}
STRANGER = {"device_id": "dev_x", "subject": "aws:222/i-x", "identity": {"instance_id": "i-x", "image_id": "ami-1",
                                                                         "provenance": "cloud"}}
BODY = {"luks_uuid": "3F1C2A9E-5B7D-4C1E-9A2B-0D4E6F8A1B2C", "key_id": "key_1", "key_version": 2, "device": "/dev/vdb"}


def registered() -> dict:
    doc, refused = domain.registration(None, volume_id="vol_1", body=BODY, here=domain.placement(HOME), at=NOW)
    assert refused is None
    return doc


def test_placement_is_the_proved_instance_else_the_device():
    home = domain.placement(HOME)
    assert (home.instance, home.image, home.provenance) == ("aws:111/i-home", "ami-1", "attested")
    bare = domain.placement({"device_id": "dev_2"})
    assert (bare.instance, bare.image, bare.provenance) == ("device:dev_2", None, "observed")
    # A subject without recorded identity facts (enrolled before they were kept) is still cloud-proved.
    assert domain.placement({"device_id": "dev_3", "subject": "gcp:p/9"}).provenance == "cloud"


def test_facts_say_whether_the_volume_is_attached_to_its_bound_instance():
    record = registered()
    at_home = domain.volume_facts(record, "vol_1", BODY["luks_uuid"].lower(), "key_1", domain.placement(HOME))
    assert at_home["attached_to_bound_instance"] is True and at_home["attached_to_bound_image"] is True
    assert at_home["luks_uuid_matches"] is True and at_home["key_matches"] is True
    assert at_home["bound_instance"] == "aws:111/i-home" and at_home["binding_provenance"] == "attested"
    away = domain.volume_facts(record, "vol_1", "00000000-0000-0000-0000-000000000000", "key_2",
                               domain.placement(STRANGER))
    assert away["attached_to_bound_instance"] is False and away["attached_to_bound_image"] is True
    assert away["luks_uuid_matches"] is False and away["key_matches"] is False
    unknown = domain.volume_facts(None, "vol_9", None, "key_1", domain.placement(STRANGER))
    assert unknown == {"id": "vol_9", "registered": False, "instance": "aws:222/i-x", "image": "ami-1"}


def test_an_attachment_elsewhere_raises_the_alert_and_at_home_does_not():
    record = registered()
    doc, raised = domain.attachment(record, request_id="req_1", key_id="key_1", here=domain.placement(HOME),
                                    outcome="success", at=NOW, fields=FIELDS)
    assert [e.type for e in raised] == ["volume.attached"] and doc["attached_to_bound_instance"] is True
    doc, raised = domain.attachment(record, request_id="req_2", key_id="key_1", here=domain.placement(STRANGER),
                                    outcome="denied", at=NOW, fields=FIELDS)
    assert [e.type for e in raised] == ["volume.attached", "volume.attached_elsewhere"]
    alert = raised[1]
    assert isinstance(alert, events.VolumeAttachedElsewhere)
    assert (alert.bound.instance, alert.attached.instance, alert.outcome) == ("aws:111/i-home", "aws:222/i-x", "denied")
    assert doc["outcome"] == "denied" and doc["device_id"] == "dev_x"


def test_outcomes_in_the_audit_logs_words():
    base = {**FIELDS, "request_id": "r", "device_id": "d", "key_id": "k", "ephemeral_public_key": "pk"}
    assert domain.outcome_of(events.KeyDecided(**base, effect="deny")) == "denied"
    assert domain.outcome_of(events.KeyDecided(**base, effect="require_approval")) == "pending"
    assert domain.outcome_of(None) == "failure"


def test_only_the_bound_device_re_binds_and_the_uuid_is_kept_lowercase():
    record = registered()
    assert record["luks_uuid"] == BODY["luks_uuid"].lower() and record["bound"]["device_id"] == "dev_home"
    _, refused = domain.registration(record, volume_id="vol_1", body=BODY, here=domain.placement(STRANGER), at=NOW)
    assert refused and "another device" in refused
    later = NOW + timedelta(days=1)
    rebound, refused = domain.registration(record, volume_id="vol_1", body={**BODY, "key_version": 3},
                                           here=domain.placement(HOME), at=later)
    assert refused is None and rebound["registered_at"] == NOW and rebound["bound_at"] == later
    assert rebound["key_version"] == 3


def test_the_volume_root_is_the_gateways_alone():
    claimed = Merged({"identity": {"region": "eu"}, "volume": {"attached_to_bound_instance": True}},
                     {"volume.attached_to_bound_instance": "attested", "identity.region": "cloud"})
    assert "volume" not in with_volume(claimed, None).facts
    assert "volume.attached_to_bound_instance" not in with_volume(claimed, None).provenance
    here = domain.placement(STRANGER)
    context = VolumeContext(VolumeRef(volume_id="vol_1"), registered(), here,
                            domain.volume_facts(registered(), "vol_1", None, "key_1", here))
    merged = with_volume(claimed, context)
    assert merged.facts["volume"]["attached_to_bound_instance"] is False
    assert merged.provenance == {"identity.region": "cloud", "volume": "observed"}


def test_a_sealed_passphrase_opens_only_for_its_tenant_volume_and_token():
    private = X25519PrivateKey.generate()
    info = escrow.escrow_info(tenant_id="ten_1", volume_id="vol_1", escrow_token="esc_1")
    sealed = escrow.seal_b64(b"correct horse", escrow.public_key_b64(private), info=info)
    assert escrow.open_b64(sealed, private, info=info) == b"correct horse"
    for other in (escrow.escrow_info(tenant_id="ten_2", volume_id="vol_1", escrow_token="esc_1"),
                  escrow.escrow_info(tenant_id="ten_1", volume_id="vol_2", escrow_token="esc_1"),
                  escrow.recovery_info(tenant_id="ten_1", volume_id="vol_1", request_id="esc_1")):
        with pytest.raises(ReleaseError):
            escrow.open_b64(sealed, private, info=other)
    with pytest.raises(ReleaseError):
        escrow.open_b64(sealed, X25519PrivateKey.generate(), info=info)
    with pytest.raises(ValueError):
        escrow.escrow_info(tenant_id="ten\x001", volume_id="vol_1", escrow_token="esc_1")


def _recovery() -> dict:
    fields = {**FIELDS, "actor": events.Actor(kind="user", id="usr_custodian")}
    doc, announced = voting.recovery_approval(request_id="rcv_1", volume_id="vol_1", key_id="key_1", device_id="dev_home", public_key="pk",
                                              reason="host lost", approvals_required=2, expires_at=NOW + timedelta(hours=1),
                                              now=NOW, fields=fields)
    assert isinstance(announced, events.ApprovalRequested) and "host lost" in announced.reasons[0]
    return {**doc, "tenant_id": "ten_1"}


def test_a_recovery_approval_needs_two_other_people_and_settles_no_key_request():
    doc = _recovery()
    assert voting.is_recovery(doc) and doc["requested_by"] == "usr_custodian"
    with pytest.raises(voting.VoteRefused) as refused:
        voting.cast_vote(doc, person="usr_custodian", verdict="approve", comment="", now=NOW, fields=FIELDS, request_id="rpc_1")
    assert refused.value.status == 403
    first = voting.cast_vote(doc, person="alice", verdict="approve", comment="", now=NOW, fields=FIELDS, request_id="rpc_2")
    assert first.kind == "voted"
    second = voting.cast_vote({**doc, "votes": first.votes}, person="bob", verdict="approve", comment="", now=NOW,
                              fields=FIELDS, request_id="rpc_3")
    assert second.kind == "granted" and [e.type for e in second.events] == ["approval.granted"]
    denied = voting.cast_vote(doc, person="carol", verdict="deny", comment="no", now=NOW, fields=FIELDS, request_id="rpc_4")
    assert [e.type for e in denied.events] == ["approval.denied"]
    assert [e.type for e in voting.expiry(doc, correlation_id="c")] == ["approval.expired"]
