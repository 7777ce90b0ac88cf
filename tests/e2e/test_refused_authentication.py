"""Refused credentials as an attacker sends them: a failure is written into a tenant's audit chain
only once the device or credential it names was found in that tenant (and even then marked
unverified); anything else goes to the provider's own security log; and failures are rate
limited per source address on every route, without one address locking out another."""

from __future__ import annotations

import aiohttp
import pytest

from .conftest import Api
from .helpers import EU_FACTS, BareAgent, audit_records_until, make_tenant, provider_admin


def _denied(records: list[dict]) -> list[dict]:
    return [r for r in records if r["action"] == "access.denied"]


async def test_a_forged_key_id_never_writes_into_the_named_tenants_chain(api):
    tenant = await make_tenant(api)
    provider = await provider_admin(api)
    forged = {"Authorization": "Bearer nope", "Signature-Input": f'x=();keyid="{tenant.tenant_id}/dev_FORGED"'}
    anon = api.as_(None)
    status, problem, _ = await anon.call("GET", "/v1/me", headers=forged)
    assert status == 401 and problem["detail"] == "missing or invalid credentials"
    body = b'{"key_id": "k", "facts": {}, "ephemeral_public_key": "x"}'
    status, _, _ = await anon.call("POST", "/v1/agent/key-requests", data=body,
                                   headers={"Content-Type": "application/json", **forged})
    assert status == 401
    # None lands in the tenant the forged key id named (given the time a record takes to land)...
    tenant_records = await audit_records_until(tenant.admin, _denied, timeout=3.0)
    assert not _denied(tenant_records), _denied(tenant_records)
    assert "dev_FORGED" not in str(tenant_records)
    # ...both land in the provider's security log, naming no tenant's device.
    records = await audit_records_until(provider, lambda rs: len(_denied(rs)) >= 2)
    denied = _denied(records)
    assert len(denied) == 2, denied
    assert {r["details"]["route"] for r in denied} == {"/v1/me", "/v1/agent/key-requests"}
    assert all(r["actor"]["id"] == "unknown" and r["actor"]["auth"] == "unverified" for r in denied), denied
    assert "dev_FORGED" not in str(denied)

async def test_failures_of_a_known_device_or_token_are_the_tenants_and_marked_unverified(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    body, _ = agent.request_body(tenant.key_id, EU_FACTS)
    headers = agent.signed(body)
    status, _, _ = await agent.api.call("POST", "/v1/agent/key-requests", data=body.replace(b"eu-west-1", b"eu-west-2"),
                                        headers=headers)
    assert status == 401
    custodian = tenant.team.by_role["key_custodian"]
    status, tok, _ = await custodian.call("POST", "/v1/tokens", json={"name": "short-lived"})
    assert status == 201, tok
    status, _, _ = await custodian.call("DELETE", f"/v1/tokens/{tok['token_id']}")
    assert status == 204
    status, _, _ = await api.as_(tok["token"]).call("GET", "/v1/me")
    assert status == 401
    records = await audit_records_until(tenant.admin, lambda rs: len(_denied(rs)) >= 2)
    actors = sorted((r["actor"]["kind"], r["actor"]["id"], r["actor"]["auth"]) for r in _denied(records))
    assert actors == sorted([("device", agent.device_id, "unverified"), ("user", custodian.user_id, "unverified")]), actors


@pytest.mark.stack(gateway={"auth_failure_burst": 3, "auth_failure_per_second": 0.01})
async def test_failed_authentication_is_rate_limited_per_source_on_every_route(api, stack):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as session:
        guesser = Api(session, stack.url)
        for _ in range(3):
            status, _, _ = await guesser.as_("sr_guess").call("GET", "/v1/me")
            assert status == 401
        async with session.get(stack.url + "/v1/me", headers={"Authorization": "Bearer sr_guess"}) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
            assert resp.headers["Content-Type"].startswith("application/problem+json")
        # Once over the limit, this address's credentials are not even tried, on any route: a
        # good one answers the same 429, so guessing on goes nowhere.
        status, _, _ = await guesser.as_(tenant.team.admin.token).call("GET", "/v1/users")
        assert status == 429
        body, _ = agent.request_body(tenant.key_id, EU_FACTS)
        async with session.post(stack.url + "/v1/agent/key-requests", data=body, headers=agent.signed(body)) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    # Another address is not locked out by the guesser: its operator and its agent carry on.
    status, _, _ = await tenant.admin.call("GET", "/v1/users")
    assert status == 200
    status, _, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200
