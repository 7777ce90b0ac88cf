"""The outbox: an event is written in the same document write as the state change it reports.

MongoDB writes one document atomically, so a change and its pending event cannot be
separated by a crash. After the broker confirms the publish, the entry is pulled; a relay
re-publishes whatever is still pending after a restart. Consumers dedupe by event id, so
a publish that happened just before a crash and is re-sent does no harm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from pymongo.asynchronous.collection import AsyncCollection

from .events import Event, decode_event
from .service import stop_if_cancelled

log = structlog.get_logger("strongroom.outbox")

FIELD = "_outbox"


def entry(event: Event) -> dict[str, Any]:
    return {"event_id": event.event_id, "body": event.model_dump_json(), "at": time.time()}


def staged(doc: dict[str, Any], *events: Event) -> dict[str, Any]:
    """A new document carrying its pending events."""
    return {**doc, FIELD: [entry(e) for e in events]}


def push(event: Event) -> dict[str, Any]:
    """The `$push` part of an update that stages one event with the change."""
    return {"$push": {FIELD: entry(event)}}


class Outbox:
    def __init__(self, publish: Callable[[Event], Awaitable[None]], collections: Sequence[AsyncCollection]):
        self._publish = publish
        self._collections = list(collections)

    async def create_indexes(self) -> None:
        for collection in self._collections:
            await collection.create_index(f"{FIELD}.event_id", sparse=True)  # relay
            # publish() unstages by tenant and event id: an index on exactly those fields keeps that
            # one lookup whatever the collection's size (the embedded store scans otherwise).
            await collection.create_index([("tenant_id", 1), (f"{FIELD}.event_id", 1)])

    async def publish(self, collection: AsyncCollection, tenant_id: str, event: Event) -> None:
        """Publish a staged event and unstage it once the broker confirmed it."""
        await self._publish(event)
        await collection.update_many(
            {"tenant_id": tenant_id, f"{FIELD}.event_id": event.event_id},
            {"$pull": {FIELD: {"event_id": event.event_id}}},
        )

    async def relay(self, *, min_age: float = 0.0) -> int:
        """Re-publish staged events older than `min_age` seconds (after a crash, or a broker outage)."""
        sent = 0
        cutoff = time.time() - min_age
        for collection in self._collections:
            async for doc in collection.find({f"{FIELD}.event_id": {"$exists": True}}, {FIELD: 1, "tenant_id": 1}):
                for item in doc.get(FIELD, []):
                    if item.get("at", 0) > cutoff:
                        continue
                    await self.publish(collection, doc["tenant_id"], decode_event(item["body"].encode()))
                    sent += 1
        if sent:
            log.info("outbox_relayed", events=sent)
        return sent

    async def run(self, interval: float = 5.0) -> None:
        """Relays periodically: covers a publish that failed while the broker was away."""
        while True:
            try:
                await self.relay(min_age=interval)
            except Exception:
                stop_if_cancelled()
                log.exception("outbox_relay_failed")
            await asyncio.sleep(interval)
