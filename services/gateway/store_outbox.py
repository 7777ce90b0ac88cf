"""Writes that stage their events in the same document (the outbox), then publish them.

Once the write is done the change and its events are durable together; a publish that fails then
(the broker away, a full queue) is left to the outbox relay, so the change stands and is reported
as done: its audit record follows when the broker takes it, exactly once."""

from __future__ import annotations

from typing import Any

import structlog

from shared.bus import BusError
from shared.events import Event
from shared.outbox import Outbox, entry, staged
from shared.store import TenantCollection

log = structlog.get_logger("strongroom.gateway.outbox")


async def _publish(outbox: Outbox, collection: TenantCollection, tenant_id: str, evts: tuple[Event, ...]) -> None:
    for event in evts:
        try:
            await outbox.publish(collection.raw, tenant_id, event)
        except BusError as exc:
            log.warning("outbox_publish_deferred", event_type=event.type, event_id=event.event_id, error=str(exc))


async def insert_staged(outbox: Outbox, collection: TenantCollection, tenant_id: str, doc: dict[str, Any],
                        *evts: Event) -> None:
    await collection.insert(tenant_id, staged(doc, *evts))
    await _publish(outbox, collection, tenant_id, evts)


async def update_staged(outbox: Outbox, collection: TenantCollection, tenant_id: str, query: dict[str, Any],
                        update: dict[str, Any], *evts: Event) -> bool:
    """A compare-and-swap update that stages its events in the same write; False if it lost."""
    if evts:
        update = {**update, "$push": {**update.get("$push", {}), "_outbox": {"$each": [entry(e) for e in evts]}}}
    if not await collection.update_one(tenant_id, query, update):
        return False
    await _publish(outbox, collection, tenant_id, evts)
    return True
