"""The audit tail cannot be cut unnoticed: `strongroom audit verify` compares the chain it walked with
the head the status endpoint reports and with signed checkpoints, including one kept elsewhere."""

from __future__ import annotations

import asyncio
import json

import pytest

from strongroom.cli import main

from .helpers import audit_records, make_tenant


async def _settled(tenant, keys: int) -> list[dict]:
    """Create `keys` keys, then wait until the listed records reach the head the status reports."""
    for i in range(keys):
        status, body, _ = await tenant.admin.call("POST", "/v1/keys", json={"name": f"tail{i}", "algorithm": "AES-256"})
        assert status == 201, body
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        records = await audit_records(tenant.admin)
        status, head, _ = await tenant.admin.call("GET", "/v1/audit/status")
        assert status == 200, head
        created = sum(r["action"] == "key.created" for r in records)
        if created == keys + 1 and records and records[-1]["seq"] == head["last_seq"]:
            return records
        assert asyncio.get_running_loop().time() < deadline, (created, head)
        await asyncio.sleep(0.1)


async def test_deleting_the_newest_record_fails_verify_naming_it(api, stack, mongo_client, db_prefix, capsys):
    tenant = await make_tenant(api)
    records = await _settled(tenant, 3)
    newest = records[-1]["seq"]
    coll = mongo_client[f"{db_prefix}auditsvc"]["records"]
    deleted = await coll.delete_one({"tenant_id": tenant.tenant_id, "seq": newest})
    assert deleted.deleted_count == 1

    capsys.readouterr()
    code = await asyncio.to_thread(main, ["--url", stack.url, "--token", tenant.admin.token, "audit", "verify"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"missing seq {newest}" in out, out

    code = await asyncio.to_thread(main, ["--url", stack.url, "--token", tenant.admin.token, "audit", "verify", "--json"])
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{\n"):])
    assert code == 1 and result["ok"] is False
    assert result["missing"] == [[newest, newest]], result


async def _signed_and_recorded(tenant) -> tuple[dict, list[dict]]:
    """The newest checkpoint, once every checkpoint's own record has landed and the head is still."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        status, page, _ = await tenant.admin.call("GET", "/v1/audit/checkpoints")
        assert status == 200, page
        records = await audit_records(tenant.admin)
        status, head, _ = await tenant.admin.call("GET", "/v1/audit/status")
        recorded = {r["details"]["checkpoint_seq"] for r in records if r["action"] == "audit.checkpointed"}
        signed = {c["seq"] for c in page["items"]}
        if signed and signed <= recorded and records[-1]["seq"] == head["last_seq"]:
            return page["items"][-1], records
        assert asyncio.get_running_loop().time() < deadline, (signed, recorded)
        await asyncio.sleep(0.1)


# Checkpoints by count only (the e2e stack signs by time only when a test asks).
@pytest.mark.stack(audit={"checkpoint_every_records": 5})
async def test_a_checkpoint_kept_elsewhere_exposes_a_cut_the_store_hides(
        api, stack, mongo_client, db_prefix, tmp_path, capsys):
    tenant = await make_tenant(api)
    await _settled(tenant, 5)
    kept, records = await _signed_and_recorded(tenant)
    kept_file = tmp_path / "kept-checkpoint.json"
    kept_file.write_text(json.dumps(kept))
    argv = ["--url", stack.url, "--token", tenant.admin.token, "audit", "verify"]
    capsys.readouterr()
    assert await asyncio.to_thread(main, [*argv, "--trusted-checkpoint", str(kept_file)]) == 0
    assert "chain ok" in capsys.readouterr().out

    # Someone with write access to the store cuts the chain below the newest checkpoint and removes
    # every trace the store holds: the records, that checkpoint and the head auditsvc reports.
    cut = kept["seq"] - 1
    survivor = next(r for r in records if r["seq"] == cut - 1)
    db = mongo_client[f"{db_prefix}auditsvc"]
    await db["records"].delete_many({"tenant_id": tenant.tenant_id, "seq": {"$gte": cut}})
    await db["checkpoints"].delete_many({"tenant_id": tenant.tenant_id, "seq": {"$gte": cut}})
    await db["chain_heads"].update_one({"_id": tenant.tenant_id},
                                       {"$set": {"seq": survivor["seq"], "hash": survivor["hash"]}})
    assert await asyncio.to_thread(main, argv) == 0  # what the store alone can no longer show

    code = await asyncio.to_thread(main, [*argv, "--trusted-checkpoint", str(kept_file)])
    out = capsys.readouterr().out
    assert code == 1 and f"trusted checkpoint covers seq {kept['seq']}" in out, out
    assert f"missing seq {cut}-{kept['seq']}" in out, out
