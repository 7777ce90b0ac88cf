"""Writes that stage their events in the same document (the outbox), then publish them."""

from __future__ import annotations

from typing import Any

from shared.events import Event
from shared.outbox import Outbox, entry, staged
from shared.store import TenantCollection


async def insert_staged(outbox: Outbox, collection: TenantCollection, tenant_id: str, doc: dict[str, Any],
                        *evts: Event) -> None:
    await collection.insert(tenant_id, staged(doc, *evts))
    for event in evts:
        await outbox.publish(collection.raw, tenant_id, event)


async def update_staged(outbox: Outbox, collection: TenantCollection, tenant_id: str, query: dict[str, Any],
                        update: dict[str, Any], *evts: Event) -> bool:
    """A compare-and-swap update that stages its events in the same write; False if it lost."""
    if evts:
        update = {**update, "$push": {**update.get("$push", {}), "_outbox": {"$each": [entry(e) for e in evts]}}}
    if not await collection.update_one(tenant_id, query, update):
        return False
    for event in evts:
        await outbox.publish(collection.raw, tenant_id, event)
    return True
