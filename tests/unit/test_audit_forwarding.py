"""Forwarders' pure logic: filters, RFC 5425 framing, webhook signatures, backoff, spec validation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.auditsvc.forwarding import (
    backoff_seconds,
    selected,
    syslog_payload,
    verify_webhook_signature,
    webhook_body,
    webhook_signature,
)
from shared.audit_chain import ChainHead
from shared.commands_audit import ForwarderChange, ForwarderSpec
from shared.rpc import ProblemError


def _records(n: int) -> list[dict]:
    head, out = ChainHead.genesis("t1"), []
    for i in range(n):
        rec, head = head.append({
            "tenant_id": "t1", "event_id": f"e{i}", "time": "2025-01-01T00:00:00+00:00",
            "actor": {"kind": "user", "id": "u\n1", "auth": "token"}, "action": "key.created",
            "resource": {"type": "key", "id": f"k{i}"}, "outcome": "success", "reasons": ["a]b\"c"],
            "trace": [], "correlation_id": "c", "causation_id": None, "source_ip": "10.0.0.1", "details": {},
        })
        out.append(rec)
    return out


@pytest.mark.parametrize("action, patterns, expected", [
    ("key.created", [], True),
    ("key.created", ["key.*"], True),
    ("key.state_changed", ["key.created"], False),
    ("approval.requested", ["approval.#"], True),
    ("approval", ["approval.#"], True),
    ("device.enrolled", ["key.*", "approval.#"], False),
    ("a.b.c", ["a.*"], False),
    ("a.b.c", ["*.b.*"], True),
])
def test_event_type_filter_uses_topic_semantics(action, patterns, expected):
    assert selected(action, patterns) is expected


def test_syslog_payload_is_octet_counted_and_splits_back_into_messages():
    payload = syslog_payload(_records(3), "syslog", hostname="h1")
    messages, rest = [], payload
    while rest:
        length, _, rest = rest.partition(b" ")
        messages.append(rest[: int(length)])
        rest = rest[int(length):]
    assert len(messages) == 3
    assert all(m.startswith(b"<110>1 2025-01-01T00:00:00.000000Z h1 strongroom-audit - key.created [") for m in messages)
    assert [b'seq="%d"' % i in m for i, m in enumerate(messages, 1)] == [True] * 3
    assert all(b"\n" not in m for m in messages)


def test_cef_travels_as_the_syslog_msg():
    (message,) = [syslog_payload(_records(1), "cef").partition(b" ")[2]]
    assert b" key.created - CEF:0|Strongroom|Strongroom|" in message


def test_webhook_signature_covers_body_and_timestamp():
    body = webhook_body(_records(2), "jsonl", tenant_id="t1", forwarder_id="f1")
    now = datetime(2025, 1, 1, tzinfo=UTC)
    ts = str(int(now.timestamp()))
    sig = webhook_signature("whsec_x", ts, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_webhook_signature("whsec_x", ts, body, sig, now=now)
    assert not verify_webhook_signature("whsec_y", ts, body, sig, now=now)
    assert not verify_webhook_signature("whsec_x", ts, body + b" ", sig, now=now)
    assert not verify_webhook_signature("whsec_x", str(int(ts) + 1), body, sig, now=now)
    assert not verify_webhook_signature("whsec_x", ts, body, sig, now=now + timedelta(minutes=10))
    assert not verify_webhook_signature("whsec_x", "yesterday", body, sig, now=now)
    doc = json.loads(body)
    assert doc["seqs"] == [1, 2] and doc["records"][0]["metadata"]["sequence"] == 1


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_seconds(n, cap=2.0) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_destinations_never_show_a_query_string():
    spec = ForwarderSpec(name="w", kind="webhook", url="https://siem.example:8443/in?token=s3cret")
    assert spec.destination() == "https://siem.example:8443/in"
    assert ForwarderSpec(name="s", kind="syslog_tls", host="10.0.0.5", port=6514).destination() == "tls://10.0.0.5:6514"


@pytest.mark.parametrize("spec", [
    {"name": "x", "kind": "webhook", "url": "https://h/x", "host": "h"},
    {"name": "x", "kind": "syslog_tcp", "host": "h", "port": 514, "url": "https://h"},
    {"name": "x", "kind": "syslog_tcp", "host": "h", "port": 514, "tls_ca_pem": "pem"},
    {"name": "", "kind": "syslog_tcp", "host": "h", "port": 514},
    {"name": "x", "kind": "syslog_tcp", "host": "h", "port": 514, "event_types": ["key..created"]},
])
def test_inconsistent_specs_are_refused(spec):
    with pytest.raises(ProblemError):
        ForwarderSpec.model_validate(spec)


def test_changes_validate_patterns_and_refuse_destination_changes():
    assert ForwarderChange(event_types=["approval.#"]).event_types == ["approval.#"]
    with pytest.raises(ProblemError):
        ForwarderChange(event_types=["*.*!"])
    with pytest.raises(ProblemError):
        ForwarderChange.model_validate({"url": "https://elsewhere"})
