"""Every operator route, through HTTP: each tenant role allowed or refused exactly as the
permission table says, the provider admin refused every tenant-content route, and another
tenant's ids answering exactly like ids that never existed."""

from __future__ import annotations

import re

from services.gateway.permissions import PERMISSIONS, PROVIDER_PERMISSIONS
from services.gateway.roles import TENANT_ROLES
from services.gateway.routes import ROUTES

from .helpers import BareAgent, make_tenant, provider_admin

# Logging out would end the session the matrix goes on using; it is tested on its own.
OPERATOR_ROUTES = [r for r in ROUTES if r.auth == "operator" and r.path != "/v1/auth/logout"]


def _fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: ids.get(m.group(1), f"{m.group(1)}_never_existed"), path)


async def _probe(caller, method: str, path: str) -> tuple[int, str]:
    """Status and problem detail; success bodies are not read (an event stream never ends)."""
    headers = {"Authorization": f"Bearer {caller.token}"}
    json_body = {} if method in ("POST", "PUT", "PATCH") else None
    async with caller.session.request(method, caller.url + path, json=json_body, headers=headers) as resp:
        if resp.status < 400:
            return resp.status, ""
        body = await resp.json(content_type=None)
        return resp.status, body.get("detail", "")


def _refused(status: int, detail: str) -> bool:
    return status == 403 and detail.startswith("requires permission")


async def test_route_role_matrix_over_http(api):
    tenant = await make_tenant(api)
    people = {role: await tenant.team.for_role(role) for role in TENANT_ROLES}
    provider = await provider_admin(api)
    wrong = []
    for route in OPERATOR_ROUTES:
        path = _fill(route.path, {"role": "auditor"})
        for role, person in [*people.items(), ("provider_admin", provider)]:
            status, detail = await _probe(person, route.method, path)
            assert status != 401, (route.path, role, detail)
            expected = role in PERMISSIONS.get(route.permission, ()) or "member" in PERMISSIONS.get(route.permission, ())
            if role == "provider_admin" and route.permission not in PROVIDER_PERMISSIONS and not expected:
                expected = False  # the provider never reaches tenant content
            if expected == _refused(status, detail):
                wrong.append((route.method, route.path, role, status, detail))
    assert not wrong, wrong


async def test_other_tenants_ids_answer_like_ids_that_never_existed(api):
    a = await make_tenant(api, "alpha")
    b = await make_tenant(api, "beta")
    agent = await BareAgent.enroll(a, api)
    custodian = a.team.by_role["key_custodian"]
    status, tok, _ = await custodian.call("POST", "/v1/tokens", json={"name": "a-token"})
    assert status == 201
    a_ids = {"key_id": a.key_id, "policy_id": a.policy_id, "device_id": agent.device_id,
             "token_id": tok["token_id"], "user_id": custodian.user_id, "role": "key_custodian", "version": "1"}
    never = {k: f"{v[:4]}never_existed_0000" for k, v in a_ids.items() if k not in ("role", "version")} | {"role": "key_custodian", "version": "1"}
    differences = []
    for route in OPERATOR_ROUTES:
        if "{" not in route.path or route.permission in ("tenants.manage",):
            continue
        member = await b.team.for_permission(route.permission)
        probe_a = await _probe(member, route.method, _fill(route.path, a_ids))
        probe_never = await _probe(member, route.method, _fill(route.path, never))
        # Ids differ in the detail only if echoed; compare status and the detail with ids removed.
        same = probe_a[0] == probe_never[0] and re.sub(r"\w*never_existed_0000|\w+_[0-9a-f]{32}", "ID", probe_a[1]) == \
            re.sub(r"\w*never_existed_0000|\w+_[0-9a-f]{32}", "ID", probe_never[1])
        if not same or probe_a[0] < 400:
            differences.append((route.method, route.path, probe_a, probe_never))
        if route.method in ("GET", "DELETE") and probe_a[0] != 404:
            differences.append((route.method, route.path, "expected 404", probe_a))
    assert not differences, differences
    # And A's resources are untouched.
    status, keys, _ = await a.admin.call("GET", f"/v1/keys/{a.key_id}")
    assert status == 200
    status, me, _ = await api.as_(tok["token"]).call("GET", "/v1/me")
    assert status == 200
