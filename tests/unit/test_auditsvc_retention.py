"""Retention against memory stores: which records leave, what forwarders still hold back, resumable runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auditsvc import retention
from services.auditsvc.search import Criteria
from services.auditsvc.store_memory import (
    MemoryArchiveStore,
    MemoryAuditStore,
    MemoryCheckpointStore,
    MemoryForwarderStore,
)
from shared import commands_audit as c
from shared.audit_archive import read_archive
from tests.unit.auditsvc_twins import Outbox, ingest, key_created, request

OLD = datetime.now(UTC) - timedelta(days=30)


def _keeper(tmp_path, days=10.0):
    archives = MemoryArchiveStore()
    store, checkpoints, forwarders = MemoryAuditStore(archives), MemoryCheckpointStore(), MemoryForwarderStore()
    keeper = retention.Retention(store, archives, checkpoints, forwarders, Outbox(), Ed25519PrivateKey.generate(),
                                 archive_dir=str(tmp_path), default_days=days)
    return keeper, store, archives, forwarders


def test_only_a_gap_free_prefix_older_than_the_cutoff_is_archivable():
    records = [{"seq": s, "time": t} for s, t in ((4, "2025-01-01"), (5, "2025-01-02"), (7, "2025-01-03"))]
    assert [r["seq"] for r in retention.archivable(records, first=4, cutoff="2025-02-01")] == [4, 5]
    assert [r["seq"] for r in retention.archivable(records, first=4, cutoff="2025-01-02")] == [4]
    assert retention.archivable(records, first=3, cutoff="2025-02-01") == []


async def test_records_past_the_window_are_archived_and_removed(tmp_path):
    keeper, store, _, _ = _keeper(tmp_path)
    await ingest(store, [key_created("t1", i, at=OLD) for i in range(5)] + [key_created("t1", 9, at=datetime.now(UTC))])
    done = await keeper.run_tenant("t1")
    assert [(a["from_seq"], a["to_seq"], a["state"]) for a in done] == [(1, 5, "done")]
    assert [r["seq"] for r in await store.query("t1", Criteria(), after_seq=0, limit=100)] == [6]
    assert await store.first_seq("t1") == 6 and (await store.head("t1")).seq == 6
    archived = read_archive((tmp_path / "t1" / f"{done[0]['archive_id']}.json.gz").read_bytes())
    assert [r["seq"] for r in archived.records] == [1, 2, 3, 4, 5]
    assert await keeper.run_tenant("t1") == []  # nothing more is old enough


async def test_records_a_forwarder_still_owes_are_kept(tmp_path):
    keeper, store, _, forwarders = _keeper(tmp_path)
    await ingest(store, [key_created("t1", i, at=OLD) for i in range(5)])
    forwarders.forwarders[("t1", "fwd_1")] = {"forwarder_id": "fwd_1", "tenant_id": "t1", "enabled": True, "cursor": 2}
    forwarders.forwarders[("t1", "fwd_2")] = {"forwarder_id": "fwd_2", "tenant_id": "t1", "enabled": False, "cursor": 0}
    done = await keeper.run_tenant("t1")
    assert [(a["from_seq"], a["to_seq"]) for a in done] == [(1, 2)]


async def test_an_interrupted_archive_is_resumed_not_refixed(tmp_path):
    keeper, store, archives, _ = _keeper(tmp_path)
    await ingest(store, [key_created("t1", i, at=OLD) for i in range(3)])
    first = await store.read_range("t1", 1, 2)
    await archives.insert_archive("t1", retention.new_archive(first, archive_id="arc_crashed", now=OLD))
    done = await keeper.run_tenant("t1")
    assert [(a["archive_id"], a["to_seq"]) for a in done] == [("arc_crashed", 2), (done[1]["archive_id"], 3)]


async def test_the_window_is_the_tenants_own_or_the_default(tmp_path):
    keeper, _, archives, _ = _keeper(tmp_path, days=365)
    assert (await retention.get_retention(request(), c.NoParams(), retention=keeper)).retention_days == 365.0
    outbox = Outbox()
    await retention.set_retention(request(), c.RetentionSetting(retention_days=2), archives=archives, outbox=outbox)
    assert (await retention.get_retention(request(), c.NoParams(), retention=keeper)).model_dump() == {
        "retention_days": 2.0}
    assert [e.type for e in outbox.published] == ["audit.retention_updated"]
    other = await retention.get_retention(request("t2"), c.NoParams(), retention=keeper)
    assert other.retention_days == 365.0


async def test_archive_pages_hide_the_file_path(tmp_path):
    keeper, store, archives, _ = _keeper(tmp_path)
    await ingest(store, [key_created("t1", i, at=OLD) for i in range(3)])
    await keeper.run_tenant("t1")
    page = await retention.list_archives(request(), c.ArchiveQuery(limit=1), archives=archives)
    assert page.next == 3 and "file" not in page.items[0]
    info = await retention.get_archive(request(), c.ArchiveRef(archive_id=page.items[0]["archive_id"]),
                                       archives=archives, chunk_bytes=10)
    chunk = await retention.archive_chunk(request(), c.ArchiveChunkQuery(archive_id=info.archive_id, offset=0),
                                          archives=archives, chunk_bytes=10)
    assert chunk.offset == 0 and len(chunk.data) == 16  # ten bytes, base64


async def test_two_instances_finishing_the_same_archive_announce_it_once(tmp_path):
    keeper, store, archives, forwarders = _keeper(tmp_path)
    other_outbox = Outbox()
    # Every instance signs with the same configured key: both build the same bytes.
    other = retention.Retention(store, archives, keeper._checkpoints, forwarders, other_outbox, keeper._key,
                                archive_dir=str(tmp_path), default_days=10.0)
    await ingest(store, [key_created("t1", i, at=OLD) for i in range(4)])
    done, again = await asyncio.gather(keeper.run_tenant("t1"), other.run_tenant("t1"))
    assert [a["state"] for a in done + again] == ["done", "done"]
    announced = keeper._outbox.published + other_outbox.published
    assert [(e.type, e.from_seq, e.to_seq) for e in announced] == [("audit.archived", 1, 4)]
    assert list((tmp_path / "t1").iterdir()) == [tmp_path / "t1" / f"{done[0]['archive_id']}.json.gz"]
