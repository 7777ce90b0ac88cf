"""auditsvc's composition root."""

from __future__ import annotations

import asyncio
import secrets
from functools import partial
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymongo import AsyncMongoClient

from shared import commands_audit as c
from shared.bus import Bus
from shared.crypto.envelope import SecretBytes
from shared.crypto.sealing import DATA_KEY_BYTES, SecretSealer, load_data_key
from shared.observability import expose
from shared.outbox import Outbox
from shared.rpc import Methods, Replies
from shared.service import Running
from shared.store import service_database
from shared.store_replies import ReplyLog

from . import forwarders as forwarders_rpc
from . import handlers, health, retention
from .checkpoints import Checkpointer
from .destinations import Allowed
from .forwarder_pool import ForwarderPool
from .settings import AuditSettings
from .signing import load_private_key
from .store import AuditStore
from .store_archives import ArchiveStore
from .store_checkpoints import CheckpointStore
from .store_forwarders import ForwarderStore

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


def _methods(*, store: AuditStore, checkpoints: CheckpointStore, forwarders: ForwarderStore, archives: ArchiveStore,
             outbox: Outbox, sealer: SecretSealer, keeper: retention.Retention, stats: handlers.IngestStats,
             current_key_id: str, queue_depth: Any, chunk_bytes: int, allow: tuple[Allowed, ...],
             replies: Replies | None = None) -> Methods:
    """Changes take effect once per request id (`rpc.Methods`); creating a forwarder and rotating its
    secret are not recorded: their replies hold the new signing secret."""
    methods = Methods(replies)
    methods.add("list_records", partial(handlers.list_records, store=store), params=c.AuditQuery, result=c.RecordPage)
    methods.add("report", partial(handlers.report, store=store), params=c.ReportQuery, result=c.ReportReply)
    methods.add("export_page", partial(handlers.export_page, store=store), params=c.ExportQuery, result=c.ExportPage)
    methods.add("list_checkpoints", partial(handlers.list_checkpoints, checkpoints=checkpoints),
        params=c.CheckpointQuery, result=c.CheckpointPage)
    methods.add("signing_keys", partial(handlers.signing_keys, checkpoints=checkpoints, current_key_id=current_key_id),
        params=c.NoParams, result=c.SigningKeys)
    methods.add("status", partial(handlers.status, store=store, checkpoints=checkpoints, stats=stats, queue_depth=queue_depth),
        params=c.NoParams, result=c.AuditStatus)
    fwd = {"store": store, "forwarders": forwarders}
    methods.add("create_forwarder", partial(forwarders_rpc.create_forwarder, **fwd, outbox=outbox, sealer=sealer, allow=allow),
        params=c.ForwarderSpec, result=c.ForwarderView)
    methods.add("rotate_forwarder_secret", partial(forwarders_rpc.rotate_forwarder_secret, **fwd, outbox=outbox, sealer=sealer),
        params=c.ForwarderRef, result=c.ForwarderView)
    methods.add("update_forwarder", partial(forwarders_rpc.update_forwarder, **fwd, outbox=outbox),
        params=c.UpdateForwarder, result=c.ForwarderView, changes=True)
    methods.add("delete_forwarder", partial(forwarders_rpc.delete_forwarder, forwarders=forwarders, outbox=outbox),
        params=c.ForwarderRef, result=c.ForwarderDeleted, changes=True)
    methods.add("list_forwarders", partial(forwarders_rpc.list_forwarders, **fwd), params=c.NoParams, result=c.ForwarderList)
    methods.add("get_forwarder", partial(forwarders_rpc.get_forwarder, **fwd), params=c.ForwarderRef, result=c.ForwarderView)
    methods.add("get_retention", partial(retention.get_retention, retention=keeper), params=c.NoParams, result=c.RetentionWindow)
    methods.add("set_retention", partial(retention.set_retention, archives=archives, outbox=outbox),
        params=c.RetentionSetting, result=c.RetentionWindow, changes=True)
    methods.add("run_retention", partial(retention.run_retention, retention=keeper), params=c.NoParams, result=c.RetentionRun,
        changes=True)
    methods.add("list_archives", partial(retention.list_archives, archives=archives), params=c.ArchiveQuery, result=c.ArchivePage)
    methods.add("get_archive", partial(retention.get_archive, archives=archives, chunk_bytes=chunk_bytes),
        params=c.ArchiveRef, result=c.ArchiveInfo)
    methods.add("archive_chunk", partial(retention.archive_chunk, archives=archives, chunk_bytes=chunk_bytes),
        params=c.ArchiveChunkQuery, result=c.ArchiveChunk)
    return methods


async def start(settings: AuditSettings, *, bus: Bus, client: AsyncMongoClient) -> Running:
    db = service_database(client, "auditsvc", prefix=settings.db_prefix)
    store, checkpoints, forwarders, archives = AuditStore(db), CheckpointStore(db), ForwarderStore(db), ArchiveStore(db)
    replies = ReplyLog(db)
    for each in (store, checkpoints, forwarders, archives, replies):
        await each.create_indexes()
    outbox = Outbox(bus.publish, [checkpoints.collection, forwarders.collection, archives.archive_collection,
                                  archives.settings_collection])
    await outbox.create_indexes()
    signing_key = signing_key_from_settings(settings)
    checkpointer = Checkpointer(
        store, checkpoints, outbox, signing_key,
        every_records=settings.checkpoint_every_records, every_seconds=settings.checkpoint_every_seconds,
    )
    await checkpointer.register_key()
    await checkpointer.load()
    stats = handlers.IngestStats()
    sealer = sealer_from_settings(settings)
    keeper = retention.Retention(store, archives, checkpoints, forwarders, outbox, signing_key,
                                 archive_dir=settings.archive_dir, default_days=settings.retention_days)
    methods = _methods(store=store, checkpoints=checkpoints, forwarders=forwarders, archives=archives, outbox=outbox,
                       sealer=sealer, keeper=keeper, stats=stats, current_key_id=checkpointer.key_id,
                       queue_depth=partial(bus.queue_depth, "auditsvc"), chunk_bytes=settings.archive_chunk_bytes,
                       allow=settings.forwarder_allowlist, replies=replies)
    await bus.subscribe_batch(
        "auditsvc",
        handlers.Ingestor(store, handlers.ChainHeads(store), checkpointer=checkpointer, stats=stats),
        max_batch=settings.batch_size,
        max_wait=settings.batch_wait_seconds,
    )
    pool = ForwarderPool(store, forwarders, settings, sealer)
    probe = health.probe(settings, bus=bus, client=client, stats=stats, pool=pool)
    await bus.serve("auditsvc", probe.metrics.timed_rpc(methods))
    await outbox.relay()
    running = Running("auditsvc")
    tick = min(1.0, max(0.05, settings.checkpoint_every_seconds / 4))
    running.tasks += [asyncio.create_task(outbox.run()), asyncio.create_task(checkpointer.run(tick)),
                      asyncio.create_task(pool.run()),
                      asyncio.create_task(keeper.loop(settings.retention_interval_seconds))]
    running.on_stop.append(pool.stop)
    await expose(running, probe, settings)
    return running
