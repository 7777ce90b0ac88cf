"""Dry-run of a candidate policy over given and recorded requests: decisions under both, and the
devices and keys that would gain or lose access; nothing is released, recorded or published."""

from __future__ import annotations

from .helpers import ALLOW_EU, EU_FACTS, BareAgent, audit_records, make_tenant

US_FACTS = {"identity": {"region": "us-east-1"}, "integrity": {"firewall_enabled": True}}


async def test_replay_of_recorded_requests_shows_who_gains_and_loses_access(api):
    tenant = await make_tenant(api)
    eu = await BareAgent.enroll(tenant, api, name="vm-eu")
    us = await BareAgent.enroll(tenant, api, name="vm-us")
    assert (await eu.request(tenant.key_id, EU_FACTS))[0] == 200
    assert (await us.request(tenant.key_id, US_FACTS))[0] == 403

    us_only = {**ALLOW_EU, "rules": [{"id": "us-only", "effect": "allow",
                                      "when": {"fact": "identity.region", "op": "equals", "value": "us-east-1"}}]}
    status, diff, _ = await tenant.admin.call(
        "POST", "/v1/policies/simulate", json={"policy": us_only, "policy_id": tenant.policy_id, "recorded_days": 1})
    assert status == 200, diff
    assert diff["requests"] == 2 and diff["changed"] == 2
    assert diff["gained"] == [{"device_id": us.device_id, "key_id": tenant.key_id}]
    assert diff["lost"] == [{"device_id": eu.device_id, "key_id": tenant.key_id}]
    by_device = {i["device_id"]: i for i in diff["items"]}
    assert (by_device[eu.device_id]["current"], by_device[eu.device_id]["candidate"]) == ("allow", "deny")
    assert any("identity.region" in r for r in by_device[eu.device_id]["candidate_reasons"])

    # Given requests, and a candidate added beside the current policy (deny wins).
    deny_us = {"name": "no-us", "rules": [{"id": "no-us", "effect": "deny",
                                           "when": {"fact": "identity.region", "op": "equals", "value": "eu-west-1"}}]}
    status, diff, _ = await tenant.admin.call("POST", "/v1/policies/simulate", json={
        "policy": deny_us, "requests": [{"device_id": eu.device_id, "key_id": tenant.key_id, "facts": EU_FACTS}]})
    assert status == 200 and diff["items"][0]["current"] == "allow" and diff["items"][0]["candidate"] == "deny"

    # Nothing was released, recorded or published, and the policy itself is unchanged.
    status, policy, _ = await tenant.admin.call("GET", f"/v1/policies/{tenant.policy_id}")
    assert policy["version"] == 1
    # Setup made 13 records; a denied request after the dry-runs adds 2 (requested, decided), and
    # the audit queue is ordered, so anything the dry-runs had published would be counted too.
    assert (await us.request(tenant.key_id, US_FACTS))[0] == 403
    records = await audit_records(tenant.admin, expect_at_least=15)
    assert len(records) == 15 + tenant.extra_records and records[-1]["action"] == "key.decided", [r["action"] for r in records]
    status, decisions, _ = await tenant.admin.call("GET", "/v1/decisions")
    assert len(decisions["items"]) == 3


async def test_simulate_refuses_bad_candidates_with_the_field(api):
    tenant = await make_tenant(api)
    bad = {**ALLOW_EU, "rules": [{"id": "r", "effect": "allow", "when": {"fact": "identity.region", "op": "near", "value": 1}}]}
    cases = [
        ({"policy": bad, "recorded_days": 1}, 422, "policy.rules[0].when.op"),
        ({"policy": ALLOW_EU}, 422, "requests"),
        ({"policy": ALLOW_EU, "recorded_days": 0}, 422, "recorded_days"),
        ({"policy": ALLOW_EU, "requests": [{"key_id": "k"}]}, 422, "requests[0].device_id"),
        ({"policy": ALLOW_EU, "policy_id": "pol_nope", "recorded_days": 1}, 404, "policy_id"),
    ]
    for body, status_expected, field in cases:
        status, problem, ctype = await tenant.admin.call("POST", "/v1/policies/simulate", json=body)
        assert status == status_expected and problem["field"] == field, (body, problem)
        assert ctype.startswith("application/problem+json")


async def test_simulation_accounts_for_remembered_approvals_and_quarantined_devices(api):
    from .test_approvals import approval_policy, approvers, ask
    from .test_posture import beat

    tenant = await make_tenant(api, policy=approval_policy(remember_for_seconds=3600))
    remembered = await BareAgent.enroll(tenant, api, name="vm-remembered")
    plain = await BareAgent.enroll(tenant, api, name="vm-plain")
    (alice,) = await approvers(tenant, 1)
    status, pending, _ = await ask(remembered, tenant.key_id)
    assert status == 202
    status, _, _ = await alice.call("POST", f"/v1/approvals/{pending['approval_id']}/approve")
    assert status == 200

    # A quarantined device that the current policy alone would allow.
    status, _, _ = await tenant.admin.call("POST", "/v1/policies", json={
        "name": "quarantined-vm", "targets": {"devices": "all", "keys": "all"}, "rules": [
            {"id": "firewalled", "effect": "allow", "when": {"fact": "integrity.firewall_enabled", "op": "exists"}}]})
    assert status == 201
    quarantined = await BareAgent.enroll(tenant, api, name="vm-quarantined")
    assert (await quarantined.request(tenant.key_id, {"integrity": {"firewall_enabled": True}}))[0] == 200
    status, out, _ = await beat(quarantined, {"identity": US_FACTS["identity"]})
    assert status == 200 and out["status"] == "quarantined", out

    allow_eu = {**ALLOW_EU, "targets": {"devices": "all", "keys": "all"}}
    requests = [{"device_id": agent.device_id, "key_id": tenant.key_id, "facts": EU_FACTS}
                for agent in (remembered, plain, quarantined)]
    status, diff, _ = await tenant.admin.call(
        "POST", "/v1/policies/simulate", json={"policy": allow_eu, "policy_id": tenant.policy_id, "requests": requests})
    assert status == 200, diff
    effects = {i["device_id"]: (i["current"], i["candidate"]) for i in diff["items"]}
    assert effects[remembered.device_id] == ("allow", "allow")  # the grant already allows it: nothing gained
    assert effects[plain.device_id] == ("require_approval", "allow")
    assert effects[quarantined.device_id] == ("deny", "deny")  # quarantined, whatever either policy says
    assert diff["gained"] == [{"device_id": plain.device_id, "key_id": tenant.key_id}] and diff["lost"] == []
