"""keysvc's composition root: settings, store, hierarchy, cache and bus bound to handlers."""

from __future__ import annotations

import asyncio
from functools import partial

from pymongo import AsyncMongoClient

from shared import commands
from shared.bus import Bus
from shared.config import KeySettings
from shared.outbox import Outbox
from shared.rpc import Methods
from shared.service import Running
from shared.store import service_database

from . import handlers
from . import release_status
from .hierarchy import KeyHierarchy
from .rootkey import RootKeyError, SealedFileRootKey
from .store import KeyStore


def root_key_from_settings(settings: KeySettings) -> bytes | None:
    """The sealed root key file, if configured; None leaves custody sealed."""
    if settings.root_key_file and settings.root_key_passphrase:
        return SealedFileRootKey(settings.root_key_file, settings.root_key_passphrase).load()
    return None


async def start(settings: KeySettings, *, bus: Bus, client: AsyncMongoClient, root_key: bytes | None) -> Running:
    store = KeyStore(service_database(client, "keysvc", prefix=settings.db_prefix))
    await store.create_indexes()
    hierarchy = KeyHierarchy(store, root_key=root_key)
    cache = handlers.KeyCache(store, settings.key_cache_size)
    outbox = Outbox(bus.publish, [store.keys.raw])
    await outbox.create_indexes()
    await outbox.relay()

    methods = Methods()
    methods.add("create_key", partial(handlers.create_key, store=store, hierarchy=hierarchy, cache=cache, outbox=outbox), commands.CreateKey)
    methods.add("get_key", partial(handlers.get_key, cache=cache))
    methods.add("get_release", partial(release_status.get_release, store=store))  # agents polling approvals
    methods.add("list_keys", partial(handlers.list_keys, store=store), commands.ListQuery)
    methods.add("change_key_state", partial(handlers.change_key_state, store=store, cache=cache, outbox=outbox))
    methods.add("rotate_key", partial(handlers.rotate_key, store=store, hierarchy=hierarchy, cache=cache, outbox=outbox))

    await bus.listen(["key.state_changed", "key.rotated"], partial(handlers.forget_changed_key, cache=cache))
    await bus.subscribe(
        "keysvc", partial(handlers.release_key, store=store, hierarchy=hierarchy, cache=cache, publish=bus.publish)
    )
    await bus.serve("keysvc", methods)
    running = Running("keysvc")
    running.tasks.append(asyncio.create_task(outbox.run()))
    running.hierarchy = hierarchy  # type: ignore[attr-defined]
    return running


__all__ = ["RootKeyError", "root_key_from_settings", "start"]
