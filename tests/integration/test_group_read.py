"""Grouped point reads against the MongoDB-wire store (shared.group_read)."""

from __future__ import annotations

import asyncio

import pytest
from pymongo import AsyncMongoClient, monitoring

from shared.group_read import GroupReader
from shared.store import TenantCollection


class Finds(monitoring.CommandListener):
    def __init__(self) -> None:
        self.queries: list[dict] = []

    def started(self, event) -> None:
        if event.command_name == "find":
            self.queries.append(event.command["filter"])

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


@pytest.fixture
async def heads(mongo_url, db_prefix):
    finds = Finds()
    client = AsyncMongoClient(mongo_url, tz_aware=True, event_listeners=[finds])
    collection = TenantCollection(client[f"{db_prefix}keysvc"]["keys"])
    for tenant in ("ten_a", "ten_b"):
        await collection.raw.insert_many(
            [{"tenant_id": tenant, "key_id": f"key_{i}", "state": "active", "secret": f"{tenant}-{i}"} for i in range(20)])
    yield collection, finds
    await client.close()


async def test_concurrent_lookups_share_reads_and_each_gets_its_own_tenants_document(heads):
    collection, finds = heads
    reader = GroupReader(collection, "key_id", projection={"_id": 0, "key_id": 1, "secret": 1})
    lookups = [("ten_a", f"key_{i}") for i in range(10)] + [("ten_b", "key_3"), ("ten_b", "key_404"), ("ten_a", "key_1")]

    found = await asyncio.gather(*(reader.find_one(tenant, key) for tenant, key in lookups))

    for (tenant, key), doc in zip(lookups, found, strict=True):
        if key == "key_404":
            assert doc is None
        else:
            assert doc == {"key_id": key, "secret": f"{tenant}-{key.removeprefix('key_')}"}
    # All thirteen were asked before the first read went out: one read per tenant answers them.
    assert len(finds.queries) == 2, finds.queries
    assert all(query["tenant_id"] in ("ten_a", "ten_b") for query in finds.queries)


async def test_a_failed_read_fails_every_caller_of_its_group_and_the_reader_goes_on(heads):
    collection, _ = heads
    # The server refuses this projection (inclusion and exclusion mixed): every read fails.
    reader = GroupReader(collection, "key_id", projection={"key_id": 1, "secret": 0})
    first = await asyncio.wait_for(asyncio.gather(
        reader.find_one("ten_a", "key_1"), reader.find_one("ten_a", "key_2"), reader.find_one("ten_b", "key_1"),
        return_exceptions=True), timeout=10)
    assert all(isinstance(result, Exception) and "exclusion" in str(result) for result in first), first
    with pytest.raises(Exception, match="exclusion"):
        await asyncio.wait_for(reader.find_one("ten_a", "key_3"), timeout=10)


def test_the_projection_must_return_the_lookup_field(heads):
    collection, _ = heads
    with pytest.raises(ValueError, match="key_id"):
        GroupReader(collection, "key_id", projection={"_id": 0, "secret": 1})
    with pytest.raises(ValueError, match="tenant_id"):
        asyncio.run(GroupReader(collection, "key_id", projection={"key_id": 1}).find_one("", "key_1"))
