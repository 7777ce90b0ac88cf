"""Unit tests for event contract versions: older payloads are upcast on decode (shared.events)."""

import json

from shared import events


def test_key_decided_v1_with_its_full_trace_decodes_as_v2_without_a_digest():
    v1 = {"type": "key.decided", "version": 1, "tenant_id": "ten_1", "request_id": "req_1", "device_id": "dev_1",
          "key_id": "key_1", "effect": "allow", "ephemeral_public_key": "AAAA",
          "trace": [{"policy": "pol_1", "version": 1, "rule": "r", "effect": "allow", "matched": True,
                     "conditions": [{"path": "when", "fact": "identity.region", "op": "exists", "expected": None,
                                     "actual": "eu-west-1", "result": True, "note": ""}]}]}
    decoded = events.decode_event(json.dumps(v1).encode())
    assert isinstance(decoded, events.KeyDecided)
    assert decoded.version == 2 and decoded.trace_sha256 is None
    assert decoded.trace[0]["conditions"][0]["actual"] == "eu-west-1"  # the old full trace is kept as it was


def test_key_decided_is_written_as_v2():
    decided = events.KeyDecided(tenant_id="ten_1", request_id="req_1", device_id="dev_1", key_id="key_1",
                                effect="deny", ephemeral_public_key="AAAA", trace_sha256="ab" * 32)
    again = events.decode_event(events.encode_event(decided))
    assert again == decided and again.version == 2
