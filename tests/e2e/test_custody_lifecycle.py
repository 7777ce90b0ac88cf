"""Key lifecycle through the API: NIST transitions with actor and reason in the audit log, the
tenant's minimum key size, rotation and min_decryption_version, and bad input changing nothing."""

from __future__ import annotations

from .helpers import EU_FACTS, BareAgent, audit_records_until, make_tenant


async def _key(admin, key_id):
    status, key, _ = await admin.call("GET", f"/v1/keys/{key_id}")
    assert status == 200, key
    return key


async def test_transitions_are_enforced_and_audited_with_actor_and_reason(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    admin = tenant.admin

    status, out, _ = await admin.call("POST", f"/v1/keys/{tenant.key_id}/state", json={"action": "suspend", "reason": "maintenance"})
    assert status == 200 and out["state"] == "suspended", out
    status, out, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 409 and "suspended" in out["detail"], out

    # Illegal: an active-only action on a suspended key; the key is unchanged.
    status, out, ctype = await admin.call("POST", f"/v1/keys/{tenant.key_id}/state", json={"action": "suspend", "reason": "again"})
    assert status == 409 and ctype.startswith("application/problem+json") and out["field"] == "action", out
    assert (await _key(admin, tenant.key_id))["state"] == "suspended"
    # Unknown action names and a missing reason: 422 naming the field.
    for body, field in (({"action": "explode", "reason": "x"}, "action"), ({"action": "resume"}, "reason"),
                        ({"action": "destroy", "reason": "x"}, "action")):
        status, out, _ = await admin.call("POST", f"/v1/keys/{tenant.key_id}/state", json=body)
        assert status == 422 and out["field"] == field, (body, out)
    assert (await _key(admin, tenant.key_id))["state"] == "suspended"

    status, out, _ = await admin.call("POST", f"/v1/keys/{tenant.key_id}/state", json={"action": "resume", "reason": "done"})
    assert status == 200 and out["state"] == "active"
    status, out, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200, out
    status, out, _ = await admin.call("POST", f"/v1/keys/{tenant.key_id}/state", json={"action": "deactivate", "reason": "retired"})
    assert status == 200 and out["state"] == "deactivated" and out["deactivated_at"]
    status, out, _ = await admin.call("POST", f"/v1/keys/{tenant.key_id}/state", json={"action": "activate", "reason": "back"})
    assert status == 409  # deactivated is final for use

    # 4 setup + enrolment 2 + three changes + two requests (3 records each): wait for all 15.
    records = await audit_records_until(admin, lambda rs: sum(r["action"] == "key.state_changed" for r in rs) >= 3)
    changes = [r for r in records if r["action"] == "key.state_changed"]
    assert [(r["details"]["action"], r["details"]["reason"]) for r in changes] == [
        ("suspend", "maintenance"), ("resume", "done"), ("deactivate", "retired")]
    assert all(r["actor"]["id"] and r["resource"] == {"type": "key", "id": tenant.key_id} for r in changes)


async def test_tenant_minimum_key_size_and_bad_algorithms(api):
    tenant = await make_tenant(api)
    admin = tenant.admin
    status, settings, _ = await admin.call("GET", "/v1/custody/settings")
    assert status == 200 and settings["min_key_bits"] == 128 and settings["destruction_wait_days"] == 7

    for body, field in (({"min_key_bits": 100}, "min_key_bits"), ({"destruction_wait_days": 3}, "destruction_wait_days"),
                        ({"destruction_wait_days": 31}, "destruction_wait_days"), ({"colour": "red"}, "colour")):
        status, out, _ = await admin.call("PUT", "/v1/custody/settings", json=body)
        assert status == 422 and out["field"] == field, (body, out)
    status, out, _ = await admin.call("PUT", "/v1/custody/settings", json={"min_key_bits": 256, "destruction_wait_days": 14})
    assert status == 200 and out["min_key_bits"] == 256, out

    status, before, _ = await admin.call("GET", "/v1/keys")
    for body, code, field in (({"name": "small", "algorithm": "AES-128"}, 422, "algorithm"),
                              ({"name": "odd", "algorithm": "AES-512"}, 422, "algorithm"),
                              ({"name": "lower", "algorithm": "aes-256"}, 422, "algorithm"),
                              ({"name": "des", "algorithm": "3DES"}, 422, "algorithm")):
        status, out, _ = await admin.call("POST", "/v1/keys", json=body)
        assert status == code and out["field"] == field, (body, out)
    status, after, _ = await admin.call("GET", "/v1/keys")
    assert [k["key_id"] for k in after["items"]] == [k["key_id"] for k in before["items"]]
    status, out, _ = await admin.call("POST", "/v1/keys", json={"name": "big", "algorithm": "AES-256"})
    assert status == 201

    records = await audit_records_until(admin, lambda rs: any(r["action"] == "custody.settings_changed" for r in rs))
    assert any(r["action"] == "custody.settings_changed" and r["details"]["settings"]["min_key_bits"] == 256 for r in records)


async def test_rotate_then_release_new_version_and_retire_old_ones(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    admin = tenant.admin
    status, v1, key1 = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and v1["key_version"] == 1 and v1["latest_version"] == 1

    status, rotated, _ = await admin.call("POST", f"/v1/keys/{tenant.key_id}/rotate", json={"reason": "yearly"})
    assert status == 200 and rotated["latest_version"] == 2
    status, v2, key2 = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and v2["key_version"] == 2 and key2 != key1
    # The old version still decrypts, and the agent is told a newer one exists.
    status, old, again = await agent.request(tenant.key_id, EU_FACTS, key_version=1)
    assert status == 200 and again == key1 and old["latest_version"] == 2

    for body, field in (({"min_decryption_version": 3, "reason": "x"}, "min_decryption_version"),
                        ({"min_decryption_version": 0, "reason": "x"}, "min_decryption_version"),
                        ({"min_decryption_version": 2}, "reason")):
        status, out, _ = await admin.call("POST", f"/v1/keys/{tenant.key_id}/min-decryption-version", json=body)
        assert status == 422 and out["field"] == field, (body, out)
    assert (await _key(admin, tenant.key_id))["min_decryption_version"] == 1

    status, out, _ = await admin.call("POST", f"/v1/keys/{tenant.key_id}/min-decryption-version",
                                      json={"min_decryption_version": 2, "reason": "v1 retired"})
    assert status == 200 and out["min_decryption_version"] == 2
    status, out, _ = await agent.request(tenant.key_id, EU_FACTS, key_version=1)
    assert status == 409 and "min_decryption_version" in out["detail"], out
    status, out, key = await agent.request(tenant.key_id, EU_FACTS, key_version=2)
    assert status == 200 and key == key2
