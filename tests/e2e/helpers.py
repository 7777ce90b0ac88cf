"""Test-side helpers: set up a tenant through the API, and a bare agent that signs requests
itself, so tests can also send what a well-behaved agent never would (tampered, replayed)."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared.crypto import httpsig, release

ALLOW_EU = {
    "name": "eu-volumes",
    "disclose": "reasons",
    "rules": [
        {"id": "eu-only", "effect": "allow",
         "when": {"all": [{"fact": "identity.region", "op": "in", "value": ["eu-west-1", "eu-central-1"]},
                          {"fact": "integrity.firewall_enabled", "op": "equals", "value": True}]}},
    ],
}
EU_FACTS = {"identity": {"region": "eu-west-1", "cloud_provider": "aws"}, "integrity": {"firewall_enabled": True}}


def raw(public_key) -> str:
    return base64.b64encode(
        public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()


@dataclass
class Tenant:
    tenant_id: str
    admin: object  # conftest.Api with the tenant admin token
    key_id: str
    policy_id: str


async def make_tenant(api, name: str = "acme", policy: dict | None = None, algorithm: str = "AES-256") -> Tenant:
    status, body, _ = await api.call("POST", "/v1/tenants", json={"name": name})
    assert status == 201, body
    admin = api.as_(body["admin_token"])
    status, key, _ = await admin.call("POST", "/v1/keys", json={"name": f"{name}-vol", "algorithm": algorithm})
    assert status == 201, key
    status, pol, _ = await admin.call("POST", "/v1/policies", json=policy or ALLOW_EU)
    assert status == 201, pol
    return Tenant(body["tenant_id"], admin, key["key_id"], pol["policy_id"])


class BareAgent:
    def __init__(self, api, signing_key: Ed25519PrivateKey, key_id: str, tenant_id: str):
        self.api, self.signing_key, self.key_id, self.tenant_id = api.as_(None), signing_key, key_id, tenant_id
        self.device_id = key_id.split("/", 1)[1]

    @classmethod
    async def enroll(cls, tenant: Tenant, api, name: str = "vm-1") -> "BareAgent":
        status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": name})
        assert status == 201, enr
        key = Ed25519PrivateKey.generate()
        status, dev, _ = await api.as_(None).call(
            "POST", "/v1/agent/enroll", json={"enrollment_token": enr["token"], "name": name, "public_key": raw(key.public_key())}
        )
        assert status == 201, dev
        return cls(api, key, dev["key_id"], dev["tenant_id"])

    def signed(self, body: bytes, **overrides) -> dict[str, str]:
        url = self.api.url + "/v1/agent/key-requests"
        headers = {"Content-Type": "application/json"}
        headers.update(httpsig.sign_request(method="POST", url=url, headers=headers, body=body,
                                            key_id=self.key_id, private_key=self.signing_key, **overrides))
        return headers

    def request_body(self, key_id: str, facts: dict, key_version: int | None = None) -> tuple[bytes, X25519PrivateKey]:
        ephemeral = X25519PrivateKey.generate()
        body = {"key_id": key_id, "facts": facts, "ephemeral_public_key": raw(ephemeral.public_key())}
        if key_version is not None:
            body["key_version"] = key_version
        return json.dumps(body).encode(), ephemeral

    async def request(self, key_id: str, facts: dict, key_version: int | None = None):
        body, ephemeral = self.request_body(key_id, facts, key_version)
        status, out, ctype = await self.api.call("POST", "/v1/agent/key-requests", data=body, headers=self.signed(body))
        key = None
        if status == 200:
            key = release.open_sealed(
                base64.b64decode(out["sealed_key"]), ephemeral,
                release.release_info(tenant_id=self.tenant_id, request_id=out["request_id"],
                                     key_id=out["key_id"], key_version=out["key_version"]),
            )
        return status, out, key


async def audit_records(admin, *, expect_at_least: int = 0, timeout: float = 10.0) -> list[dict]:
    """All of a tenant's audit records, waiting until at least `expect_at_least` have landed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        records, after = [], 0
        while True:
            status, page, _ = await admin.call("GET", f"/v1/audit?after={after}&limit=1000")
            assert status == 200, page
            records += page["items"]
            if page["next"] is None:
                break
            after = page["next"]
        if len(records) >= expect_at_least or asyncio.get_running_loop().time() > deadline:
            return records
        await asyncio.sleep(0.1)
