"""Destruction as crypto-shredding: waiting period, cancellation, dual control, the dependency
report, no wrapped material left in the store, a signed certificate in the audit chain
(offboarding a whole tenant: test_offboarding.py)."""

from __future__ import annotations

import asyncio
import base64

from shared.certificates import verify_certificate

from .helpers import EU_FACTS, BareAgent, audit_records_until, make_tenant


async def _until(check, timeout: float = 15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.1)


def _raw(stack, collection: str):
    return stack.client[f"{stack.key_settings.db_prefix}keysvc"][collection]


async def test_destruction_waits_needs_a_second_custodian_and_leaves_a_signed_certificate(api, stack):
    tenant = await make_tenant(api)
    admin = tenant.admin
    agent = await BareAgent.enroll(tenant, api)
    status, _, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200
    await admin.call("POST", f"/v1/keys/{tenant.key_id}/rotate", json={})
    path = f"/v1/keys/{tenant.key_id}/destruction"

    # An active key cannot be scheduled for destruction: deactivate first.
    status, out, _ = await admin.call("POST", path, json={"reason": "retire", "wait_seconds": 1})
    assert status == 409 and "deactivate" in out["detail"], out
    await admin.call("POST", f"/v1/keys/{tenant.key_id}/state", json={"action": "deactivate", "reason": "retire"})

    # The device that received the key blocks destruction unless forced.
    status, deps, _ = await admin.call("GET", f"/v1/keys/{tenant.key_id}/dependencies")
    assert status == 200 and deps["releases"] == 1 and deps["devices"][0]["device_id"] == agent.device_id, deps
    status, out, _ = await admin.call("POST", path, json={"reason": "retire", "wait_seconds": 1})
    assert status == 409 and out["field"] == "force", out
    for body, field in (({"reason": "x", "wait_seconds": 31 * 86400, "force": True}, "wait_seconds"),
                        ({"wait_seconds": 5}, "reason"), ({"reason": "x", "force": "maybe"}, "force")):
        status, out, _ = await admin.call("POST", path, json=body)
        assert status == 422 and out["field"] == field, (body, out)

    # Scheduled, then cancelled within the waiting period: nothing is destroyed.
    status, out, _ = await admin.call("POST", path, json={"reason": "retire", "wait_seconds": 1, "force": True})
    assert status == 202 and out["status"] == "scheduled" and out["forced"], out
    status, out, _ = await admin.call("POST", path, json={"reason": "twice", "wait_seconds": 1, "force": True})
    assert status == 409
    status, out, _ = await admin.call("POST", f"{path}/cancel", json={"reason": "changed my mind"})
    assert status == 200 and out["status"] == "cancelled"
    status, out, _ = await admin.call("POST", f"{path}/approve", json={})
    assert status == 409  # nothing left to approve

    # Scheduled again; the scheduler may not approve their own request (dual control).
    status, out, _ = await admin.call("POST", path, json={"reason": "retire for good", "wait_seconds": 2, "force": True})
    assert status == 202, out
    status, out, _ = await admin.call("POST", f"{path}/approve", json={})
    assert status == 403 and "dual control" in out["detail"], out
    second = await tenant.team.user("key_custodian")  # another person
    status, out, _ = await second.call("POST", f"{path}/approve", json={"reason": "agreed"})
    assert status == 200 and len(out["approvals"]) == 1, out
    status, out, _ = await second.call("POST", f"{path}/approve", json={"reason": "again"})
    assert status == 403

    async def destroyed():
        status, out, _ = await admin.call("GET", path)
        return out if out["status"] == "destroyed" else None

    done = await _until(destroyed)
    assert done, "destruction did not run"
    assert (await admin.call("GET", f"/v1/keys/{tenant.key_id}"))[1]["state"] == "destroyed"

    # No wrapped material left for the key in the raw collection.
    versions = await _raw(stack, "key_versions").find({"tenant_id": tenant.tenant_id, "key_id": tenant.key_id}).to_list(None)
    assert len(versions) == 2 and all(v.get("wrapped") is None and "wrapped" not in v for v in versions), versions
    head = await _raw(stack, "keys").find_one({"tenant_id": tenant.tenant_id, "key_id": tenant.key_id})
    assert head["latest_material"]["wrapped"] is None, head  # nor the head's copy of the latest version
    status, out, _ = await agent.request(tenant.key_id, EU_FACTS, key_version=1)
    assert status == 409

    await _certificate_verifies_and_is_audited(admin, tenant.key_id)


async def _certificate_verifies_and_is_audited(admin, key_id: str) -> None:
    """The certificate verifies under keysvc's published key, and the same one is in the audit chain."""
    status, cert, _ = await admin.call("GET", f"/v1/keys/{key_id}/destruction-certificate")
    assert status == 200, cert
    status, signing, _ = await admin.call("GET", "/v1/custody/signing-key")
    public = base64.b64decode(signing["public_key"])
    body = cert["certificate"]
    assert verify_certificate(body, cert["signature"], public)
    assert body["key_id"] == key_id and [v["version"] for v in body["versions"]] == [1, 2]
    assert body["approvers"] and body["scheduled_by"] not in body["approvers"]
    assert len(body["last_wrapped_sha256"]) == 64
    tampered = {**body, "approvers": ["someone-else"]}
    assert not verify_certificate(tampered, cert["signature"], public)

    records = await audit_records_until(admin, lambda rs: any(r["action"] == "key.destroyed" for r in rs))
    shredded = [r for r in records if r["action"] == "key.destroyed"]
    assert len(shredded) == 1, [r["action"] for r in records]
    assert shredded[0]["details"]["certificate"] == body
    assert verify_certificate(shredded[0]["details"]["certificate"], shredded[0]["details"]["signature"], public)
    actions = [r["action"] for r in records]
    for expected in ("key.destruction_scheduled", "key.destruction_cancelled", "key.destruction_approved"):
        assert expected in actions
