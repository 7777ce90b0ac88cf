"""Root of trust: a sealed keysvc refuses releases with a clear status; initialisation seals each
Shamir share to a different root custodian, who fetches it once; each custodian submits their own
share and progress is reported; m shares unseal; only the provider's root custodians may do this;
shares are stored nowhere in the clear; re-keying the root keeps releases working and retires the
old shares."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from services.keysvc import app as keysvc_app

from .helpers import (
    EU_FACTS,
    BareAgent,
    make_tenant,
    new_shares,
    post_share,
    provider_admin,
    root_custodians,
)


async def _restart_sealed(stack) -> None:
    await stack.stop("keysvc")
    stack.root_key = None
    await stack.start("keysvc")


async def _unseal(custodians, stack, shares, numbers):
    """Each custodian submits their own share: `numbers` picks custodians and shares alike."""
    for n in numbers:
        status, out = await post_share(custodians[n], stack, shares[n])
        assert status == 200, out
    return out


async def _everything_stored(stack) -> str:
    """Every document of every service database of this stack, as text."""
    dump = []
    for name in await stack.client.list_database_names():
        if not name.startswith(stack.key_settings.db_prefix):
            continue
        db = stack.client[name]
        for coll in await db.list_collection_names():
            async for doc in db[coll].find({}):
                dump.append(json.dumps(doc, default=str))
    return "\n".join(dump)


async def _rekey_finished(provider, timeout: float = 10.0) -> dict:
    """Wait until the re-key's grace period is over and the previous root is retired."""
    for _ in range(int(timeout / 0.1)):
        status, out, _ = await provider.call("GET", "/v1/custody/status")
        assert status == 200, out
        if out["rekey"] is None:
            return out
        await asyncio.sleep(0.1)
    raise AssertionError(f"the root re-key did not finish: {out}")


@pytest.mark.stack(keysvc={"root_rekey_grace_seconds": 0.5})
async def test_sealed_custody_initialises_unseals_with_m_of_n_and_rekeys_without_downtime(api, stack):
    await _restart_sealed(stack)
    provider = await provider_admin(api)
    status, out, _ = await provider.call("GET", "/v1/custody/status")
    assert status == 200 and out["sealed"] and not out["initialized"], out
    custodians = await root_custodians(api, 5)

    # A refusal names the offending field; a rule across fields names none.
    for body, field in (({"shares": 5, "threshold": 6}, None), ({"shares": 17, "threshold": 3}, "shares"),
                        ({"threshold": 1}, "threshold")):
        status, out = await new_shares(custodians, stack, "/v1/custody/init", body)
        assert status == 422 and out.get("field") == field, (body, out)
    status, init = await new_shares(custodians, stack, "/v1/custody/init", {"shares": 5, "threshold": 3})
    assert status == 201 and len(init["opened"]) == 5 and init["threshold"] == 3, init
    shares = init["opened"]
    status, out, _ = await custodians[1].call("POST", "/v1/custody/init", json={"threshold": 3})
    assert status == 409  # only once

    # Still sealed after init: the custodians prove their shares by unsealing.
    status, out = await post_share(custodians[4], stack, shares[4])
    assert status == 200 and out == {"sealed": True, "submitted": 1, "needed": 3}, out
    damaged = shares[0].split()
    damaged[5] = "academic" if damaged[5] != "academic" else "acid"
    status, out = await post_share(custodians[0], stack, " ".join(damaged))
    assert status == 422 and out["field"] == "sealed_share" and damaged[5] not in out["detail"], out
    status, out = await post_share(custodians[0], stack, "too short")
    assert status == 422 and out["field"] == "sealed_share"
    out = await _unseal(custodians, stack, shares, [1, 3])
    assert out == {"sealed": False, "submitted": 3, "needed": 3}, out

    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    status, _, key = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200

    # A tenant's people may not touch the root of trust.
    status, out, _ = await tenant.admin.call("POST", "/v1/custody/unseal", json={"sealed_share": "AAAA", "round_id": "unr_x"})
    assert status == 403
    status, out, _ = await tenant.admin.call("GET", "/v1/custody/status")
    assert status == 403

    # A restart comes back sealed: releases are refused with a clear status until m shares are in.
    await _restart_sealed(stack)
    status, out, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 503 and "sealed" in out["detail"], out
    status, out, _ = await provider.call("GET", "/v1/custody/status")
    assert out["sealed"] and out["initialized"] and out["threshold"] == 3
    await _unseal(custodians, stack, shares, [2, 0, 4])
    status, _, again = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and again == key

    # Re-key while agents keep asking: no request fails. The new shares take over only once a
    # threshold of them is verified; afterwards only the new shares work.
    releases, rekey = await asyncio.gather(_keep_releasing(agent, tenant.key_id),
                                           _rekey_and_verify(custodians, stack, shares))
    assert releases == [200] * 15
    await _rekey_finished(provider)
    await _restart_sealed(stack)
    await post_share(custodians[0], stack, shares[0])
    await post_share(custodians[1], stack, shares[1])
    status, out = await post_share(custodians[2], stack, shares[2])
    assert status == 422 and "fingerprint" in out["detail"], out
    await _unseal(custodians, stack, rekey["opened"], [1, 2])
    status, _, again = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and again == key

    # No share was stored anywhere (any service's database, audit log included).
    stored = await _everything_stored(stack)
    for share in shares + rekey["opened"]:
        assert share not in stored and " ".join(share.split()[:6]) not in stored


