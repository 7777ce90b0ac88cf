"""Bad input on every endpoint: a 4xx problem+json naming the field, nothing stored, nothing published."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from shared.bus import RabbitBus

from .helpers import EU_FACTS, BareAgent, audit_records, make_tenant

B64_31 = base64.b64encode(b"x" * 31).decode()
B64_32 = base64.b64encode(b"x" * 32).decode()


@pytest.fixture
async def spy(stack, amqp_url):
    """Every event published on the stack's exchange while the test runs."""
    bus = RabbitBus(amqp_url, prefix=stack.gateway_settings.bus_prefix)
    await bus.start()
    seen: list = []

    async def record(event):
        seen.append(event)

    await bus.listen(["#"], record)
    yield seen
    await bus.close()


# (method, path, body, expected status, expected field)
OPERATOR_CASES = [
    ("POST", "/v1/tokens", b"{not json", 400, "body"),
    ("POST", "/v1/tokens", b"[1, 2]", 400, "body"),
    ("POST", "/v1/tokens", {"name": "x", "scopes": ["emperor"]}, 422, "scopes"),
    ("POST", "/v1/tokens", {"name": "x", "scopes": ["keys.read"], "colour": "red"}, 422, "colour"),
    ("POST", "/v1/tokens", {"name": 5, "scopes": ["keys.read"]}, 422, "name"),
    ("POST", "/v1/tokens", {"name": "x", "scopes": ["keys.read"], "expires_in_seconds": "soon"}, 422, "expires_in_seconds"),
    ("POST", "/v1/enrollment-tokens", {"ttl_seconds": 5}, 422, "ttl_seconds"),
    ("POST", "/v1/enrollment-tokens", {"groups": "not-a-list"}, 422, "groups"),
    ("POST", "/v1/keys", {"name": "k", "algorithm": "DES"}, 422, "algorithm"),
    ("POST", "/v1/keys", {"name": "k", "algorithm": "AES-512"}, 422, "algorithm"),
    ("POST", "/v1/keys", {"name": "", "algorithm": "AES-256"}, 422, "name"),
    ("POST", "/v1/keys", {"name": "k", "exportable": "yes please"}, 422, "exportable"),
    ("POST", "/v1/keys", {"name": "k", "kek": "mine"}, 422, "kek"),
    ("POST", "/v1/keys", b"", 400, "body"),
    ("POST", "/v1/keys/{key_id}/state", {"action": "explode", "reason": "x"}, 422, "action"),
    ("POST", "/v1/keys/{key_id}/state", {"action": "suspend"}, 422, "reason"),
    ("POST", "/v1/keys/{key_id}/state", {"action": "activate", "reason": "already active"}, 409, "action"),
    ("POST", "/v1/keys/{key_id}/rotate", {"reason": 7}, 422, "reason"),
    ("POST", "/v1/policies", {"name": "p", "rules": []}, 422, "rules"),
    ("POST", "/v1/policies", {"name": "p", "rules": [{"id": "r", "effect": "allow", "when": {"fact": "identity.region", "op": "resembles", "value": 1}}]}, 422, "rules[0].when.op"),
    ("POST", "/v1/policies", {"name": "p", "rules": [{"id": "r", "effect": "allow", "when": {"fact": "observed.source_ip", "op": "cidr_contains", "value": "10.0.0.0/33"}}]}, 422, "rules[0].when.value"),
    ("POST", "/v1/policies", {"name": "p", "rules": [{"id": "r", "effect": "maybe", "when": {"fact": "a", "op": "exists"}}]}, 422, "rules[0].effect"),
    ("PUT", "/v1/policies/{policy_id}", {"name": "p", "disclose": "everything", "rules": [{"id": "r", "effect": "allow", "when": {"fact": "a", "op": "exists"}}]}, 422, "disclose"),
    ("POST", "/v1/devices/{device_id}/revoke", {}, 422, "reason"),
    ("GET", "/v1/keys?limit=0", None, 400, "limit"),
    ("GET", "/v1/audit?limit=abc", None, 400, "limit"),
    ("GET", "/v1/audit?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", None, 400, "since"),
    ("GET", "/v1/audit?colour=red", None, 400, "colour"),
]


