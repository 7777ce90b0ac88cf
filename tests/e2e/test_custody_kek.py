"""Tenant KEK rotation: data keys are re-wrapped in the background with visible progress, no
release fails meanwhile, a keysvc killed mid-way resumes from its cursor and loses nothing,
and the old KEK is retired at the end. Automatic rotation by period, run by the scheduler."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from .helpers import EU_FACTS, BareAgent, audit_records_until, make_tenant


def _raw(stack, collection: str):
    return stack.client[f"{stack.key_settings.db_prefix}keysvc"][collection]


async def _until(check, timeout: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.05)


# Small throttled batches so the rotation is observably in progress when keysvc is stopped: after
# the check sees 8 of 40 re-wrapped, eight more batches keep it running for at least 12 s, so a slow
# status call and stop on a busy box do not let it finish first (4 s did not, with both cores busy).
@pytest.mark.stack(keysvc={"kek_rewrap_batch": 4, "kek_rewrap_pause_seconds": 1.5})
async def test_kek_rotation_resumes_after_a_crash_and_no_release_fails(api, stack):
    tenant = await make_tenant(api)
    admin = tenant.admin
    agent = await BareAgent.enroll(tenant, api)
    key_ids = [tenant.key_id]
    for i in range(29):
        status, key, _ = await admin.call("POST", "/v1/keys", json={"name": f"vol-{i}"})
        key_ids.append(key["key_id"])
    for key_id in key_ids[:10]:
        await admin.call("POST", f"/v1/keys/{key_id}/rotate", json={})
    sample = key_ids[:3] + key_ids[-3:]
    before = {}
    for key_id in sample:
        status, out, key = await agent.request(key_id, EU_FACTS)
        assert status == 200, out
        before[key_id] = key
    status, v1, old_key = await agent.request(key_ids[0], EU_FACTS, key_version=1)

    status, started, _ = await admin.call("POST", "/v1/custody/kek/rotate")
    assert status == 202 and started["to_version"] == 2 and started["total"] == 40, started
    status, out, _ = await admin.call("POST", "/v1/custody/kek/rotate")
    assert status == 409  # one rotation at a time

    async def releases_meanwhile():
        codes = []
        for key_id in sample:
            status, _, key = await agent.request(key_id, EU_FACTS)
            codes.append(status == 200 and key == before[key_id])
        return codes

    assert all(await releases_meanwhile())

    async def part_done():
        status, out, _ = await admin.call("GET", "/v1/custody/kek")
        rot = out["rotation"]
        return rot if rot["status"] == "running" and rot["rewrapped"] >= 8 else None

    progress = await _until(part_done)
    assert progress and progress["total"] == 40, progress
    await stack.stop("keysvc")
    doc = await _raw(stack, "kek_rotations").find_one({"tenant_id": tenant.tenant_id})
    assert doc["status"] == "running" and 8 <= doc["rewrapped"] < 40 and doc["cursor"] is not None, doc
    left = await _raw(stack, "key_versions").count_documents({"tenant_id": tenant.tenant_id, "kek_version": 1})
    assert left > 0
    # The worst moment to crash: batches re-wrapped but their progress not yet saved. The walk
    # starts over, finds those keys done, and the final count must still cover every key.
    await _raw(stack, "kek_rotations").update_one({"tenant_id": tenant.tenant_id}, {"$set": {"cursor": None, "rewrapped": 0}})
    await stack.start("keysvc")

    assert all(await releases_meanwhile())

    async def finished():
        status, out, _ = await admin.call("GET", "/v1/custody/kek")
        return out if out["rotation"]["status"] == "done" else None

    done = await _until(finished)
    assert done and done["kek_version"] == 2 and done["rotation"]["rewrapped"] == 40, done
    versions = await _raw(stack, "key_versions").find({"tenant_id": tenant.tenant_id}).to_list(None)
    assert len(versions) == 40 and {v["kek_version"] for v in versions} == {2}
    keks = await _raw(stack, "keks").find({"tenant_id": tenant.tenant_id}).to_list(None)
    assert [k["kek_version"] for k in keks] == [2]  # the old KEK is retired (shredded)

    assert all(await releases_meanwhile())
    status, _, again = await agent.request(key_ids[0], EU_FACTS, key_version=1)
    assert status == 200 and again == old_key
    records = await audit_records_until(admin, lambda rs: any(r["action"] == "kek.rotated" for r in rs))
    assert [r["details"]["kek_version"] for r in records if r["action"] == "kek.rotated"] == [2]
    assert any(r["action"] == "kek.rotation_started" for r in records)


async def test_automatic_rotation_by_period_runs_once_and_agents_learn_the_latest_version(api, stack):
    tenant = await make_tenant(api)
    admin = tenant.admin
    agent = await BareAgent.enroll(tenant, api)
    status, key, _ = await admin.call("POST", "/v1/keys", json={"name": "auto", "rotation_period_seconds": 3600})
    assert status == 201 and key["next_rotation_at"], key
    status, out, _ = await admin.call("POST", "/v1/keys", json={"name": "too-fast", "rotation_period_seconds": 60})
    assert status == 422 and out["field"] == "rotation_period_seconds"
    status, out, _ = await agent.request(key["key_id"], EU_FACTS)
    assert out["key_version"] == 1

    # A second keysvc instance competes for the scheduler lease: still exactly one rotation.
    from services.keysvc import app as keysvc

    extra_bus = await stack.bus_for("keysvc-2")
    extra = await keysvc.start(stack.key_settings, bus=extra_bus, client=stack.client, root_key=stack.root_key)
    try:
        # An hour is too long for a test: make the period elapse by back-dating the version.
        an_hour_ago = datetime.now(UTC) - timedelta(seconds=3601)
        await _raw(stack, "key_versions").update_one({"tenant_id": tenant.tenant_id, "key_id": key["key_id"]},
                                                     {"$set": {"created_at": an_hour_ago}})
        await _raw(stack, "keys").update_one({"tenant_id": tenant.tenant_id, "key_id": key["key_id"]},
                                             {"$set": {"next_rotation_at": an_hour_ago + timedelta(seconds=3600)}})

        async def rotated():
            status, out, _ = await admin.call("GET", f"/v1/keys/{key['key_id']}")
            return out if out["latest_version"] >= 2 else None

        out = await _until(rotated)
        assert out and out["latest_version"] == 2
        await asyncio.sleep(0.5)  # several scheduler ticks of both instances: no second rotation
        versions = _raw(stack, "key_versions").find({"tenant_id": tenant.tenant_id, "key_id": key["key_id"]})
        assert sorted([v["version"] async for v in versions]) == [1, 2]
    finally:
        await extra.stop()
        await extra_bus.close()

    status, out, _ = await agent.request(key["key_id"], EU_FACTS, key_version=1)
    assert status == 200 and out["key_version"] == 1 and out["latest_version"] == 2
    records = await audit_records_until(
        admin, lambda rs: any(r["action"] == "key.rotated" and r["resource"]["id"] == key["key_id"] for r in rs))
    auto = [r for r in records if r["action"] == "key.rotated" and r["resource"]["id"] == key["key_id"]]
    assert len(auto) == 1 and "automatic" in auto[0]["details"]["reason"]
