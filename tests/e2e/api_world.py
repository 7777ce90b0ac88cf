"""A tenant with one of everything, for tests that walk every route (schemathesis, the hostile-body
fuzz): real ids for the path parameters, and a signed-in token for each role."""

from __future__ import annotations

import json
from dataclasses import dataclass

from shared.crypto import httpsig

from .helpers import ALLOW_EU, EU_FACTS, BareAgent, TeamApi, Tenant, make_team, provider_admin

TENANT_ROLES = ("tenant_admin", "security_officer", "key_custodian", "approver", "auditor")


@dataclass
class World:
    ids: dict[str, str]  # path parameter -> a real id
    tokens: dict[str, str]  # role (and "provider", "throwaway", "bootstrap") -> bearer token
    agent: BareAgent

    def token_for(self, path: str, permission: str | None) -> str | None:
        """The token of a role holding `permission`; a throwaway user's for what may end a session."""
        from services.gateway.permissions import PERMISSIONS

        if permission is None:
            return None
        if path in ("/v1/auth/logout", "/v1/me/password") or path.startswith("/v1/users/{user_id}"):
            return self.tokens["throwaway"] if permission == "account.self" else self.tokens["tenant_admin"]
        if permission == "accounts.bootstrap":
            return self.tokens["bootstrap"]
        holders = PERMISSIONS.get(permission, frozenset())
        return next((self.tokens[r] for r in TENANT_ROLES if r in holders), self.tokens["provider"])

    def path(self, template: str) -> str:
        for name, value in self.ids.items():
            template = template.replace("{" + name + "}", value)
        return template

    def signed(self, url: str, method: str, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        headers.update(httpsig.sign_request(method=method, url=url, headers=headers, body=body,
                                            key_id=self.agent.key_id, private_key=self.agent.signing_key))
        return headers


async def make_world(api) -> World:
    team = await make_team(api, "worldco")
    admin = TeamApi(team)
    made = {}
    for name, path, body in (
        ("key", "/v1/keys", {"name": "world-vol"}), ("policy", "/v1/policies", ALLOW_EU),
        ("group", "/v1/groups", {"name": "fleet", "kind": "device", "members": ["dev_x"]}),
        ("forwarder", "/v1/audit/forwarders", {"name": "siem", "kind": "webhook", "url": "http://127.0.0.1:9/hook"}),
    ):
        status, made[name], _ = await admin.call("POST", path, json=body)
        assert status == 201, made[name]
    tenant = Tenant(team.tenant_id, admin, made["key"]["key_id"], made["policy"]["policy_id"], team)
    agent = await BareAgent.enroll(tenant, api)
    status, released, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200, released
    volume = json.dumps({"key_id": tenant.key_id, "key_version": 1, "device": "/dev/vdb",
                         "luks_uuid": "0b6c4a8e-1f2d-4e3c-8a7b-9c0d1e2f3a4b"}).encode()
    volume_url = api.url + "/v1/agent/volumes"
    headers = {"Content-Type": "application/json"}
    headers.update(httpsig.sign_request(method="POST", url=volume_url, headers=headers, body=volume,
                                        key_id=agent.key_id, private_key=agent.signing_key))
    status, registered, _ = await api.as_(None).call("POST", "/v1/agent/volumes", data=volume, headers=headers)
    assert status == 201, registered
    throwaway = await team.user("auditor")
    status, token, _ = await team.admin.call("POST", "/v1/tokens", json={"name": "spare"})
    assert status == 201, token
    provider = await provider_admin(api)
    status, spare_tenant, _ = await provider.call("POST", "/v1/tenants", json={"name": "spare", "admin_email": "spare-admin@spare.example"})
    assert status == 201, spare_tenant
    ids = {
        "key_id": tenant.key_id, "policy_id": tenant.policy_id, "group_id": made["group"]["group_id"],
        "forwarder_id": made["forwarder"]["forwarder_id"], "device_id": agent.device_id,
        "request_id": released["request_id"], "user_id": throwaway.user_id, "token_id": token["token_id"],
        "tenant_id": spare_tenant["tenant_id"], "version": "1", "role": "auditor", "asset": "init.js",
        "approval_id": "apr_none", "archive_id": "arc_none", "change_id": "chg_none",
        "volume_id": registered["volume_id"],
    }
    tokens = {"provider": provider.token, "throwaway": throwaway.token, "bootstrap": api.token}
    for role in TENANT_ROLES:
        tokens[role] = (await team.for_role(role)).token
    return World(ids, tokens, agent)
