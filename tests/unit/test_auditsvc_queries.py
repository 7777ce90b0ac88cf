"""Query handlers against a memory store: record pages, exports in every registered format, reports, status."""

from __future__ import annotations

import json

import pytest

from services.auditsvc import handlers, siem
from services.auditsvc.store_memory import MemoryAuditStore, MemoryCheckpointStore
from shared import commands_audit as c
from shared import export_formats
from shared.audit_chain import ChainHead, verify_chain
from shared.rpc import ProblemError, RpcReply, encode
from tests.unit.auditsvc_twins import ingest, key_created, request


def test_every_registered_format_has_a_formatter_and_every_formatter_a_registration():
    assert set(siem.FORMATTERS) == set(export_formats.NAMES)
    assert set(export_formats.FORWARDABLE) < set(export_formats.NAMES)
    assert all(f.media_type and f.extension and f.label for f in export_formats.EXPORT_FORMATS)


async def _store(n: int = 7) -> MemoryAuditStore:
    store = MemoryAuditStore()
    await ingest(store, [key_created("t1", i) for i in range(n)] + [key_created("t2", 0)])
    return store


@pytest.mark.parametrize("fmt", export_formats.NAMES)
async def test_export_pages_render_each_format_and_count_only_on_the_first_page(fmt):
    store = await _store()
    first = await handlers.export_page(request(), c.ExportQuery(format=fmt, limit=5), store=store)
    assert len(first.lines) == 5 and first.next == 5 and first.total == 7
    rest = await handlers.export_page(request(), c.ExportQuery(format=fmt, limit=5, after=5), store=store)
    assert len(rest.lines) == 2 and rest.next is None
    wire = json.loads(encode(RpcReply(result=rest)))["result"]
    assert set(wire) == {"lines", "next"}  # absent, as the gateway has always seen it
    assert all("\n" not in line for line in first.lines + rest.lines)


async def test_chained_records_export_verifies_offline():
    store = await _store()
    page = await handlers.export_page(request(), c.ExportQuery(format="records"), store=store)
    verify_chain([json.loads(line) for line in page.lines], start=ChainHead.genesis("t1"))


async def test_an_unknown_format_or_a_backwards_range_is_a_400_naming_the_field():
    store = await _store()
    with pytest.raises(ProblemError) as bad:
        await handlers.export_page(request(), c.ExportQuery(format="xml"), store=store)
    assert (bad.value.problem.status, bad.value.problem.field) == (400, "format")
    with pytest.raises(ProblemError) as backwards:
        await handlers.list_records(request(), c.AuditQuery(since="2025-02-01T00:00:00Z", until="2025-01-01T00:00:00Z"),
                                    store=store)
    assert (backwards.value.problem.status, backwards.value.problem.field) == (400, "since")
    with pytest.raises(ProblemError) as unknown:
        c.AuditQuery.model_validate({"colour": "red"})
    assert (unknown.value.problem.status, unknown.value.problem.field) == (400, "colour")


async def test_record_pages_stay_within_the_tenant_and_carry_the_next_cursor():
    store = await _store()
    page = await handlers.list_records(request(), c.AuditQuery(limit=3, key="key_4"), store=store)
    assert [r["seq"] for r in page.items] == [5] and page.next is None
    page = await handlers.list_records(request("t2"), c.AuditQuery(limit=1), store=store)
    assert [r["tenant_id"] for r in page.items] == ["t2"] and page.next == 1


@pytest.mark.parametrize("fmt, content_type, key", [("json", "application/json", "report"),
                                                     ("csv", "text/csv", "body"), ("html", "text/html", "body")])
async def test_reports_in_each_format(fmt, content_type, key):
    store = await _store()
    found = await handlers.report(request(), c.ReportQuery(format=fmt), store=store)
    wire = json.loads(encode(RpcReply(result=found)))["result"]
    assert set(wire) == {"content_type", key} and wire["content_type"] == content_type
    if fmt == "json":
        assert wire["report"]["records"] == 7 and wire["report"]["keys_by_state"] == {"active": 7}


async def test_a_report_in_an_unknown_format_is_a_400():
    with pytest.raises(ProblemError) as bad:
        await handlers.report(request(), c.ReportQuery(format="pdf"), store=MemoryAuditStore())
    assert (bad.value.problem.status, bad.value.problem.field) == (400, "format")


async def test_status_shows_the_head_and_the_last_checkpoint():
    store, checkpoints = await _store(), MemoryCheckpointStore()

    async def depth() -> int:
        return 4

    found = await handlers.status(request(), c.NoParams(), store=store, checkpoints=checkpoints,
                                  stats=handlers.IngestStats(), queue_depth=depth)
    assert found.last_seq == 7 and found.last_checkpoint_seq is None and found.queue_depth == 4
    assert found.archived_seq is None and found.last_record_time is not None
