"""Batch export through the gateway: every format streams every record of the range; the CLI writes
a file with a progress bar, and a `records` export verifies offline."""

from __future__ import annotations

import asyncio
import json
import re

import pycef
import pytest

from shared.audit_chain import ChainHead, verify_chain
from strongroom.cli import main

from .helpers import EU_FACTS, BareAgent, audit_records, make_tenant


async def _export(api, token: str, query: str) -> tuple[int, dict, str]:
    async with api.session.get(f"{api.url}/v1/audit/export?{query}",
                               headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def _tenant_with_history(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    for facts in (EU_FACTS, EU_FACTS, {**EU_FACTS, "identity": {"region": "us-east-1"}}):
        await agent.request(tenant.key_id, facts)
    records = await audit_records(tenant.admin, expect_at_least=4 + 2 + 2 * 3 + 2)
    return tenant, records


async def test_every_format_streams_every_record(api, stack):
    tenant, records = await _tenant_with_history(api)
    token = tenant.admin.token
    for fmt in ("cef", "leef", "syslog", "jsonl", "records"):
        status, headers, text = await _export(api, token, f"format={fmt}")
        assert status == 200, text
        lines = text.splitlines()
        assert len(lines) == len(records) == int(headers["X-Record-Count"]), fmt
        if fmt == "cef":
            parsed = [pycef.parse(line) for line in lines]
            assert [p["act"] for p in parsed] == [r["action"] for r in records]
            assert [p["externalId"] for p in parsed] == [r["event_id"] for r in records]
        elif fmt == "leef":
            assert all(line.startswith("LEEF:2.0|Strongroom|") for line in lines)
        elif fmt == "syslog":
            assert all(re.match(r"<\d{1,3}>1 \S+Z \S+ strongroom-audit ", line) for line in lines)
        elif fmt == "jsonl":
            assert [json.loads(line)["metadata"]["sequence"] for line in lines] == [r["seq"] for r in records]
        else:
            exported = [json.loads(line) for line in lines]
            assert exported == records
            assert verify_chain(exported, start=ChainHead.genesis(tenant.tenant_id)).ok


async def test_time_range_selects_records(api, stack):
    tenant, records = await _tenant_with_history(api)
    since, until = records[3]["time"], records[8]["time"]
    status, headers, text = await _export(api, tenant.admin.token, f"format=records&since={since}&until={until}")
    assert status == 200
    assert [json.loads(line)["seq"] for line in text.splitlines()] == [
        r["seq"] for r in records if since <= r["time"] <= until]


async def test_cli_export_writes_a_file_with_progress_that_verifies_offline(api, stack, tmp_path, capsys):
    tenant, records = await _tenant_with_history(api)
    out = tmp_path / "audit.jsonl"
    argv = ["--url", stack.url, "--token", tenant.admin.token, "audit", "export", "--format", "records",
            "-o", str(out), "--progress"]
    assert await asyncio.to_thread(main, argv) == 0
    captured = capsys.readouterr()
    assert f"{len(records)}/{len(records)} records (100%)" in captured.err
    assert f"exported {len(records)} records to {out}" in captured.out
    assert not (tmp_path / "audit.jsonl.partial").exists()
    assert await asyncio.to_thread(main, ["--token", "unused", "audit", "verify", "--from-file", str(out)]) == 0

    cef = tmp_path / "audit.cef"
    argv = ["--url", stack.url, "--token", tenant.admin.token, "audit", "export", "--format", "cef", "-o", str(cef)]
    assert await asyncio.to_thread(main, argv) == 0
    assert len(cef.read_text().splitlines()) == len(records)


@pytest.mark.parametrize("query, field", [
    ("format=xml", "format"),
    ("", "format"),
    ("format=cef&since=not-a-time", "since"),
    ("format=cef&since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z", "since"),
    ("format=cef&limit=5", "limit"),
    ("format=cef&shape=round", "shape"),
])
async def test_bad_export_requests_are_400_naming_the_field(api, stack, query, field):
    tenant = await make_tenant(api)
    async with api.session.get(f"{api.url}/v1/audit/export?{query}",
                               headers={"Authorization": f"Bearer {tenant.admin.token}"}) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 400 and resp.content_type == "application/problem+json", body
        assert body["field"] == field


async def test_cli_export_reports_an_unknown_format_as_usage_error(api, stack, tmp_path):
    tenant = await make_tenant(api)
    argv = ["--url", stack.url, "--token", tenant.admin.token, "audit", "export", "--format", "xml",
            "-o", str(tmp_path / "x")]
    assert await asyncio.to_thread(main, argv) == 2
