"""Signed checkpoints through the gateway: published, listed, verifiable with the published key, and
they expose a rewrite that recomputed every hash. Also the device/key filters and the status metric."""

from __future__ import annotations

import asyncio
import json

import pytest

from shared.audit_chain import ChainHead, link, verify_chain
from shared.signatures import load_public_pem
from strongroom.cli import main

from .helpers import EU_FACTS, BareAgent, audit_records, make_tenant

pytestmark = pytest.mark.stack(audit={"checkpoint_every_records": 5, "checkpoint_every_seconds": 0.3})


async def _checkpoints(admin, at_least: int, timeout: float = 10.0) -> list[dict]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, page, _ = await admin.call("GET", "/v1/audit/checkpoints")
        assert status == 200, page
        if len(page["items"]) >= at_least or asyncio.get_running_loop().time() > deadline:
            return page["items"]
        await asyncio.sleep(0.05)


async def test_checkpoints_are_signed_published_and_pin_the_chain(api, stack, mongo_client, db_prefix):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    for _ in range(3):
        status, _, key = await agent.request(tenant.key_id, EU_FACTS)
        assert status == 200 and key is not None

    checkpoints = await _checkpoints(tenant.admin, 2)
    assert len(checkpoints) >= 2
    status, keys, _ = await tenant.admin.call("GET", "/v1/audit/signing-key")
    assert status == 200 and keys["current"]["algorithm"] == "Ed25519"
    public = load_public_pem(keys["current"]["public_key_pem"])
    assert {c["key_id"] for c in checkpoints} == {keys["current"]["key_id"]}

    records = await audit_records(tenant.admin, expect_at_least=max(c["seq"] for c in checkpoints))
    # Every checkpoint was itself published and recorded in the chain it signs.
    recorded = [r for r in records if r["action"] == "audit.checkpointed"]
    assert {r["details"]["checkpoint_seq"] for r in recorded} >= {c["seq"] for c in checkpoints[:-1]}
    genesis = ChainHead.genesis(tenant.tenant_id)
    assert verify_chain(records, start=genesis, checkpoints=checkpoints, trusted_keys=[public]).ok

    # A rewrite that recomputes every hash from seq 2 on is self-consistent, but not signed.
    forged, head = [records[0]], ChainHead(tenant.tenant_id, records[0]["seq"], records[0]["hash"])
    for rec in records[1:]:
        body = dict(rec)
        if rec["seq"] == 2:
            body["outcome"] = "failure"
        linked = link(body, seq=rec["seq"], prev_hash=head.hash)
        forged.append(linked)
        head = ChainHead(tenant.tenant_id, linked["seq"], linked["hash"])
    assert verify_chain(forged, start=genesis).ok
    result = verify_chain(forged, start=genesis, checkpoints=checkpoints, trusted_keys=[public])
    assert not result.ok and "checkpoint" in result.problem

    # The same forgery written into the store is what `strongroom audit verify` reports.
    coll = mongo_client[f"{db_prefix}auditsvc"]["records"]
    for rec in forged[1:]:
        await coll.replace_one({"tenant_id": tenant.tenant_id, "seq": rec["seq"]}, {**rec})
    token = tenant.admin.token
    code = await asyncio.to_thread(main, ["--url", stack.url, "--token", token, "audit", "verify", "--json"])
    assert code == 1


async def test_cli_verify_checks_checkpoints_and_honours_a_pinned_key(api, stack, tmp_path, capsys):
    tenant = await make_tenant(api)
    await _checkpoints(tenant.admin, 1)
    token = tenant.admin.token
    code = await asyncio.to_thread(main, ["--url", stack.url, "--token", token, "audit", "verify"])
    out = capsys.readouterr().out
    assert code == 0 and "checkpoints ok" in out, out

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from services.auditsvc.signing import public_pem

    other = tmp_path / "other.pem"
    other.write_text(public_pem(Ed25519PrivateKey.generate().public_key()))
    code = await asyncio.to_thread(main, ["--url", stack.url, "--token", token, "audit", "verify", "--json",
                                          "--trusted-key", str(other)])
    out = capsys.readouterr().out  # log lines share stdout in-process: take the JSON document
    result = json.loads(out[out.index("{\n"):])
    assert code == 1 and "untrusted key" in result["problem"]


async def test_device_and_key_filters_and_status(api, stack):
    tenant = await make_tenant(api)
    a1 = await BareAgent.enroll(tenant, api, "vm-1")
    a2 = await BareAgent.enroll(tenant, api, "vm-2")
    assert (await a1.request(tenant.key_id, EU_FACTS))[0] == 200
    assert (await a2.request(tenant.key_id, EU_FACTS))[0] == 200
    # Checkpoint records land in between, so wait for the releases themselves, not a count.
    for _ in range(100):
        records = await audit_records(tenant.admin, expect_at_least=4 + 2 * 2 + 2 * 3)
        if sum(r["action"] == "key.released" for r in records) == 2:
            break
        await asyncio.sleep(0.1)

    status, page, _ = await tenant.admin.call("GET", f"/v1/audit?device={a1.device_id}")
    assert status == 200, page
    actions = [r["action"] for r in page["items"]]
    assert actions[0] == "device.enrolled" and {"key.requested", "key.decided", "key.released"} <= set(actions)
    assert all(a1.device_id in (r["resource"]["id"], r["details"].get("device_id")) for r in page["items"])

    status, page, _ = await tenant.admin.call("GET", f"/v1/audit?key={tenant.key_id}&device={a2.device_id}")
    assert status == 200 and len(page["items"]) == 3
    assert all(r["details"]["device_id"] == a2.device_id for r in page["items"])

    status, page, _ = await tenant.admin.call("GET", f"/v1/audit?key={tenant.key_id}&action=key.created")
    assert status == 200 and [r["resource"]["id"] for r in page["items"]] == [tenant.key_id]

    status, body, _ = await tenant.admin.call("GET", "/v1/audit/status")
    assert status == 200, body
    assert body["tenant_id"] == tenant.tenant_id and body["last_seq"] >= 14
    assert isinstance(body["queue_depth"], int) and body["ingestion_lag_seconds"] >= 0


@pytest.mark.parametrize("query, field", [
    ("since=yesterday", "since"),
    ("until=2024-13-01T00:00:00Z", "until"),
    ("since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z", "since"),
    ("limit=0", "limit"),
    ("after=-1", "after"),
    ("color=red", "color"),
    ("device=" + "d" * 300, "device"),
])
async def test_malformed_audit_filters_are_400_naming_the_field(api, stack, query, field):
    tenant = await make_tenant(api)
    status, body, ctype = await tenant.admin.call("GET", f"/v1/audit?{query}")
    assert status == 400 and ctype.startswith("application/problem+json"), body
    assert body["field"] == field


async def test_checkpoint_listing_rejects_a_bad_cursor(api, stack):
    tenant = await make_tenant(api)
    status, body, _ = await tenant.admin.call("GET", "/v1/audit/checkpoints?after=x")
    assert status == 400 and body["field"] == "after"
