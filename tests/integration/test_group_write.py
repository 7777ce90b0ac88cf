"""Grouped hot-path updates against the MongoDB-wire store (shared.group_insert.GroupUpdater)."""

from __future__ import annotations

import asyncio

import pytest
from pymongo import AsyncMongoClient, monitoring

from shared.group_insert import GroupUpdater


class Writes(monitoring.CommandListener):
    def __init__(self) -> None:
        self.updates: list[int] = []  # statements per update command

    def started(self, event) -> None:
        if event.command_name == "update":
            self.updates.append(len(event.command["updates"]))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


@pytest.fixture
async def ledger(mongo_url, db_prefix):
    writes = Writes()
    client = AsyncMongoClient(mongo_url, tz_aware=True, event_listeners=[writes])
    collection = client[f"{db_prefix}keysvc"]["releases"]
    await collection.create_index([("tenant_id", 1), ("request_id", 1)], unique=True)
    for tenant in ("ten_a", "ten_b"):
        await collection.insert_many([{"tenant_id": tenant, "request_id": f"req_{i}", "pending": True} for i in range(20)])
    yield collection, writes
    await client.close()


async def test_concurrent_updates_share_one_write_and_each_stays_in_its_tenant(ledger):
    collection, writes = ledger
    updater = GroupUpdater(collection)
    await asyncio.gather(*(updater.update_one("ten_a", {"request_id": f"req_{i}"}, {"$set": {"pending": False}})
                           for i in range(10)))
    assert sum(writes.updates) == 10 and len(writes.updates) < 10  # grouped, none lost
    cleared = {d["request_id"] async for d in collection.find({"pending": False}, {"request_id": 1})}
    assert cleared == {f"req_{i}" for i in range(10)}
    assert await collection.count_documents({"tenant_id": "ten_b", "pending": False}) == 0


async def test_a_failed_update_fails_its_own_caller_only(ledger):
    collection, _ = ledger
    updater = GroupUpdater(collection)
    results = await asyncio.gather(
        updater.update_one("ten_a", {"request_id": "req_1"}, {"$set": {"pending": False}}),
        updater.update_one("ten_a", {"request_id": "req_2"}, {"$set": {"request_id": "req_3"}}),  # unique clash
        updater.update_one("ten_a", {"request_id": "req_4"}, {"$set": {"pending": False}}),
        return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], RuntimeError)
    assert await collection.count_documents({"tenant_id": "ten_a", "pending": False}) == 2


async def test_a_missing_tenant_is_refused(ledger):
    collection, _ = ledger
    with pytest.raises(ValueError):
        await GroupUpdater(collection).update_one("", {"request_id": "req_1"}, {"$set": {"pending": False}})
