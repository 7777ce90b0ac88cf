"""auditsvc's composition root."""

from __future__ import annotations

import asyncio
import secrets
from functools import partial

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymongo import AsyncMongoClient

from shared.bus import Bus
from shared.crypto.envelope import SecretBytes
from shared.crypto.sealing import DATA_KEY_BYTES, SecretSealer, load_data_key
from shared.outbox import Outbox
from shared.rpc import Methods
from shared.service import Running
from shared.store import service_database

from . import forwarders, handlers, retention
from .checkpoints import Checkpointer
from .settings import AuditSettings
from .signing import load_private_key
from .store import AuditStore

log = structlog.get_logger("strongroom.auditsvc")


def signing_key_from_settings(settings: AuditSettings) -> Ed25519PrivateKey:
    if settings.signing_key_file:
        return load_private_key(settings.signing_key_file)
    # Checkpoints signed with a key nobody kept cannot be verified later: say so loudly.
    log.warning("audit_signing_key_ephemeral", hint="set STRONGROOM_AUDITSVC_SIGNING_KEY_FILE")
    return Ed25519PrivateKey.generate()


def sealer_from_settings(settings: AuditSettings) -> SecretSealer:
    if settings.data_key_file:
        return SecretSealer(load_data_key(settings.data_key_file, setting="STRONGROOM_AUDITSVC_DATA_KEY_FILE",
                                          seals="webhook forwarders' signing secrets"), service="strongroom.auditsvc")
    # Secrets sealed under a key nobody kept cannot be opened after a restart: say so loudly.
    log.warning("audit_data_key_ephemeral", hint="set STRONGROOM_AUDITSVC_DATA_KEY_FILE")
    return SecretSealer(SecretBytes(secrets.token_bytes(DATA_KEY_BYTES)), service="strongroom.auditsvc")


async def start(settings: AuditSettings, *, bus: Bus, client: AsyncMongoClient) -> Running:
    store = AuditStore(service_database(client, "auditsvc", prefix=settings.db_prefix))
    await store.create_indexes()
    outbox = Outbox(bus.publish, store.outbox_collections)
    await outbox.create_indexes()
    signing_key = signing_key_from_settings(settings)
    checkpointer = Checkpointer(
        store, outbox, signing_key,
        every_records=settings.checkpoint_every_records, every_seconds=settings.checkpoint_every_seconds,
    )
    await checkpointer.register_key()
    await checkpointer.load()
    heads = handlers.ChainHeads(store)
    stats = handlers.IngestStats()
    methods = Methods()
    methods.add("list_records", partial(handlers.list_records, store=store))
    methods.add("report", partial(handlers.report, store=store))
    methods.add("export_page", partial(handlers.export_page, store=store))
    methods.add("list_checkpoints", partial(handlers.list_checkpoints, store=store))
    methods.add("signing_keys", partial(handlers.signing_keys, store=store, current_key_id=checkpointer.key_id))
    methods.add("status", partial(handlers.status, store=store, stats=stats,
                                  queue_depth=partial(bus.queue_depth, "auditsvc")))
    sealer = sealer_from_settings(settings)
    for name in ("create_forwarder", "rotate_forwarder_secret"):
        methods.add(name, partial(getattr(forwarders, name), store=store, outbox=outbox, sealer=sealer))
    for name in ("update_forwarder", "delete_forwarder"):
        methods.add(name, partial(getattr(forwarders, name), store=store, outbox=outbox))
    for name in ("list_forwarders", "get_forwarder"):
        methods.add(name, partial(getattr(forwarders, name), store=store))
    keeper = retention.Retention(store, outbox, signing_key, archive_dir=settings.archive_dir,
                                 default_days=settings.retention_days)
    methods.add("get_retention", partial(retention.get_retention, retention=keeper))
    methods.add("set_retention", partial(retention.set_retention, store=store, outbox=outbox))
    methods.add("run_retention", partial(retention.run_retention, retention=keeper))
    methods.add("list_archives", partial(retention.list_archives, store=store))
    for name in ("get_archive", "archive_chunk"):
        methods.add(name, partial(getattr(retention, name), store=store, chunk_bytes=settings.archive_chunk_bytes))
    await bus.subscribe_batch(
        "auditsvc",
        handlers.Ingestor(store, heads, checkpointer=checkpointer, stats=stats),
        max_batch=settings.batch_size,
        max_wait=settings.batch_wait_seconds,
    )
    await bus.serve("auditsvc", methods)
    await outbox.relay()
    running = Running("auditsvc")
    tick = min(1.0, max(0.05, settings.checkpoint_every_seconds / 4))
    pool = forwarders.ForwarderPool(store, settings, sealer)
    running.tasks += [asyncio.create_task(outbox.run()), asyncio.create_task(checkpointer.run(tick)),
                      asyncio.create_task(pool.run()),
                      asyncio.create_task(keeper.loop(settings.retention_interval_seconds))]
    running.on_stop.append(pool.stop)
    return running
