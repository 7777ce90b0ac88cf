"""Retention with a tiny window: old records are archived to a signed file that verifies offline, then
removed; the online chain still verifies from the archived head; reruns and interrupted runs are safe."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from datetime import datetime, timedelta

import pytest

from shared.audit_archive import read_archive
from strongroom.cli import main

from .helpers import audit_records, make_tenant

WINDOW_SECONDS = 1.5
# Small chunks, so even a small archive downloads in several (the gateway streams them).
pytestmark = pytest.mark.stack(audit={"archive_chunk_bytes": 700})


async def _keys(admin, prefix: str, n: int) -> None:
    for i in range(n):
        status, body, _ = await admin.call("POST", "/v1/keys", json={"name": f"{prefix}{i}", "algorithm": "AES-256"})
        assert status == 201, body


async def _aged_tenant(api):
    tenant = await make_tenant(api)
    status, body, _ = await tenant.admin.call("PUT", "/v1/audit/retention", json={"retention_days": WINDOW_SECONDS / 86400})
    assert status == 200, body
    await _keys(tenant.admin, "old", 5)
    await _key_records(tenant.admin, 1 + 5)
    old = await audit_records(tenant.admin)
    await asyncio.sleep(WINDOW_SECONDS + 0.5)  # let them age past the window (setup, not an assertion)
    await _keys(tenant.admin, "new", 3)
    await _key_records(tenant.admin, 1 + 5 + 3)
    return tenant, old


async def _key_records(admin, n: int) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        status, page, _ = await admin.call("GET", "/v1/audit?action=key.created")
        if len(page["items"]) >= n:
            return
        assert asyncio.get_running_loop().time() < deadline, page
        await asyncio.sleep(0.05)


async def test_old_records_are_archived_signed_removed_and_still_verifiable(api, stack, tmp_path, capsys):
    tenant, old = await _aged_tenant(api)
    status, run, _ = await tenant.admin.call("POST", "/v1/audit/retention/run")
    assert status == 200, run
    (archive,) = run["archives"]
    assert archive["state"] == "done" and archive["from_seq"] == 1
    assert archive["to_seq"] >= len(old)  # the retention setting's own record is old too

    online = await audit_records(tenant.admin)
    assert online[0]["seq"] == archive["to_seq"] + 1
    assert [r["seq"] for r in online] == list(range(archive["to_seq"] + 1, archive["to_seq"] + 1 + len(online)))
    # The rule itself: archived means older than the window when the run started; the rest stays.
    cutoff = (datetime.fromisoformat(archive["created_at"]) - timedelta(seconds=WINDOW_SECONDS)).isoformat()
    cutoff = cutoff.replace("+00:00", "Z")
    assert all(r["time"] >= cutoff for r in online if r["action"] != "audit.archived")

    # Rerunning changes nothing: no second archive, nothing more removed.
    # Rerunning never archives a range twice: it only picks up what aged since, right after.
    status, again, _ = await tenant.admin.call("POST", "/v1/audit/retention/run")
    assert status == 200, again
    assert all(a["from_seq"] > archive["to_seq"] for a in again["archives"])
    if again["archives"]:
        assert again["archives"][0]["from_seq"] == archive["to_seq"] + 1

    # The archive downloads, checks out against its sha256, and verifies offline with the pinned key.
    async with api.session.get(f"{api.url}/v1/audit/archives/{archive['archive_id']}",
                               headers={"Authorization": f"Bearer {tenant.admin.token}"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/gzip"
        data = await resp.read()
    assert len(data) > 2 * 700 and hashlib.sha256(data).hexdigest() == resp.headers["X-Archive-Sha256"]
    loaded = read_archive(data)
    assert all(r["time"] < cutoff for r in loaded.records)
    assert [r["seq"] for r in loaded.records] == list(range(1, archive["to_seq"] + 1))
    assert [r["event_id"] for r in loaded.records[: len(old)]] == [r["event_id"] for r in old]
    path = tmp_path / "archive.json.gz"
    path.write_bytes(data)
    _, keys, _ = await tenant.admin.call("GET", "/v1/audit/signing-key")
    pem = tmp_path / "audit-key.pem"
    pem.write_text(keys["current"]["public_key_pem"])
    argv = ["--token", "unused", "audit", "verify", "--from-file", str(path), "--trusted-key", str(pem)]
    assert await asyncio.to_thread(main, argv) == 0
    assert f"chain ok: {archive['to_seq']} records" in capsys.readouterr().out

    # An edited record inside the archive is caught offline.
    doc = json.loads(gzip.decompress(data))
    doc["records"][1]["outcome"] = "failure"
    tampered = tmp_path / "tampered.json.gz"
    tampered.write_bytes(gzip.compress(json.dumps(doc).encode()))
    assert await asyncio.to_thread(main, [*argv[:5], str(tampered), *argv[6:]]) == 1

    # Online verification continues from the archived head.
    code = await asyncio.to_thread(main, ["--url", stack.url, "--token", tenant.admin.token, "audit", "verify"])
    assert code == 0, capsys.readouterr()


async def test_an_interrupted_archive_run_resumes(api, stack, mongo_client, db_prefix):
    tenant, old = await _aged_tenant(api)
    # A crash right after the range was fixed: the archive document is "writing", no file, nothing removed.
    db = mongo_client[f"{db_prefix}auditsvc"]
    await db["archives"].insert_one({
        "tenant_id": tenant.tenant_id, "archive_id": "arc_interrupted", "state": "writing",
        "created_at": "2025-01-01T00:00:00Z", "from_seq": 1, "to_seq": 4, "to_hash": old[3]["hash"],
        "start_seq": 0, "start_hash": "0" * 64, "records": 4,
    })
    status, run, _ = await tenant.admin.call("POST", "/v1/audit/retention/run")
    assert status == 200, run
    assert run["archives"][0]["archive_id"] == "arc_interrupted"
    assert [(a["from_seq"], a["state"]) for a in run["archives"]][:2] == [(1, "done"), (5, "done")]
    online = await audit_records(tenant.admin)
    assert online[0]["seq"] == run["archives"][-1]["to_seq"] + 1

    # The listing pages by to_seq: one archive a page here, every archive once, in chain order.
    listed, after = [], 0
    while True:
        status, page, _ = await tenant.admin.call("GET", f"/v1/audit/archives?limit=1&after={after}")
        assert status == 200, page
        listed += page["items"]
        if page["next"] is None:
            break
        after = page["next"]
    assert [a["archive_id"] for a in listed] == [a["archive_id"] for a in run["archives"]]
    assert all("file" not in a for a in listed)


async def test_bad_retention_settings_are_rejected(api, stack):
    tenant = await make_tenant(api)
    for body, field in (({"retention_days": 0}, "retention_days"), ({"retention_days": "long"}, "retention_days"),
                        ({"retention_days": 1, "extra": 1}, "extra")):
        status, problem, _ = await tenant.admin.call("PUT", "/v1/audit/retention", json=body)
        assert status == 422 and problem["field"] == field, problem
    status, current, _ = await tenant.admin.call("GET", "/v1/audit/retention")
    assert status == 200 and current["retention_days"] == 365
    for query, field in (("after=abc", "after"), ("limit=0", "limit"), ("limit=5000", "limit"), ("sort=x", "sort")):
        status, problem, _ = await tenant.admin.call("GET", f"/v1/audit/archives?{query}")
        assert status == 400 and problem["field"] == field, (query, problem)
    status, problem, _ = await tenant.admin.call("GET", "/v1/audit/archives/arc_nope")
    assert status == 404, problem
