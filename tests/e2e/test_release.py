"""The release walkthrough through the gateway, RabbitMQ, the four services and the store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

from shared.audit_chain import ChainHead, verify_chain

from .helpers import EU_FACTS, BareAgent, audit_records, make_tenant


async def test_policy_approved_agent_gets_the_key_and_a_denied_one_gets_reasons(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)

    status, out, key = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200, out
    assert len(key) == 32 and out["key_version"] == 1 and out["algorithm"] == "AES-256"

    # The same key again: the same data key, sealed afresh to a new ephemeral key.
    status, again, key_again = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and key_again == key and again["sealed_key"] != out["sealed_key"]

    status, denied, _ = await agent.request(tenant.key_id, {"identity": {"region": "us-east-1"}, "integrity": {"firewall_enabled": True}})
    assert status == 403
    assert any("identity.region" in r for r in denied["reasons"]), denied
    assert "us-east-1" not in json.dumps(denied)  # "reasons" disclosure names the fact, not the values

    records = await audit_records(tenant.admin, expect_at_least=15)
    actions = [r["action"] for r in records]
    assert actions.count("key.released") == 2
    assert actions.count("key.requested") == 3
    decided = [r for r in records if r["action"] == "key.decided"]
    assert [r["outcome"] for r in decided] == ["success", "success", "denied"]
    # The audit record keeps the compact trace: the rule that failed and the condition, with values...
    assert decided[-1]["trace"] == [{
        "policy": tenant.policy_id, "version": 1, "rule": "eu-only", "effect": "allow", "matched": False,
        "conditions": [{"path": "when.all[0]", "fact": "identity.region", "op": "in",
                        "expected": ["eu-west-1", "eu-central-1"], "actual": "us-east-1", "result": False, "note": "",
                        "provenance": "claimed", "required": "claimed"}],
    }]
    assert decided[0]["trace"] == [{"policy": tenant.policy_id, "version": 1, "rule": "eu-only", "effect": "allow",
                                    "matched": True}]  # an allow names its rule; its values are in the full trace
    # ...and commits to the full trace, which policysvc keeps and the decision API shows.
    for record in (decided[0], decided[-1]):
        status, decision, _ = await tenant.admin.call("GET", f"/v1/decisions/{record['details']['request_id']}")
        assert status == 200, decision
        assert hashlib.sha256(decision["trace_record"].encode()).hexdigest() == record["details"]["trace_sha256"]
        assert decision["trace_verified"] is True
        assert [c["fact"] for c in decision["trace"][0]["conditions"]] == (
            ["identity.region", "integrity.firewall_enabled"] if record is decided[0] else ["identity.region"])
    result = verify_chain(records, start=ChainHead.genesis(tenant.tenant_id))
    assert result.ok, result


async def test_rotated_key_releases_the_new_version_and_old_versions_on_request(api):
    tenant = await make_tenant(api, algorithm="AES-128")
    agent = await BareAgent.enroll(tenant, api)
    _, _, first = await agent.request(tenant.key_id, EU_FACTS)
    status, rotated, _ = await tenant.admin.call("POST", f"/v1/keys/{tenant.key_id}/rotate", json={"reason": "yearly"})
    assert status == 200 and rotated["latest_version"] == 2
    status, out, second = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and out["key_version"] == 2 and len(second) == 16 and second != first
    status, out, old = await agent.request(tenant.key_id, EU_FACTS, key_version=1)
    assert status == 200 and out["key_version"] == 1 and old == first


async def test_suspended_key_is_refused(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    status, _, _ = await tenant.admin.call("POST", f"/v1/keys/{tenant.key_id}/state", json={"action": "suspend", "reason": "incident"})
    assert status == 200
    status, out, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 409 and "suspended" in out["detail"]


async def test_tampered_body_is_refused_and_audited(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    body, _ = agent.request_body(tenant.key_id, EU_FACTS)
    headers = agent.signed(body)
    tampered = body.replace(b"eu-west-1", b"eu-west-2")
    status, out, ctype = await agent.api.call("POST", "/v1/agent/key-requests", data=tampered, headers=headers)
    assert status == 401 and ctype.startswith("application/problem+json")
    assert out["detail"] == "missing or invalid credentials"
    records = await audit_records(tenant.admin, expect_at_least=7)
    denied = [r for r in records if r["action"] == "access.denied"]
    assert denied and "digest" in json.dumps(denied[0]["details"]).lower()


async def test_replayed_request_is_refused(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    body, _ = agent.request_body(tenant.key_id, EU_FACTS)
    headers = agent.signed(body)
    first, _, _ = await agent.api.call("POST", "/v1/agent/key-requests", data=body, headers=headers)
    replay, out, _ = await agent.api.call("POST", "/v1/agent/key-requests", data=body, headers=headers)
    assert (first, replay) == (200, 401)


async def test_stale_signature_is_refused(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    body, _ = agent.request_body(tenant.key_id, EU_FACTS)
    headers = agent.signed(body, created=int(time.time()) - 3600)
    status, _, _ = await agent.api.call("POST", "/v1/agent/key-requests", data=body, headers=headers)
    assert status == 401


async def test_revoked_device_is_refused(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200
    status, out, _ = await tenant.admin.call("POST", f"/v1/devices/{agent.device_id}/revoke", json={"reason": "decommissioned"})
    assert status == 200 and out["status"] == "revoked"
    status, _, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 401


async def test_unknown_key_is_404(api):
    tenant = await make_tenant(api, policy={"name": "all", "rules": [{"id": "any", "effect": "allow", "when": {"fact": "identity.region", "op": "exists"}}]})
    agent = await BareAgent.enroll(tenant, api)
    status, out, _ = await agent.request("key_doesnotexist", EU_FACTS)
    assert status == 404, out
    status, out, _ = await tenant.admin.call("GET", "/v1/keys/key_doesnotexist")
    assert status == 404


async def test_tenants_see_nothing_of_each_other(api):
    a = await make_tenant(api, "alpha")
    b = await make_tenant(api, "beta")
    agent_a = await BareAgent.enroll(a, api)
    agent_b = await BareAgent.enroll(b, api)
    # Operators of B probing A's resources get 404, exactly as for ids that never existed.
    for path in (f"/v1/keys/{a.key_id}", f"/v1/policies/{a.policy_id}", f"/v1/devices/{agent_a.device_id}"):
        status, out, _ = await b.admin.call("GET", path)
        assert status == 404, (path, out)
    status, out, _ = await b.admin.call("POST", f"/v1/devices/{agent_a.device_id}/revoke", json={"reason": "x"})
    assert status == 404
    status, out, _ = await b.admin.call("POST", f"/v1/keys/{a.key_id}/rotate", json={})
    assert status == 404
    # B's agent asking for A's key: B's policy does not know it, and custody does not either.
    status, out, _ = await agent_b.request(a.key_id, EU_FACTS)
    assert status in (403, 404), out
    status, keys, _ = await b.admin.call("GET", "/v1/keys")
    assert [k["key_id"] for k in keys["items"]] == [b.key_id]
    records = await audit_records(b.admin, expect_at_least=5)
    assert all(r["tenant_id"] == b.tenant_id for r in records)


async def test_bootstrap_credential_is_provider_only(api):
    tenant = await make_tenant(api)
    status, _, _ = await api.call("GET", "/v1/keys")
    assert status == 401  # the bootstrap credential is disabled once the first admin exists
    status, _, _ = await tenant.admin.call("POST", "/v1/tenants", json={"name": "sneaky"})
    assert status == 403
    status, _, _ = await api.as_("sr_pat_not-a-real-token").call("GET", "/v1/keys")
    assert status == 401


async def test_concurrent_releases_all_complete(api):
    tenant = await make_tenant(api)
    agents = [await BareAgent.enroll(tenant, api, f"vm-{i}") for i in range(4)]
    results = await asyncio.gather(*(a.request(tenant.key_id, EU_FACTS) for a in agents for _ in range(5)))
    assert [r[0] for r in results] == [200] * 20
    assert len({r[2] for r in results}) == 1
