"""Policy versions and restore, device and key groups (static, dynamic, from enrollment), through
the gateway, RabbitMQ, policysvc and the store."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .helpers import ALLOW_EU, EU_FACTS, BareAgent, audit_records, audit_records_until, make_tenant, raw


async def test_versions_list_show_restore_and_the_deciding_version_reaches_the_audit_log(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    path = f"/v1/policies/{tenant.policy_id}"
    stricter = {**ALLOW_EU, "rules": [{**ALLOW_EU["rules"][0], "id": "central-only", "when": {
        "fact": "identity.region", "op": "equals", "value": "eu-central-1"}}]}
    status, v2, _ = await tenant.admin.call("PUT", path, json=stricter)
    assert status == 200 and v2["version"] == 2
    status, _, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 403  # eu-west-1 is no longer allowed by version 2

    status, versions, _ = await tenant.admin.call("GET", f"{path}/versions")
    assert status == 200 and [v["version"] for v in versions["items"]] == [2, 1]
    assert [v["current"] for v in versions["items"]] == [True, False]
    status, v1, _ = await tenant.admin.call("GET", f"{path}/versions/1")
    assert status == 200 and v1["document"]["rules"][0]["id"] == "eu-only"

    status, restored, _ = await tenant.admin.call("POST", f"{path}/versions/1/restore")
    assert status == 200, restored
    assert restored["version"] == 3 and restored["restored_from"] == 1
    assert restored["document"] == v1["document"]
    status, _, key = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and key

    status, missing, ctype = await tenant.admin.call("POST", f"{path}/versions/9/restore")
    assert status == 404 and ctype.startswith("application/problem+json") and missing["field"] == "version"
    status, bad, _ = await tenant.admin.call("GET", f"{path}/versions/x")
    assert status == 400 and bad["field"] == "version"

    records = await audit_records_until(tenant.admin, lambda rs: any(
        r["action"] == "key.decided" and any(d.get("version") == 3 for d in r["details"].get("decided_by") or []) for r in rs))
    decided = [r for r in records if r["action"] == "key.decided"]
    assert decided[-1]["details"]["decided_by"] == [{"policy": tenant.policy_id, "version": 3, "rule": "eu-only"}]
    assert decided[0]["outcome"] == "denied" and decided[0]["trace"][0]["version"] == 2
    status, decision, _ = await tenant.admin.call("GET", f"/v1/decisions/{decided[0]['details']['request_id']}")
    assert status == 200 and decision["effect"] == "deny", decision
    assert decision["trace"][0]["conditions"][0]["actual"] == "eu-west-1"  # the operator sees values
    assert "eu-west-1" not in str(decision["disclosed_to_agent"])  # the agent does not


async def _enroll_with_groups(tenant, api, groups: list[str], name: str) -> BareAgent:
    status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": name, "groups": groups})
    assert status == 201, enr
    key = Ed25519PrivateKey.generate()
    status, dev, _ = await api.as_(None).call(
        "POST", "/v1/agent/enroll", json={"enrollment_token": enr["token"], "name": name, "public_key": raw(key.public_key())})
    assert status == 201, dev
    return BareAgent(api, key, dev["key_id"], dev["tenant_id"])


async def test_policies_bind_to_dynamic_static_and_enrollment_device_groups_and_key_groups(api):
    tenant = await make_tenant(api)
    admin = tenant.admin
    golden = {"name": "golden-images", "kind": "device",
              "match": {"fact": "identity.image_id", "op": "in", "value": ["ami-1", "ami-2"]}}
    status, group, _ = await admin.call("POST", "/v1/groups", json=golden)
    assert status == 201, group
    status, keys, _ = await admin.call("POST", "/v1/groups", json={"name": "payroll", "kind": "key", "members": [tenant.key_id]})
    assert status == 201, keys
    firewall = {"fact": "integrity.firewall_enabled", "op": "equals", "value": True}
    status, _, _ = await admin.call("PUT", f"/v1/policies/{tenant.policy_id}", json={
        "name": "golden", "targets": {"device_groups": ["golden-images", "finance"], "key_groups": ["payroll"]},
        "rules": [{"id": "firewalled", "effect": "allow", "when": firewall}]})
    assert status == 200

    plain = await BareAgent.enroll(tenant, api)
    finance = await _enroll_with_groups(tenant, api, ["finance"], "vm-fin")
    facts = {"identity": {"image_id": "ami-1"}, "integrity": {"firewall_enabled": True}}
    other = {"identity": {"image_id": "ami-9"}, "integrity": {"firewall_enabled": True}}
    assert (await plain.request(tenant.key_id, facts))[0] == 200  # dynamic group by image id
    status, out, _ = await plain.request(tenant.key_id, other)
    assert status == 403 and "no policy applies" in " ".join(out["reasons"])
    assert (await finance.request(tenant.key_id, other))[0] == 200  # group named by its enrollment token

    # A static member, and a group change takes effect on the next request (cache dropped by event).
    status, _, _ = await admin.call("PUT", f"/v1/groups/{group['group_id']}", json={
        **golden, "members": [plain.device_id], "match": {"fact": "identity.image_id", "op": "equals", "value": "ami-7"}})
    assert status == 200
    assert (await plain.request(tenant.key_id, other))[0] == 200

    # A key outside the key group is not governed by the policy.
    status, key2, _ = await admin.call("POST", "/v1/keys", json={"name": "other-vol"})
    assert status == 201
    assert (await plain.request(key2["key_id"], facts))[0] == 403

    status, listed, _ = await admin.call("GET", "/v1/groups?kind=key")
    assert status == 200 and [g["name"] for g in listed["items"]] == ["payroll"]
    status, _, _ = await admin.call("DELETE", f"/v1/groups/{keys['group_id']}")
    assert status == 200
    assert (await plain.request(tenant.key_id, facts))[0] == 403  # key group gone: no policy applies


async def test_invalid_groups_are_refused_with_the_offending_field_and_nothing_is_stored(api):
    tenant = await make_tenant(api)
    cases = [
        ({"name": "g", "kind": "device", "match": {"fact": "identity.image_id", "op": "resembles", "value": 1}}, "match.op"),
        ({"name": "g", "kind": "device", "match": {"all": [{"fact": "identity.region", "op": "in", "value": "eu"}]}},
         "match.all[0].value"),
        ({"name": "g", "kind": "key", "match": {"fact": "identity.region", "op": "exists"}}, "match"),
        ({"name": "g", "kind": "device"}, "members"),
        ({"name": "g", "kind": "printer", "members": ["x"]}, "kind"),
        ({"name": "g", "kind": "device", "members": ["x"], "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        status, problem, ctype = await tenant.admin.call("POST", "/v1/groups", json=body)
        assert status == 422, (body, problem)
        assert ctype.startswith("application/problem+json") and problem["field"] == field, (body, problem)
    deep: dict = {"fact": "identity.region", "op": "exists"}
    for _ in range(20):
        deep = {"not": deep}
    status, problem, _ = await tenant.admin.call("POST", "/v1/groups", json={"name": "g", "kind": "device", "match": deep})
    assert status == 422 and problem["field"].startswith("match.not") and "deeper" in problem["detail"]
    status, listed, _ = await tenant.admin.call("GET", "/v1/groups")
    assert status == 200 and listed["items"] == []
    records = await audit_records(tenant.admin, expect_at_least=3)
    assert not [r for r in records if r["action"].startswith("group.")]