async def _keep_releasing(agent, key_id: str) -> list[int]:
    results = []
    for _ in range(15):
        results.append((await agent.request(key_id, EU_FACTS))[0])
    return results


async def _rekey_and_verify(custodians, stack, shares: list[str]) -> dict:
    status, rekey = await new_shares(custodians[:3], stack, "/v1/custody/rekey", {"threshold": 2})
    assert status == 200 and len(rekey["opened"]) == 3, rekey
    status, out, _ = await custodians[3].call("POST", "/v1/custody/rekey", json={"threshold": 2})
    assert status == 409, out  # one at a time
    status, out = await post_share(custodians[0], stack, shares[0], purpose="rekey-verify")
    assert status == 422 and out["field"] == "sealed_share", out  # an old share proves nothing
    status, out = await post_share(custodians[0], stack, rekey["opened"][0], purpose="rekey-verify")
    assert status == 200 and out == {"verified": False, "submitted": 1, "needed": 2}, out
    status, pending, _ = await custodians[0].call("GET", "/v1/custody/status")
    assert pending["rekey"]["status"] == "copying" and pending["root_fingerprint"] == rekey["root_fingerprint"]
    status, out = await post_share(custodians[2], stack, rekey["opened"][2], purpose="rekey-verify")
    assert status == 200 and out["verified"] and out["root_fingerprint"] == rekey["new_fingerprint"], out
    return rekey


# Small throttled batches so copying is observably in progress when keysvc is stopped.
@pytest.mark.stack(keysvc={"kek_rewrap_batch": 2, "kek_rewrap_pause_seconds": 0.05, "root_rekey_grace_seconds": 0.5})
async def test_keysvc_stopped_mid_rekey_resumes_and_every_key_still_unwraps(api, stack):
    provider = await provider_admin(api)
    custodians = await root_custodians(api, 3)
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    status, _, key = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200
    hierarchy = stack.running["keysvc"].hierarchy
    await asyncio.gather(*(hierarchy.current_kek(f"ten_bulk_{i:03d}") for i in range(80)))
    keks = stack.client[f"{stack.key_settings.db_prefix}keysvc"]["keks"]
    total = await keks.count_documents({})

    status, rekey = await new_shares(custodians, stack, "/v1/custody/rekey", {"threshold": 2})
    assert status == 200, rekey
    new_fp, new = rekey["new_fingerprint"], rekey["opened"]
    for _ in range(500):
        if await keks.count_documents({"next_fp": new_fp}) >= 10:
            break
        await asyncio.sleep(0.01)
    await stack.stop("keysvc")  # mid-copy
    copied = await keks.count_documents({"next_fp": new_fp})
    assert 10 <= copied < total, (copied, total)
    await stack.start("keysvc")  # the old root is still the configured one: nothing switched
    status, _, again = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and again == key

    # Copying resumes; a tenant created meanwhile gets its KEK under both roots.
    late = await make_tenant(api)
    late_agent = await BareAgent.enroll(late, api)
    status, _, late_key = await late_agent.request(late.key_id, EU_FACTS)
    assert status == 200
    status, out = await post_share(custodians[1], stack, new[1], purpose="rekey-verify")
    assert status == 200 and not out["verified"], out
    await stack.stop("keysvc")  # between two verified shares
    await stack.start("keysvc")
    status, out = await post_share(custodians[0], stack, new[0], purpose="rekey-verify")
    assert status == 200 and out["verified"], out
    await stack.stop("keysvc")  # right after the switch, before the old root is retired

    # Back sealed: only the new shares exist for the recorded root, and they open everything.
    stack.root_key = None
    await stack.start("keysvc")
    await _unseal(custodians, stack, new, [0, 1])
    for who, key_id, expected in ((agent, tenant.key_id, key), (late_agent, late.key_id, late_key)):
        status, _, again = await who.request(key_id, EU_FACTS)
        assert status == 200 and again == expected
    await _rekey_finished(provider)
    assert await keks.count_documents({"root_fp": new_fp}) == await keks.count_documents({}) > total
    await _restart_sealed(stack)
    await _unseal(custodians, stack, new, [1, 2])
    for who, key_id, expected in ((agent, tenant.key_id, key), (late_agent, late.key_id, late_key)):
        status, _, again = await who.request(key_id, EU_FACTS)
        assert status == 200 and again == expected


