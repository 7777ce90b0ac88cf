"""Two auditsvc instances appending to the same tenants' chains at once, against the real store.

The audit queue has a single active consumer, so normally one instance ingests while the others
stand by. But a handover (the active one's connection dropped while its last batch was still being
written, a redelivery to the next one) can have two instances write at once, each linking onto the
head it last knew. Records are keyed by tenant and sequence number, so the second write to a
sequence number fails instead of forking the chain; the losing batch is requeued and linked again
onto the head as stored. These tests run that race on purpose.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from services.auditsvc import handlers
from services.auditsvc.store import AuditStore
from shared import events
from shared.audit_chain import ChainHead, verify_chain

TENANTS = ("ten_a", "ten_b", "ten_c")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _event(i: int) -> events.Event:
    return events.KeyCreated(tenant_id=TENANTS[i % len(TENANTS)], key_id=f"key_{i}", name=f"v{i}", algorithm="AES-256",
                             occurred_at=T0 + timedelta(seconds=i), correlation_id=f"corr_{i}",
                             actor={"kind": "user", "id": "usr_1", "auth": "password"})


async def _again(ingestor: handlers.Ingestor, batch: list[events.Event]) -> None:
    """A batch whose write failed, requeued: linked again onto the heads as stored, until it is written."""
    ingestor.abandon()
    for _ in range(50):
        try:
            return await ingestor(batch)
        except Exception:
            await asyncio.sleep(0)
    raise AssertionError("a batch never got written")


async def _round(ingestors: list[handlers.Ingestor], batches: list[list[events.Event]]) -> int:
    """Each instance links its batch onto the heads it knows, then all write at once: those that lost
    the race (a sequence number taken meanwhile) are requeued. Returns how many lost."""
    writes = [await ingestor.prepare(batch) for ingestor, batch in zip(ingestors, batches, strict=True)]
    results = await asyncio.gather(*(write() for write in writes), return_exceptions=True)
    lost = [i for i, result in enumerate(results) if isinstance(result, BaseException)]
    for i in lost:
        await _again(ingestors[i], batches[i])
    return len(lost)


async def test_two_instances_ingesting_the_same_tenants_keep_each_chain_serial_and_every_record_once(
        mongo_client, db_prefix):
    store = AuditStore(mongo_client[f"{db_prefix}auditsvc"])
    await store.create_indexes()
    stream = [_event(i) for i in range(600)]
    # Each instance takes alternate batches of 20 of the same tenants' events; then every fifth batch
    # of the first is delivered again to the second (a redelivery after the first seemed gone).
    batches = [stream[i:i + 20] for i in range(0, len(stream), 20)]
    first, second = batches[0::2], batches[1::2]
    ingestors = [handlers.Ingestor(store, handlers.ChainHeads(store)) for _ in range(2)]
    lost = 0
    for a, b in zip(first, second, strict=True):
        lost += await _round(ingestors, [a, b])
    # Both link onto heads no later than the stored ones, so in every round at least one loses.
    assert lost >= len(first)
    for again in first[::5]:
        assert await _round(ingestors[1:], [again]) == 0

    for tenant in TENANTS:
        head = await store.head(tenant)
        records = await store.read_range(tenant, 1, head.seq)
        expected = {e.event_id for e in stream if e.tenant_id == tenant}
        assert [r["seq"] for r in records] == list(range(1, len(expected) + 1))  # no gap, no fork
        assert sorted(r["event_id"] for r in records) == sorted(expected)  # each event exactly once
        assert verify_chain(records, start=ChainHead.genesis(tenant)).ok
