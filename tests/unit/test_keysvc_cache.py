"""keysvc's key cache against the race between a read in flight and another instance's change."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.keysvc.cache import KeyCache


@dataclass(frozen=True)
class _Key:
    tenant_id: str
    key_id: str
    latest_version: int


class _SlowSource:
    """Serves the stored key; a read can be held mid-flight with the value it had already read."""

    def __init__(self) -> None:
        self.stored = _Key("ten_a", "key_a", 1)
        self.hold: asyncio.Event | None = None

    async def load_key(self, tenant_id: str, key_id: str) -> _Key:
        seen = self.stored
        if self.hold is not None:
            await self.hold.wait()
        return seen

    async def load_release_view(self, tenant_id: str, key_id: str) -> _Key:
        return await self.load_key(tenant_id, key_id)


async def _stale_read_overtaken_by_change(cache: KeyCache, source: _SlowSource, read) -> None:
    source.hold = asyncio.Event()
    reading = asyncio.create_task(read())
    await asyncio.sleep(0)  # the read has taken the old value from the store
    source.stored = _Key("ten_a", "key_a", 2)  # another instance rotates the key...
    cache.drop("ten_a", "key_a")  # ...and its key.rotated event reaches this instance
    source.hold.set()
    assert (await reading).latest_version == 1  # the read in flight answers with what it read
    source.hold = None


async def test_a_read_in_flight_when_the_key_changes_does_not_cache_the_old_key():
    source = _SlowSource()
    cache = KeyCache(source, 16)  # type: ignore[arg-type]
    await _stale_read_overtaken_by_change(cache, source, lambda: cache.get("ten_a", "key_a"))
    assert (await cache.get("ten_a", "key_a")).latest_version == 2


async def test_a_release_view_in_flight_when_the_key_changes_is_not_cached():
    source = _SlowSource()
    cache = KeyCache(source, 16)  # type: ignore[arg-type]
    await _stale_read_overtaken_by_change(cache, source, lambda: cache.for_release("ten_a", "key_a", None))
    assert (await cache.for_release("ten_a", "key_a", None)).latest_version == 2


async def test_a_tenant_dropped_while_a_read_is_in_flight_is_not_cached_either():
    source = _SlowSource()
    cache = KeyCache(source, 16)  # type: ignore[arg-type]
    source.hold = asyncio.Event()
    reading = asyncio.create_task(cache.get("ten_a", "key_a"))
    await asyncio.sleep(0)
    source.stored = _Key("ten_a", "key_a", 3)
    cache.drop_tenant("ten_a")
    source.hold.set()
    await reading
    source.hold = None
    assert (await cache.get("ten_a", "key_a")).latest_version == 3


async def test_reads_without_a_change_in_between_are_served_from_the_cache():
    source = _SlowSource()
    cache = KeyCache(source, 16)  # type: ignore[arg-type]
    await cache.get("ten_a", "key_a")
    source.stored = _Key("ten_a", "key_a", 9)  # written behind the cache's back: no event, no drop
    assert (await cache.get("ten_a", "key_a")).latest_version == 1


async def test_a_key_this_instance_wrote_is_not_replaced_by_an_older_read_in_flight():
    source = _SlowSource()
    cache = KeyCache(source, 16)  # type: ignore[arg-type]
    source.hold = asyncio.Event()
    reading = asyncio.create_task(cache.get("ten_a", "key_a"))
    await asyncio.sleep(0)
    source.stored = _Key("ten_a", "key_a", 2)
    cache.put(source.stored)  # this instance rotated it and cached the result
    source.hold.set()
    await reading
    source.hold = None
    assert (await cache.get("ten_a", "key_a")).latest_version == 2