async def _second_keysvc(stack, root_key=None):
    """Another keysvc instance on the same broker and store (its own connection, its own peer key)."""
    bus = await stack.bus_for("keysvc")
    return bus, await keysvc_app.start(stack.key_settings, bus=bus, client=stack.client, root_key=root_key)


async def _until_unsealed(*instances, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if not any(r.hierarchy.sealed for r in instances):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not every keysvc instance unsealed")


async def test_two_keysvc_instances_unseal_together_and_a_restarted_one_is_handed_the_root(api, stack):
    custodians = await root_custodians(api, 5)
    await _restart_sealed(stack)
    bus_b, b = await _second_keysvc(stack)
    a = stack.running["keysvc"]
    try:
        status, init = await new_shares(custodians, stack, "/v1/custody/init", {"threshold": 3})
        assert status == 201, init
        shares = init["opened"]
        # Each share goes to whichever instance takes the request; both end up unsealed.
        for n in (3, 0, 4):
            status, out = await post_share(custodians[n], stack, shares[n])
            assert status in (200, 409), out  # 409: the instance taking it had already unsealed
        await _until_unsealed(a, b)
        assert a.hierarchy.root_fingerprint == b.hierarchy.root_fingerprint == init["root_fingerprint"]
        root = a.hierarchy.root_key(init["root_fingerprint"]).get_secret_value()

        tenant = await make_tenant(api)
        agent = await BareAgent.enroll(tenant, api)
        results = [await agent.request(tenant.key_id, EU_FACTS) for _ in range(8)]
        assert [r[0] for r in results] == [200] * 8 and len({r[2] for r in results}) == 1

        # Instance B restarts sealed: A hands it the root, sealed to B's new key; nobody re-submits shares.
        await b.stop()
        await bus_b.close()
        bus_b, b = await _second_keysvc(stack)
        assert b.hierarchy.sealed
        await _until_unsealed(b)
        assert b.hierarchy.root_fingerprint == init["root_fingerprint"]
        results = [await agent.request(tenant.key_id, EU_FACTS) for _ in range(8)]
        assert [r[0] for r in results] == [200] * 8

        # Neither the shares nor the root key are anywhere in the store or the audit log, and once
        # every instance is unsealed the round of sealed shares is gone too.
        keysvc_db = stack.client[f"{stack.key_settings.db_prefix}keysvc"]
        for _ in range(100):
            if await keysvc_db["custody"].find_one({"name": "unseal"}) is None:
                break
            await asyncio.sleep(0.05)
        assert await keysvc_db["custody"].find_one({"name": "unseal"}) is None
        stored = await _everything_stored(stack)
        for share in shares:
            assert share not in stored and " ".join(share.split()[:4]) not in stored
        assert root.hex() not in stored and base64.b64encode(root).decode() not in stored and repr(root) not in stored
    finally:
        await b.stop()
        await bus_b.close()
