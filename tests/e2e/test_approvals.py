"""Manual approval through the gateway, RabbitMQ, policysvc, keysvc and the store: single and
2-of-3 approvals from distinct people, refusals, denial, expiry, and approve-and-remember."""

from __future__ import annotations

import asyncio
import base64
import json

from shared.crypto import httpsig, release

from .helpers import ALLOW_EU, EU_FACTS, BareAgent, audit_records, audit_records_until, make_tenant


def approval_policy(**approval) -> dict:
    rule = {"id": "eu-needs-approval", "effect": "require_approval",
            "when": {"fact": "identity.region", "op": "equals", "value": "eu-west-1"}}
    if approval:
        rule["approval"] = approval
    return {**ALLOW_EU, "name": "needs-approval", "rules": [rule]}


async def approvers(tenant, n: int) -> list:
    people = []
    for i in range(n):
        status, tok, _ = await tenant.admin.call("POST", "/v1/tokens", json={"name": f"approver-{i}", "roles": ["approver"]})
        assert status == 201, tok
        people.append(tenant.admin.as_(tok["token"]))
    return people


async def ask(agent: BareAgent, key_id: str, facts: dict = EU_FACTS):
    """A key request whose one-time private key is kept, to open a key released later."""
    body, ephemeral = agent.request_body(key_id, facts)
    status, out, _ = await agent.api.call("POST", "/v1/agent/key-requests", data=body, headers=agent.signed(body))
    return status, out, ephemeral


async def poll(agent: BareAgent, request_id: str, wait: float = 0):
    path = f"/v1/agent/key-requests/{request_id}" + (f"?wait={wait:g}" if wait else "")
    headers = httpsig.sign_request(method="GET", url=agent.api.url + path, headers={}, body=b"",
                                   key_id=agent.key_id, private_key=agent.signing_key)
    return await agent.api.call("GET", path, headers=headers)


def opened(agent: BareAgent, out: dict, ephemeral) -> bytes:
    return release.open_sealed(
        base64.b64decode(out["sealed_key"]), ephemeral,
        release.release_info(tenant_id=agent.tenant_id, request_id=out["request_id"], key_id=out["key_id"],
                             key_version=out["key_version"]))


async def test_single_approval_releases_the_original_request_to_its_one_time_key(api):
    tenant = await make_tenant(api, policy=approval_policy())
    agent = await BareAgent.enroll(tenant, api)
    (alice,) = await approvers(tenant, 1)

    status, pending, ephemeral = await ask(agent, tenant.key_id)
    assert status == 202, pending
    assert pending["status"] == "pending" and pending["approval"]["approvals_required"] == 1
    request_id, approval_id = pending["request_id"], pending["approval_id"]
    status, polled, _ = await poll(agent, request_id)
    assert status == 202 and polled["status"] == "pending" and polled["approvals_received"] == 0

    status, listed, _ = await alice.call("GET", "/v1/approvals?status=pending")
    assert status == 200 and [a["approval_id"] for a in listed["items"]] == [approval_id]
    assert listed["items"][0]["reasons"], "the approver sees why approval is needed"
    status, voted, _ = await alice.call("POST", f"/v1/approvals/{approval_id}/approve", json={"comment": "change 42"})
    assert status == 200 and voted["status"] == "approved", voted

    status, out, _ = await poll(agent, request_id, wait=30)
    assert status == 200, out
    assert out["request_id"] == request_id and len(opened(agent, out, ephemeral)) == 32
    # Only the requesting device can collect it.
    other = await BareAgent.enroll(tenant, api, name="vm-2")
    assert (await poll(other, request_id))[0] == 404
    # Approving again changes nothing.
    status, again, _ = await alice.call("POST", f"/v1/approvals/{approval_id}/approve")
    assert status == 409, again

    records = await audit_records(tenant.admin, expect_at_least=14)
    actions = [r["action"] for r in records]
    for action in ("approval.requested", "approval.granted", "key.released"):
        assert action in actions, actions
    assert next(r for r in records if r["action"] == "approval.requested")["outcome"] == "pending"
    granted = next(r for r in records if r["action"] == "approval.granted")
    assert granted["resource"] == {"type": "approval", "id": approval_id} and granted["actor"]["kind"] == "user"
    decided = [r for r in records if r["action"] == "key.decided"]
    assert [r["outcome"] for r in decided] == ["pending", "success"]


async def test_two_of_three_needs_two_different_people_and_self_approval_is_refused(api):
    tenant = await make_tenant(api, policy=approval_policy(approvals_required=2))
    agent = await BareAgent.enroll(tenant, api)
    alice, bob, _carol = await approvers(tenant, 3)
    status, pending, ephemeral = await ask(agent, tenant.key_id)
    assert status == 202
    approval_id = pending["approval_id"]

    status, first, _ = await alice.call("POST", f"/v1/approvals/{approval_id}/approve", json={"comment": "ok"})
    assert status == 200 and first["status"] == "pending" and first["approvals_received"] == 1
    status, twice, ctype = await alice.call("POST", f"/v1/approvals/{approval_id}/approve")
    assert status == 409 and ctype.startswith("application/problem+json") and "different people" in twice["detail"]
    status, polled, _ = await poll(agent, pending["request_id"])
    assert status == 202 and polled["approvals_received"] == 1 and polled["approvals_required"] == 2

    status, second, _ = await bob.call("POST", f"/v1/approvals/{approval_id}/approve", json={"comment": "agreed"})
    assert status == 200 and second["status"] == "approved"
    assert [v["by"] for v in second["votes"]] == [v["by"] for v in first["votes"]] + [second["votes"][1]["by"]]
    assert len({v["by"] for v in second["votes"]}) == 2
    status, out, _ = await poll(agent, pending["request_id"], wait=30)
    assert status == 200 and len(opened(agent, out, ephemeral)) == 32

    # A token without the approver role cannot vote at all.
    status, tok, _ = await tenant.admin.call("POST", "/v1/tokens", json={"name": "auditor", "roles": ["auditor"]})
    status, _, _ = await tenant.admin.as_(tok["token"]).call("POST", f"/v1/approvals/{approval_id}/approve")
    assert status == 403


