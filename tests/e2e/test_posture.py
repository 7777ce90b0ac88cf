"""Posture drift: signed heartbeats with fresh facts; a device whose facts stop satisfying the policy
that released its keys, or that goes silent, is quarantined, and released again when it passes."""

from __future__ import annotations

import json

from shared.crypto import httpsig

from .helpers import EU_FACTS, BareAgent, audit_records, audit_records_until, make_tenant

DRIFTED = {"identity": {"region": "eu-west-1"}, "integrity": {"firewall_enabled": False}}


async def beat(agent: BareAgent, facts: dict, evidence: dict | None = None):
    body = json.dumps({"facts": facts, **({"evidence": evidence} if evidence else {})}).encode()
    url = agent.api.url + "/v1/agent/heartbeat"
    headers = {"Content-Type": "application/json"}
    headers.update(httpsig.sign_request(method="POST", url=url, headers=headers, body=body,
                                        key_id=agent.key_id, private_key=agent.signing_key))
    return await agent.api.call("POST", "/v1/agent/heartbeat", data=body, headers=headers)


async def test_drifted_facts_quarantine_the_device_until_its_facts_pass_again(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200
    status, ok, _ = await beat(agent, EU_FACTS)
    assert status == 200 and ok["status"] == "active", ok

    status, out, _ = await beat(agent, DRIFTED)
    assert status == 200 and out["status"] == "quarantined"
    status, denied, _ = await agent.request(tenant.key_id, EU_FACTS)  # even with good facts in the request
    assert status == 403 and denied["reasons"] == ["device is quarantined"]
    status, posture, _ = await tenant.admin.call("GET", f"/v1/devices/{agent.device_id}/posture")
    assert status == 200 and posture["status"] == "quarantined" and posture["quarantine_cause"] == "facts"

    status, out, _ = await beat(agent, EU_FACTS)
    assert status == 200 and out["status"] == "active"
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200

    records = await audit_records(tenant.admin, expect_at_least=16)
    failed = [r for r in records if r["action"] == "device.posture_failed"]
    assert len(failed) == 1 and failed[0]["outcome"] == "failure"
    assert failed[0]["resource"] == {"type": "device", "id": agent.device_id}
    assert any("integrity.firewall_enabled" in r for r in failed[0]["reasons"])
    actions = [r["action"] for r in records]
    assert "device.quarantined" in actions and "device.quarantine_cleared" in actions


async def test_missed_heartbeats_quarantine_and_an_operator_can_clear(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    status, _, _ = await tenant.admin.call("PUT", "/v1/policy-settings", json={"heartbeat_grace_seconds": 1})
    assert status == 200
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200
    assert (await beat(agent, EU_FACTS))[0] == 200

    # policysvc's scheduler wakes when the grace period ends; wait for its audit trail.
    records = await audit_records_until(
        tenant.admin, lambda rs: any(r["action"] == "device.quarantined" for r in rs), timeout=60)
    failed = [r for r in records if r["action"] == "device.posture_failed"]
    assert failed and failed[0]["details"]["cause"] == "heartbeat_missed"
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 403

    status, bad, _ = await tenant.admin.call("POST", f"/v1/devices/{agent.device_id}/clear-quarantine", json={})
    assert status == 422 and bad["field"] == "reason"
    status, cleared, _ = await tenant.admin.call(
        "POST", f"/v1/devices/{agent.device_id}/clear-quarantine", json={"reason": "checked by hand"})
    assert status == 200 and cleared["status"] == "active"
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200
    status, again, _ = await tenant.admin.call(
        "POST", f"/v1/devices/{agent.device_id}/clear-quarantine", json={"reason": "twice"})
    assert status == 404


async def test_heartbeats_are_checked_against_the_policy_version_that_released_the_key(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200  # released under version 1 (eu-west-1 allowed)
    status, _, _ = await tenant.admin.call("PUT", f"/v1/policies/{tenant.policy_id}", json={
        "name": "eu-volumes", "targets": {"devices": "all", "keys": "all"}, "rules": [
            {"id": "central-only", "effect": "allow",
             "when": {"fact": "identity.region", "op": "equals", "value": "eu-central-1"}}]})
    assert status == 200
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 403  # version 2 governs new releases...

    status, out, _ = await beat(agent, EU_FACTS)  # ...but the key it holds was released under version 1
    assert status == 200 and out["status"] == "active", out

    status, out, _ = await beat(agent, DRIFTED)
    assert status == 200 and out["status"] == "quarantined"
    records = await audit_records_until(tenant.admin, lambda rs: any(r["action"] == "device.posture_failed" for r in rs))
    (failed,) = [r for r in records if r["action"] == "device.posture_failed"]
    assert any("rule eu-only" in r and "integrity.firewall_enabled" in r for r in failed["reasons"]), failed["reasons"]


async def test_a_replayed_heartbeat_is_refused_and_one_spelled_otherwise_still_verifies(api):
    """Heartbeats signed as the agent signs them are verified without the library's parser: the
    replay is refused and audited as before, and a signature spelled in another form RFC 9421
    allows (a space after a parameter's semicolon) is still verified, by the library."""
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    # A released key first, as a device holds before it beats: policysvc learns of the device from
    # its enrolment event, which a heartbeat sent at once can overtake on a busy box (404).
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200
    body = json.dumps({"facts": EU_FACTS}).encode()
    url = agent.api.url + "/v1/agent/heartbeat"
    headers = {"Content-Type": "application/json"}
    headers.update(httpsig.sign_request(method="POST", url=url, headers=headers, body=body,
                                        key_id=agent.key_id, private_key=agent.signing_key))

    first, answer, _ = await agent.api.call("POST", "/v1/agent/heartbeat", data=body, headers=headers)
    replay, refused, _ = await agent.api.call("POST", "/v1/agent/heartbeat", data=body, headers=headers)
    assert (first, answer["status"]) == (200, "active") and replay == 401, refused
    records = await audit_records_until(tenant.admin, lambda rs: any(
        r["action"] == "access.denied" and "replayed nonce" in json.dumps(r["details"]) for r in rs))
    assert records

    respelled = {"Content-Type": "application/json"}
    respelled.update(httpsig.sign_request(method="POST", url=url, headers=respelled, body=body,
                                          key_id=agent.key_id, private_key=agent.signing_key))
    respelled["Signature-Input"] = respelled["Signature-Input"].replace(";alg=", "; alg=", 1)
    assert httpsig._canonical_signature("POST", url, respelled) is None
    status, out, _ = await agent.api.call("POST", "/v1/agent/heartbeat", data=body, headers=respelled)
    assert (status, out["status"]) == (200, "active"), out
