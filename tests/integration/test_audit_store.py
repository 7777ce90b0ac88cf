"""auditsvc's store against the real MongoDB-wire store: chunk-indexed queries find exactly what a
scan would, a crash between records and their index is repaired, a redelivered batch is kept once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pymongo import AsyncMongoClient, monitoring

from services.auditsvc import handlers
from services.auditsvc.search import Criteria
from services.auditsvc.store import AuditStore
from shared import events
from shared.audit_chain import ChainHead, verify_chain

TENANTS = ("ten_a", "ten_b")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _event(tenant: str, i: int) -> events.Event:
    # Two events far apart name a rare key: a query for it must look far past its first window.
    key = "key_rare" if i in (998, 11_998) else f"key_{i % 7}"
    return events.KeyCreated(tenant_id=tenant, key_id=key, name=f"v{i}", algorithm="AES-256",
                             occurred_at=T0 + timedelta(seconds=i), correlation_id=f"corr_{i}",
                             actor={"kind": "user", "id": f"usr_{i % 3}", "auth": "password"})


async def _store(mongo_client, db_prefix) -> AuditStore:
    store = AuditStore(mongo_client[f"{db_prefix}auditsvc"])
    await store.create_indexes()
    return store


async def _ingest(store: AuditStore, count: int, *, batch: int = 400) -> None:
    heads = handlers.ChainHeads(store)
    stream = [_event(TENANTS[i % 2], i) for i in range(count)]
    for start in range(0, count, batch):
        await handlers.ingest(stream[start:start + batch], store=store, heads=heads)


async def _all(store: AuditStore, tenant: str) -> list[dict]:
    return await store.read_range(tenant, 1, (await store.head(tenant)).seq)


async def test_filtered_queries_return_exactly_what_a_scan_finds(mongo_client, db_prefix):
    store = await _store(mongo_client, db_prefix)
    await _ingest(store, 12_000)  # 6,000 per tenant: rare keys lie well past the first window
    everything = await _all(store, "ten_a")
    assert [r["seq"] for r in everything] == list(range(1, 6001))
    assert verify_chain(everything, start=ChainHead.genesis("ten_a")).ok
    since, until = everything[1000]["time"], everything[1500]["time"]
    for criteria in (Criteria(key="key_rare"), Criteria(actor="usr_1", key="key_3"),
                     Criteria(correlation_id="corr_5000"), Criteria(since=since, until=until),
                     Criteria(key="key_2", since=since), Criteria(action="key.created", until=since),
                     Criteria(outcome="denied"), Criteria(key="key_b_only")):
        expected = [r for r in everything if criteria.matches(r)]
        got, after = [], 0
        while page := await store.query("ten_a", criteria, after_seq=after, limit=97):
            got += page
            after = page[-1]["seq"]
        assert got == expected, criteria
        assert await store.count("ten_a", criteria) == len(expected)
    assert [r["seq"] for r in everything if Criteria(key="key_rare").matches(r)] == [500, 6000]
    # No query ever returns another tenant's records.
    assert all(r["tenant_id"] == "ten_a" for r in await store.query("ten_a", Criteria(), after_seq=0, limit=10_000))


async def test_records_stored_without_their_index_are_indexed_before_ingestion_goes_on(mongo_client, db_prefix):
    store = await _store(mongo_client, db_prefix)
    await _ingest(store, 400)
    # A crash after the records were written and before their index and head were.
    heads = handlers.ChainHeads(store)
    head = await heads.get("ten_a")
    lost = [_event("ten_a", 1000 + i) for i in range(50)]
    linked = []
    for event in lost:
        record, head = head.append(handlers.record_from_event(event.model_dump(mode="json")))
        linked.append(record)
    await store.records.raw.insert_many([{"_id": f"ten_a:{r['seq']:012d}", **r} for r in linked])
    assert (await store.stored_head("ten_a")).seq == 200

    # The broker redelivers the whole batch to a fresh process: nothing is lost or kept twice.
    await handlers.ingest([*lost, _event("ten_a", 2000)], store=store, heads=handlers.ChainHeads(store))
    everything = await _all(store, "ten_a")
    assert [r["seq"] for r in everything] == list(range(1, 252))
    assert len({r["event_id"] for r in everything}) == 251
    assert verify_chain(everything, start=ChainHead.genesis("ten_a")).ok
    assert [r["seq"] for r in await store.query("ten_a", Criteria(correlation_id="corr_1010"), after_seq=0, limit=5)] == [211]


async def test_an_event_redelivered_long_after_is_kept_once(mongo_client, db_prefix):
    store = await _store(mongo_client, db_prefix)
    heads = handlers.ChainHeads(store)
    stream = [_event("ten_a", i) for i in range(1200)]
    for start in range(0, 1200, 300):
        await handlers.ingest(stream[start:start + 300], store=store, heads=heads)
    # An outbox re-sends old events (their confirms were lost); a fresh process gets them among new ones.
    fresh = _event("ten_a", 5000)
    await handlers.ingest([stream[5], stream[650], fresh, stream[1199]], store=store, heads=handlers.ChainHeads(store))
    everything = await _all(store, "ten_a")
    assert len(everything) == 1201 and everything[-1]["event_id"] == fresh.event_id
    assert len({r["event_id"] for r in everything}) == 1201

    # Chunks of the earlier layout keep event ids as "e:" terms instead of a list: still found.
    for chunk in await store.terms.find("ten_a", {}):
        legacy = {**chunk, "terms": sorted([*chunk["terms"], *(f"e:{e}" for e in chunk["events"])])}
        del legacy["events"]
        await store.terms.raw.replace_one({"_id": chunk["_id"]}, legacy)
    await handlers.ingest([stream[7], stream[1100]], store=store, heads=handlers.ChainHeads(store))
    assert (await store.head("ten_a")).seq == 1201


class Finds(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict] = []

    def started(self, event) -> None:
        if event.command_name == "find":
            self.commands.append({"find": event.command["find"], "filter": event.command["filter"]})

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


async def test_the_dedup_lookup_of_a_batch_reads_only_the_chunks_its_times_reach(mongo_url, db_prefix):
    # Each ingested batch asks which of its events are recorded; the chunks it reads must be the
    # ones whose time bounds reach the batch's, not every chunk of the tenant's chain.
    finds = Finds()
    client = AsyncMongoClient(mongo_url, tz_aware=True, event_listeners=[finds])
    try:
        store = await _store(client, db_prefix)
        heads = handlers.ChainHeads(store)
        stream = [_event("ten_a", i) for i in range(400)]
        for start in range(0, 400, 5):  # 80 chunks
            await handlers.ingest(stream[start:start + 5], store=store, heads=heads)
        finds.commands.clear()
        latest = stream[-2].model_dump(mode="json")
        fresh = _event("ten_a", 400).model_dump(mode="json")
        known = await store.known_event_ids("ten_a", [(latest["event_id"], latest["occurred_at"]),
                                                      (fresh["event_id"], fresh["occurred_at"])])
        assert known == {latest["event_id"]}
        [lookup] = [c for c in finds.commands if c["find"] == "record_terms"]
        plan = await client[f"{db_prefix}auditsvc"].command("explain", lookup)
        assert plan["executionStats"]["totalDocsExamined"] <= 2, plan["executionStats"]
    finally:
        await client.close()


async def test_deleting_an_archived_range_keeps_the_rest_findable(mongo_client, db_prefix):
    store = await _store(mongo_client, db_prefix)
    await _ingest(store, 2000)
    await store.delete_range("ten_a", 1, 333)
    await store.archives.insert("ten_a", {"archive_id": "arc_1", "state": "done", "to_seq": 333, "to_hash": "0" * 64})
    assert await store.first_seq("ten_a") == 334
    assert await store.read_range("ten_a", 330, 335) == await store.read_range("ten_a", 334, 335)
    page = await store.query("ten_a", Criteria(), after_seq=0, limit=3)
    assert [r["seq"] for r in page] == [334, 335, 336]
    assert await store.count("ten_a", Criteria()) == 1000 - 333
    matches = await store.query("ten_a", Criteria(actor="usr_0"), after_seq=0, limit=1000)
    assert matches and all(r["seq"] > 333 and r["actor"]["id"] == "usr_0" for r in matches)


async def test_a_restart_keeps_counting_towards_the_next_checkpoint(mongo_client, db_prefix, rabbit_bus):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from services.auditsvc.checkpoints import Checkpointer
    from services.auditsvc.store_checkpoints import CheckpointStore
    from shared.outbox import Outbox

    store = await _store(mongo_client, db_prefix)
    checkpoints = CheckpointStore(mongo_client[f"{db_prefix}auditsvc"])
    await checkpoints.create_indexes()
    key = Ed25519PrivateKey.generate()
    clock = [1000.0]

    def checkpointer() -> Checkpointer:
        return Checkpointer(store, checkpoints, Outbox(rabbit_bus.publish, [checkpoints.collection]), key,
                            every_records=500, every_seconds=3600, clock=lambda: clock[0])

    first = checkpointer()
    await first.load()
    heads = handlers.ChainHeads(store)
    stream = [_event("ten_a", i) for i in range(800)]
    await handlers.ingest(stream[:300], store=store, heads=heads, checkpointer=first)
    assert await checkpoints.last_checkpoint("ten_a") is None

    # A new process: 300 records are already waiting, so 200 more make the 500.
    second = checkpointer()
    await second.load()
    heads = handlers.ChainHeads(store)
    await handlers.ingest(stream[300:499], store=store, heads=heads, checkpointer=second)
    assert await checkpoints.last_checkpoint("ten_a") is None
    await handlers.ingest(stream[499:500], store=store, heads=heads, checkpointer=second)
    assert (await checkpoints.last_checkpoint("ten_a"))["seq"] == 500

    # After a restart the time interval runs from the last checkpoint, not from the restart.
    await handlers.ingest(stream[500:510], store=store, heads=heads, checkpointer=second)
    third = checkpointer()
    await third.load()
    await third.due()  # every_seconds is an hour; the checkpoint at seq 500 was signed just now
    assert (await checkpoints.last_checkpoint("ten_a"))["seq"] == 500
    clock[0] += 3600
    await third.due()
    assert (await checkpoints.last_checkpoint("ten_a"))["seq"] == 510
