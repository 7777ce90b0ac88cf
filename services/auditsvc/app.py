"""auditsvc's composition root."""

from __future__ import annotations

from functools import partial

from pymongo import AsyncMongoClient

from shared.bus import Bus
from shared.config import AuditSettings
from shared.rpc import Methods
from shared.service import Running
from shared.store import service_database

from . import handlers
from .store import AuditStore


async def start(settings: AuditSettings, *, bus: Bus, client: AsyncMongoClient) -> Running:
    store = AuditStore(service_database(client, "auditsvc", prefix=settings.db_prefix))
    await store.create_indexes()
    heads = handlers.ChainHeads(store)
    methods = Methods()
    methods.add("list_records", partial(handlers.list_records, store=store))
    await bus.subscribe_batch(
        "auditsvc",
        partial(handlers.ingest, store=store, heads=heads),
        max_batch=settings.batch_size,
        max_wait=settings.batch_wait_seconds,
    )
    await bus.serve("auditsvc", methods)
    return Running("auditsvc")
