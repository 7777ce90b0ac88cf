"""`GET /v1/reports` and `strongroom report`: releases and denials from a real release pipeline."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from strongroom.cli import main

from .helpers import EU_FACTS, BareAgent, audit_records, make_tenant


async def test_report_in_every_format(api, stack, tmp_path):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200
    assert (await agent.request(tenant.key_id, {**EU_FACTS, "identity": {"region": "us-east-1"}}))[0] == 403
    while not any(r["action"] == "key.released" for r in await audit_records(tenant.admin)):
        await asyncio.sleep(0.05)
    while sum(r["action"] == "key.decided" for r in await audit_records(tenant.admin)) < 2:
        await asyncio.sleep(0.05)

    status, report, _ = await tenant.admin.call("GET", "/v1/reports")
    assert status == 200, report
    assert report["totals"]["releases"] == 1 and report["totals"]["denials"] == 1
    assert report["releases"]["device"] == [{"device": agent.device_id, "name": "vm-1", "count": 1}]
    assert report["releases"]["policy"] == [{"policy": tenant.policy_id, "name": "eu-volumes", "count": 1}]
    assert report["denials"]["key"] == [{"key": tenant.key_id, "name": "acme-vol", "count": 1}]
    for size in ("hour", "day"):
        trend = report["trends"][size]
        assert sum(t["releases"] for t in trend) == 1 and sum(t["denials"] for t in trend) == 1
    assert report["top_denial_reasons"] and report["keys_by_state"].get("active") == 1

    # A range that starts at the first decision still names what was created before it.
    first = next(r["time"] for r in await audit_records(tenant.admin) if r["action"] == "key.decided")
    status, later, _ = await tenant.admin.call("GET", f"/v1/reports?since={quote(first)}")
    assert status == 200 and later["records"] < report["records"], later
    assert later["releases"]["policy"] == report["releases"]["policy"]
    assert later["releases"]["device"] == report["releases"]["device"]
    assert later["denials"]["key"] == report["denials"]["key"]

    headers = {"Authorization": f"Bearer {tenant.admin.token}"}
    async with api.session.get(f"{api.url}/v1/reports?format=csv", headers=headers) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        csv_text = await resp.text()
        assert f"releases,device,{agent.device_id},vm-1,1" in csv_text
        assert f"releases,policy,{tenant.policy_id},eu-volumes,1" in csv_text
    out = tmp_path / "report.html"
    argv = ["--url", stack.url, "--token", tenant.admin.token, "report", "--format", "html", "-o", str(out)]
    assert await asyncio.to_thread(main, argv) == 0
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and f"vm-1 ({agent.device_id})" in page
    assert f"eu-volumes ({tenant.policy_id})" in page


@pytest.mark.parametrize("query, field", [
    ("format=pdf", "format"),
    ("since=tomorrow", "since"),
    ("since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z", "since"),
    ("tenant=other", "tenant"),
])
async def test_bad_report_requests_are_400(api, stack, query, field):
    tenant = await make_tenant(api)
    status, body, _ = await tenant.admin.call("GET", f"/v1/reports?{query}")
    assert status == 400 and body["field"] == field, body