async def test_denied_and_expired_requests_are_refused_and_never_released(api):
    tenant = await make_tenant(api, policy=approval_policy())
    agent = await BareAgent.enroll(tenant, api)
    (alice,) = await approvers(tenant, 1)

    status, pending, _ = await ask(agent, tenant.key_id)
    status, denied, _ = await alice.call("POST", f"/v1/approvals/{pending['approval_id']}/deny", json={"comment": "not today"})
    assert status == 200 and denied["status"] == "denied" and denied["comment"] == "not today"
    status, out, _ = await poll(agent, pending["request_id"])
    assert status == 403 and out["request_status"] == "denied"

    status, settings, _ = await tenant.admin.call("PUT", "/v1/policy-settings", json={"approval_expiry_seconds": 1})
    assert status == 200 and settings["approval_expiry_seconds"] == 1
    status, pending, _ = await ask(agent, tenant.key_id)
    assert status == 202
    # The long poll ends when policysvc's scheduler expires the approval (about one second).
    status, out, _ = await poll(agent, pending["request_id"], wait=15)
    assert status == 403 and out["request_status"] == "expired", out
    status, late, _ = await alice.call("POST", f"/v1/approvals/{pending['approval_id']}/approve")
    assert status == 409 and "expired" in late["detail"]
    status, listed, _ = await alice.call("GET", "/v1/approvals")
    assert sorted(a["status"] for a in listed["items"]) == ["denied", "expired"]

    records = await audit_records_until(
        tenant.admin, lambda rs: {"approval.denied", "approval.expired"} <= {r["action"] for r in rs}
    )
    actions = [r["action"] for r in records]
    assert "approval.denied" in actions and "approval.expired" in actions and "key.released" not in actions
    status, bad, _ = await alice.call("GET", "/v1/approvals?status=maybe")
    assert status == 400 and bad["field"] == "status"


async def test_approve_and_remember_allows_that_device_and_key_for_a_while(api):
    tenant = await make_tenant(api, policy=approval_policy(remember_for_seconds=3600))
    agent = await BareAgent.enroll(tenant, api)
    other = await BareAgent.enroll(tenant, api, name="vm-2")
    (alice,) = await approvers(tenant, 1)
    status, pending, _ = await ask(agent, tenant.key_id)
    assert status == 202
    status, granted, _ = await alice.call("POST", f"/v1/approvals/{pending['approval_id']}/approve")
    assert status == 200 and granted["status"] == "approved"

    status, out, key = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and key, out  # remembered: no second approval for this device and key
    status, out, _ = await other.request(tenant.key_id, EU_FACTS)
    assert status == 202  # another device still needs one
    status, decision, _ = await tenant.admin.call("GET", "/v1/decisions?effect=allow")
    assert status == 200 and len(decision["items"]) == 1
    assert any("remembered" in r for r in decision["items"][0]["reasons"]), json.dumps(decision)


async def test_the_agent_sdk_waits_for_approval_and_sends_heartbeats(api):
    from agent.client import AgentClient, ApprovalPending
    from agent.identity import AgentIdentity

    tenant = await make_tenant(api, policy=approval_policy())
    bare = await BareAgent.enroll(tenant, api)
    (alice,) = await approvers(tenant, 1)
    identity = AgentIdentity(gateway_url=api.url, tenant_id=bare.tenant_id, device_id=bare.device_id,
                             key_id=bare.key_id, private_key=bare.signing_key)
    async with AgentClient(identity) as client:
        try:
            await client.request_key(tenant.key_id, facts=EU_FACTS)
        except ApprovalPending as pending:
            first = pending.request_id
        else:
            raise AssertionError("approval was required")
        waiting = asyncio.create_task(client.request_key(tenant.key_id, facts=EU_FACTS, wait_for_approval_seconds=20))
        for _ in range(200):  # until the second request is pending
            status, listed, _ = await alice.call("GET", "/v1/approvals?status=pending")
            fresh = [a for a in listed["items"] if a["request_id"] != first]
            if fresh:
                break
            await asyncio.sleep(0.05)
        status, _, _ = await alice.call("POST", f"/v1/approvals/{fresh[0]['approval_id']}/approve")
        assert status == 200
        released = await asyncio.wait_for(waiting, 20)
        assert released.request_id == fresh[0]["request_id"] and len(released.key) == 32
        beat = await client.heartbeat(EU_FACTS)
        assert beat["status"] == "active" and beat["device_id"] == bare.device_id


async def test_expiry_survives_a_policysvc_restart(api, stack):
    tenant = await make_tenant(api, policy=approval_policy())
    agent = await BareAgent.enroll(tenant, api)
    status, _, _ = await tenant.admin.call("PUT", "/v1/policy-settings", json={"approval_expiry_seconds": 2})
    assert status == 200
    status, pending, _ = await ask(agent, tenant.key_id)
    assert status == 202
    await stack.stop("policysvc")  # before the deadline: the running scheduler never fires
    await stack.start("policysvc")  # the new one finds the pending approval in the store
    status, out, _ = await poll(agent, pending["request_id"], wait=30)
    assert status == 403 and out["request_status"] == "expired", out