async def test_operator_endpoints_refuse_bad_input_and_change_nothing(api, spy):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    before = await audit_records(tenant.admin, expect_at_least=6)
    await asyncio.sleep(0.3)
    spy.clear()
    ids = {"key_id": tenant.key_id, "policy_id": tenant.policy_id, "device_id": agent.device_id}
    for method, path, body, status, field in OPERATOR_CASES:
        kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
        got, problem, ctype = await tenant.admin.call(method, path.format(**ids), **kwargs)
        assert (got, problem.get("field")) == (status, field), (method, path, body, problem)
        assert ctype.startswith("application/problem+json")
    await asyncio.sleep(0.5)
    assert spy == [], [e.type for e in spy]
    after = await audit_records(tenant.admin)
    assert len(after) == len(before)
    status, keys, _ = await tenant.admin.call("GET", "/v1/keys")
    assert len(keys["items"]) == 1 and keys["items"][0]["state"] == "active" and keys["items"][0]["latest_version"] == 1
    status, policies, _ = await tenant.admin.call("GET", "/v1/policies")
    assert [p["version"] for p in policies["items"]] == [1]


async def test_oversized_body_is_refused(api):
    tenant = await make_tenant(api)
    huge = json.dumps({"name": "k", "volume": "x" * 200_000}).encode()
    status, problem, ctype = await tenant.admin.call("POST", "/v1/keys", data=huge, headers={"Content-Type": "application/json"})
    assert status == 413 and problem["field"] == "body" and ctype.startswith("application/problem+json")


async def test_agent_endpoints_refuse_bad_input(api, spy):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={})
    await asyncio.sleep(0.3)
    spy.clear()
    anonymous = api.as_(None)
    cases = [
        ({"enrollment_token": enr["token"], "name": "vm", "public_key": "not base64!"}, 422, "public_key"),
        ({"enrollment_token": enr["token"], "name": "vm", "public_key": B64_31}, 422, "public_key"),
        ({"enrollment_token": enr["token"], "name": "vm"}, 422, "public_key"),
        ({"enrollment_token": enr["token"], "name": "vm", "public_key": B64_32, "admin": True}, 422, "admin"),
    ]
    for body, status, field in cases:
        got, problem, _ = await anonymous.call("POST", "/v1/agent/enroll", json=body)
        assert (got, problem.get("field")) == (status, field), (body, problem)
    got, _, _ = await anonymous.call("POST", "/v1/agent/enroll", data=b"{oops")
    assert got == 400
    # The enrollment token was not consumed by the refused attempts.
    good = await BareAgent.enroll(tenant, api, "vm-2")
    assert good.device_id

    eph_ok = json.loads(agent.request_body(tenant.key_id, EU_FACTS)[0])["ephemeral_public_key"]
    requests = [
        ({"key_id": tenant.key_id, "facts": EU_FACTS, "ephemeral_public_key": B64_31}, 422, "ephemeral_public_key"),
        ({"key_id": tenant.key_id, "facts": EU_FACTS, "ephemeral_public_key": "%%%"}, 422, "ephemeral_public_key"),
        ({"key_id": tenant.key_id, "facts": "lots", "ephemeral_public_key": eph_ok}, 422, "facts"),
        ({"key_id": tenant.key_id, "facts": {"blob": "x" * 20_000}, "ephemeral_public_key": eph_ok}, 422, "facts"),
        ({"key_id": tenant.key_id, "key_version": 0, "facts": {}, "ephemeral_public_key": eph_ok}, 422, "key_version"),
        ({"facts": {}, "ephemeral_public_key": eph_ok}, 422, "key_id"),
        ({"key_id": tenant.key_id, "facts": {}, "ephemeral_public_key": eph_ok, "approve": True}, 422, "approve"),
    ]
    spy.clear()
    for body, status, field in requests:
        raw = json.dumps(body).encode()
        got, problem, _ = await agent.api.call("POST", "/v1/agent/key-requests", data=raw, headers=agent.signed(raw))
        assert (got, problem.get("field")) == (status, field), (body, problem)
    await asyncio.sleep(0.5)
    assert [e.type for e in spy] == [], "a refused request publishes nothing"
