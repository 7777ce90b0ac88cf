"""Unit tests for building canonical audit records from bus events."""

import copy
import json

import pytest

from services.auditsvc.records import derive_outcome, is_secret_name, record_from_event


def event(type_="key.decided", **payload):
    base = {
        "event_id": "6f1c1d1e-0000-4000-8000-000000000001",
        "type": type_,
        "version": 1,
        "tenant_id": "t-acme",
        "occurred_at": "2024-05-01T12:00:00.123456Z",
        "correlation_id": "corr-1",
        "causation_id": None,
        "actor": {"kind": "device", "id": "dev-7", "auth": "signature"},
        "source_ip": "198.51.100.7",
    }
    base.update(payload)
    return base


def test_key_decided_deny_builds_full_record():
    trace = [{"rule": "require-tpm", "fact": "tpm.pcr7", "result": False}]
    rec = record_from_event(event(
        key_id="k-1", device_id="dev-7", request_id="req-9", effect="deny",
        reasons=["PCR7 does not match the enrolled value"], trace=trace,
    ))
    assert rec == {
        "tenant_id": "t-acme",
        "event_id": "6f1c1d1e-0000-4000-8000-000000000001",
        "event_version": 1,
        "time": "2024-05-01T12:00:00.123456Z",
        "actor": {"kind": "device", "id": "dev-7", "auth": "signature"},
        "action": "key.decided",
        "resource": {"type": "key", "id": "k-1"},
        "outcome": "denied",
        "reasons": ["PCR7 does not match the enrolled value"],
        "trace": trace,
        "correlation_id": "corr-1",
        "causation_id": None,
        "source_ip": "198.51.100.7",
        "details": {"device_id": "dev-7", "effect": "deny", "request_id": "req-9"},
    }


@pytest.mark.parametrize(("type_", "payload", "expected"), [
    ("key.decided", {"effect": "allow"}, "success"),
    ("key.decided", {"effect": "deny"}, "denied"),
    ("key.decided", {"effect": "require_approval"}, "pending"),
    ("user.login_failed", {}, "failure"),
    ("key.release_refused", {}, "failure"),
    ("approval.rejected", {}, "denied"),
    ("key.released", {}, "success"),
    ("device.enrolled", {}, "success"),
    ("key.released", {"outcome": "FAILURE"}, "failure"),
    ("key.released", {"outcome": "released"}, "success"),  # not our vocabulary: verb decides
])
def test_outcome_derivation(type_, payload, expected):
    assert derive_outcome(type_, payload) == expected
    assert record_from_event(event(type_, **payload))["outcome"] == expected


def test_unrecognised_outcome_stays_in_details_recognised_one_does_not():
    assert record_from_event(event("key.released", outcome="released"))["details"]["outcome"] == "released"
    assert "outcome" not in record_from_event(event("key.released", outcome="failure"))["details"]


@pytest.mark.parametrize(("type_", "payload", "resource"), [
    ("key.released", {"key_id": "k-1", "device_id": "d-1"}, {"type": "key", "id": "k-1"}),
    ("device.enrolled", {"device_id": "d-1"}, {"type": "device", "id": "d-1"}),
    ("policy.updated", {"policy_id": "p-1"}, {"type": "policy", "id": "p-1"}),
    ("tenant.created", {}, {"type": "tenant", "id": "t-acme"}),
    ("user.login_failed", {"username": "alice"}, {"type": "user", "id": "alice"}),
    ("approval.granted", {"request_id": "r-1"}, {"type": "approval", "id": "r-1"}),
    ("widget.frobbed", {"key_id": "k-2"}, {"type": "key", "id": "k-2"}),
    ("widget.frobbed", {}, {"type": "widget", "id": None}),
])
def test_resource_derivation(type_, payload, resource):
    assert record_from_event(event(type_, **payload))["resource"] == resource


def test_resource_id_field_is_not_repeated_in_details():
    rec = record_from_event(event("key.released", key_id="k-1", device_id="d-1"))
    assert rec["details"] == {"device_id": "d-1"}


def test_secret_named_fields_are_dropped_at_any_depth():
    rec = record_from_event(event(
        "key.released", key_id="k-1",
        secret="s", password="p", token="t", private_key="pk", plaintext="pt",
        key_material="km", passphrase="pp", share="sh", shamir_shares=["a", "b"],
        devicePrivateKey="camel", api_key="ak",
        shared_with=["ops"], token_count_note="dropped too: the name contains token",
        meta={"client_secret": "x", "note": "kept", "deep": [{"access_token": "y", "ok": 1}]},
        trace=[{"rule": "r1", "session_token": "z", "result": True}],
    ))
    dumped = json.dumps(rec)
    for leaked in ('"s"', '"p"', '"t"', '"pk"', '"pt"', '"km"', '"pp"', '"sh"', "camel", '"ak"',
                   '"x"', '"y"', '"z"'):
        assert leaked not in dumped
    assert rec["details"] == {
        "meta": {"deep": [{"ok": 1}], "note": "kept"},
        "shared_with": ["ops"],
    }
    assert rec["trace"] == [{"result": True, "rule": "r1"}]


def test_actor_auth_value_token_is_kept_only_names_are_screened():
    rec = record_from_event(event(actor={"kind": "user", "id": "u-1", "auth": "token", "token": "t0p"}))
    assert rec["actor"] == {"kind": "user", "id": "u-1", "auth": "token"}


@pytest.mark.parametrize(("name", "secret"), [
    ("secret", True), ("Password", True), ("device_private_key", True), ("privateKey", True),
    ("key_material_b64", True), ("shares", True), ("refresh-token", True), ("passphrase", True),
    ("key_id", False), ("shared_with", False), ("policy_id", False), ("auth", False),
    ("tokenizer", False), ("keyshare", False),
])
def test_is_secret_name(name, secret):
    assert is_secret_name(name) is secret


def test_missing_actor_auth_is_none_and_unknown_kind():
    rec = record_from_event(event(actor={"kind": "service", "id": "keysvc"}))
    assert rec["actor"] == {"kind": "service", "id": "keysvc", "auth": None}
    assert record_from_event(event(actor=None))["actor"] == {"kind": "unknown", "id": None, "auth": None}


def test_deterministic_and_input_untouched():
    ev = event(key_id="k-1", effect="allow", trace=[{"rule": "r", "facts": {"a": 1}}],
               z_extra=1, a_extra=2)
    before = copy.deepcopy(ev)
    first, second = record_from_event(ev), record_from_event(copy.deepcopy(ev))
    assert first == second
    assert json.dumps(first) == json.dumps(second)  # same key order too
    assert ev == before
    ev["trace"][0]["facts"]["a"] = 99  # the record must not alias the event
    assert first["trace"][0]["facts"]["a"] == 1


@pytest.mark.parametrize("field", ["event_id", "type", "tenant_id", "occurred_at"])
def test_missing_envelope_field_is_rejected(field):
    ev = event()
    del ev[field]
    with pytest.raises(ValueError, match=field):
        record_from_event(ev)


def test_single_string_reason_becomes_list():
    assert record_from_event(event(reasons="because"))["reasons"] == ["because"]
