"""policysvc's composition root."""

from __future__ import annotations

import asyncio
from functools import partial

from pymongo import AsyncMongoClient

from shared.bus import Bus
from shared.config import PolicySettings
from shared.outbox import Outbox
from shared.rpc import Methods
from shared.service import Running
from shared.store import service_database

from . import handlers
from .store import PolicyStore


async def start(settings: PolicySettings, *, bus: Bus, client: AsyncMongoClient) -> Running:
    store = PolicyStore(service_database(client, "policysvc", prefix=settings.db_prefix))
    await store.create_indexes()
    cache = handlers.PolicyCache(store)
    outbox = Outbox(bus.publish, [store.policies.raw])
    await outbox.create_indexes()
    await outbox.relay()

    methods = Methods()
    methods.add("put_policy", partial(handlers.put_policy, store=store, cache=cache, outbox=outbox))
    methods.add("get_policy", partial(handlers.get_policy, store=store))
    methods.add("list_policies", partial(handlers.list_policies, store=store))
    methods.add("delete_policy", partial(handlers.delete_policy, store=store, cache=cache, outbox=outbox))

    await bus.listen(["policy.updated", "policy.deleted"], partial(handlers.forget_tenant_policies, cache=cache))
    await bus.subscribe("policysvc", partial(handlers.decide, store=store, cache=cache, publish=bus.publish))
    await bus.serve("policysvc", methods)
    running = Running("policysvc")
    running.tasks.append(asyncio.create_task(outbox.run()))
    return running
