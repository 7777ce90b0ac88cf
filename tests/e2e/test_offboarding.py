"""Offboarding a tenant through the API shreds it: the gateway's offboarding reaches keysvc through
the outbox, keysvc shreds the tenant's KEKs and wrapped keys and signs a tenant-destruction
certificate into the audit, and the provider sees offboarding -> offboarded with the counts."""

from __future__ import annotations

import asyncio
import base64

from shared.certificates import verify_certificate

from .helpers import EU_FACTS, BareAgent, make_tenant, provider_admin


def _raw(stack, service: str, collection: str):
    return stack.client[f"{stack.key_settings.db_prefix}{service}"][collection]


async def _offboarded(provider, tenant_id: str, timeout: float = 30.0) -> dict:
    """The tenant's entry in the provider's list once it is offboarded (or the last one seen)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, listed, _ = await provider.call("GET", "/v1/tenants")
        assert status == 200, listed
        item = next(t for t in listed["items"] if t["tenant_id"] == tenant_id)
        if item["status"] == "offboarded" or asyncio.get_running_loop().time() > deadline:
            return item
        await asyncio.sleep(0.2)


async def test_offboarding_through_the_api_shreds_the_tenant_and_certifies_it(api, stack):
    tenant = await make_tenant(api)
    other = await make_tenant(api, name="globex")
    agent = await BareAgent.enroll(tenant, api)
    for i in range(2):
        assert (await tenant.admin.call("POST", "/v1/keys", json={"name": f"extra-{i}"}))[0] == 201
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200
    status, signing, _ = await other.admin.call("GET", "/v1/custody/signing-key")
    public = base64.b64decode(signing["public_key"])
    provider = await provider_admin(api)

    status, out, _ = await provider.call("POST", f"/v1/tenants/{tenant.tenant_id}/offboard")
    assert status == 200 and out["status"] in ("offboarding", "offboarded"), out
    item = await _offboarded(provider, tenant.tenant_id)

    # The raw store holds no wrapped material of the tenant: no KEK, no wrapped version, no head copy.
    keysvc = lambda name: _raw(stack, "keysvc", name)  # noqa: E731
    tid = tenant.tenant_id
    assert await keysvc("keks").count_documents({"tenant_id": tid}) == 0
    assert await keysvc("key_versions").count_documents({"tenant_id": tid, "wrapped": {"$exists": True}}) == 0
    assert await keysvc("keys").count_documents({"tenant_id": tid, "latest_material.wrapped": {"$ne": None}}) == 0
    assert await keysvc("keys").count_documents({"tenant_id": tid, "state": {"$ne": "destroyed"}}) == 0
    # Another tenant is untouched.
    assert await keysvc("keks").count_documents({"tenant_id": other.tenant_id}) == 1
    assert (await other.admin.call("GET", f"/v1/keys/{other.key_id}"))[1]["state"] == "active"

    # The provider sees offboarded with the counts and the signed certificate, which verifies.
    assert item["status"] == "offboarded", item
    shred = item["offboarding"]
    assert shred["keys_destroyed"] == 3 and shred["kek_versions_shredded"] == [1], shred
    assert shred["wrapped_blobs_shredded"] == 3, shred
    certificate = shred["certificate"]
    assert verify_certificate(certificate, shred["signature"], public)
    assert certificate["tenant_id"] == tid and certificate["certificate_id"] == shred["certificate_id"]
    assert [k["kek_version"] for k in certificate["keks"]] == [1] and len(certificate["keks"][0]["wrapped_sha256"]) == 64
    assert not verify_certificate({**certificate, "keys": 0}, shred["signature"], public)

    # Every release for the tenant is refused, and the certificate is in the tenant's audit chain.
    status, refused, key = await agent.request(tenant.key_id, EU_FACTS)
    assert status != 200 and key is None, refused

    async def audited():
        return await _raw(stack, "auditsvc", "records").find_one({"tenant_id": tid, "action": "tenant.destroyed"})

    deadline = asyncio.get_running_loop().time() + 15
    while (record := await audited()) is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    assert record is not None
    assert verify_certificate(record["details"]["certificate"], record["details"]["signature"], public)

    # Offboarding again is refused; the shred ran once.
    assert (await provider.call("POST", f"/v1/tenants/{tid}/offboard"))[0] == 409
    assert await _raw(stack, "auditsvc", "records").count_documents({"tenant_id": tid, "action": "tenant.destroyed"}) == 1
