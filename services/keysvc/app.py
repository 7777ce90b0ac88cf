"""keysvc's composition root: settings, store, hierarchy, cache and bus bound to handlers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from pymongo import AsyncMongoClient

from shared import commands as cmd
from shared import commands_custody as cc
from shared import commands_volumes as cv
from shared import rpc
from shared.bus import Bus
from shared.events import Event, new_id
from shared.observability import Probe, expose, observe
from shared.outbox import Outbox
from shared.rpc import Methods
from shared.service import Running
from shared.store import service_database
from shared.store_replies import ReplyLog

from . import (
    handlers_byok,
    handlers_custodians,
    handlers_destruction,
    handlers_kek,
    handlers_keys,
    handlers_release,
    handlers_root,
    handlers_settings,
    handlers_volumes,
    rekey,
    scheduler,
)
from .cache import KeyCache
from .handlers_root import Custody
from .hierarchy import KeyHierarchy
from .keyfiles import root_key_from_settings, signing_key_from_settings
from .rekey import unseal_fingerprints
from .root_follow import follow_root
from .rootkey import RootKeyError, fingerprint
from .settings import KeySettings
from .signer import Signer
from .store import KeyStore
from .unseal import Peer, Unsealing


@dataclass
class Parts:
    """What the handlers are bound to, built once per instance."""

    settings: KeySettings
    store: KeyStore
    hierarchy: KeyHierarchy
    cache: KeyCache
    outbox: Outbox
    signer: Signer
    custody: Custody


def _key_methods(methods: Methods, p: Parts) -> None:
    s, h, c, o = p.store, p.hierarchy, p.cache, p.outbox
    methods.add("create_key", partial(handlers_keys.create_key, store=s, hierarchy=h, cache=c, outbox=o),
                cmd.CreateKey, cmd.KeyView, changes=True)
    methods.add("get_key", partial(handlers_keys.get_key, cache=c), cmd.KeyRef, cmd.KeyView)
    methods.add("get_release", partial(handlers_release.get_release, store=s), cc.ReleaseRef, cc.ReleaseRecord)
    methods.add("list_keys", partial(handlers_keys.list_keys, store=s), cmd.ListQuery, cmd.KeyList)
    methods.add("change_key_state", partial(handlers_keys.change_key_state, store=s, cache=c, outbox=o),
                cmd.ChangeKeyStateCall, cmd.KeyView, changes=True)
    methods.add("rotate_key", partial(handlers_keys.rotate_key, store=s, hierarchy=h, cache=c, outbox=o),
                cmd.RotateKeyCall, cmd.KeyView, changes=True)
    methods.add("set_min_decryption_version", partial(handlers_keys.set_min_decryption_version, store=s, cache=c, outbox=o),
                cc.SetMinDecryptionVersionCall, cmd.KeyView, changes=True)
    methods.add("get_custody_settings", partial(handlers_settings.get_settings, store=s), cmd.NoParams,
                cc.CustodySettingsBody)
    methods.add("put_custody_settings", partial(handlers_settings.put_settings, store=s, outbox=o),
                cc.CustodySettingsBody, cc.CustodySettingsBody, changes=True)
    methods.add("import_params", partial(handlers_byok.import_params, store=s, hierarchy=h), cc.ImportParamsQuery,
                cc.ImportParams)
    methods.add("import_key", partial(handlers_byok.import_key, store=s, hierarchy=h, cache=c, outbox=o),
                cc.ImportKey, cmd.KeyView, changes=True)
    methods.add("rotate_kek", partial(handlers_kek.rotate_kek, store=s, hierarchy=h, outbox=o), cmd.NoParams,
                cc.KekRotationView, changes=True)
    methods.add("kek_status", partial(handlers_kek.kek_status, store=s), cmd.NoParams, cc.KekStatus)


def _destruction_methods(methods: Methods, p: Parts) -> None:
    s, c, o = p.store, p.cache, p.outbox
    d = handlers_destruction
    methods.add("get_dependencies", partial(d.get_dependencies, store=s, cache=c), cmd.KeyRef, cc.DependencyReport)
    methods.add("schedule_destruction", partial(d.schedule_destruction, store=s, cache=c, outbox=o,
                                                min_wait=timedelta(seconds=p.settings.min_destruction_wait_seconds)),
                cc.ScheduleDestructionCall, cc.DestructionView, changes=True)
    methods.add("approve_destruction", partial(d.approve_destruction, store=s, outbox=o), cc.ApproveDestructionCall,
                cc.DestructionView, changes=True)
    methods.add("cancel_destruction", partial(d.cancel_destruction, store=s, outbox=o), cc.CancelDestructionCall,
                cc.DestructionView, changes=True)
    methods.add("get_destruction", partial(d.get_destruction, store=s), cmd.KeyRef, cc.DestructionView)
    methods.add("get_destruction_certificate", partial(d.get_certificate, store=s), cmd.KeyRef, cc.CertificateView)
    methods.add("get_offboarding", partial(d.get_offboarding, store=s), cmd.NoParams, cc.OffboardingView)
    methods.add("signing_key", partial(d.signing_key, signer=p.signer), cmd.NoParams, cc.SigningKeyView)


def _root_methods(methods: Methods, p: Parts, bus: Bus) -> None:
    s, k, o, r = p.store, p.custody, p.outbox, handlers_root
    methods.add("custody_status", partial(r.custody_status, store=s, custody=k), cmd.NoParams, cc.CustodyStatus)
    methods.add("init_custody", partial(r.init_custody, store=s, custody=k, outbox=o), cc.InitCustodyCall,
                cc.CustodyInitialized)
    methods.add("enrol_custodian_key", partial(handlers_custodians.enrol_key, store=s, outbox=o), cc.EnrolCustodianKey,
                cc.CustodianKey, changes=True)
    methods.add("list_custodian_keys", partial(handlers_custodians.list_keys, store=s), cmd.NoParams, cc.CustodianKeys)
    methods.add("my_share", partial(handlers_custodians.my_share, store=s), cmd.NoParams, cc.SealedDelivery)
    methods.add("transport_key", partial(r.transport_key, store=s, custody=k), cc.TransportKeyRequest, cc.TransportKey)
    methods.add("unseal", partial(r.submit_unseal_share, store=s, custody=k, bus_publish=bus.publish), cc.SealedShare,
                cc.UnsealResult, changes=True)
    methods.add("rekey_root", partial(r.rekey_root, store=s, custody=k,
                                      ttl=timedelta(seconds=p.settings.root_rekey_ttl_seconds)),
                cc.RekeyRootCall, cc.RekeyStarted)
    methods.add("verify_rekey", partial(r.verify_rekey, store=s, custody=k, outbox=o, batch=p.settings.kek_rewrap_batch),
                cc.SealedShare, cc.RekeyVerified, changes=True)
    methods.add("cancel_rekey", partial(r.cancel_rekey, store=s, custody=k, outbox=o), cmd.NoParams, cc.RekeyCancelled,
                changes=True)
    methods.add("export_key", partial(handlers_byok.export_key, store=s, hierarchy=p.hierarchy, cache=p.cache,
                                      bus_publish=bus.publish), cc.ExportKeyCall, cc.ExportedKey)


def _volume_methods(methods: Methods, p: Parts, bus: Bus) -> None:
    s, h, v = p.store, p.hierarchy, handlers_volumes

    async def ask_policy(request: rpc.RpcRequest, method: str, params: dict) -> dict:
        """A policysvc method on behalf of the same caller and tenant (its own correlation id: replies
        are matched by it, and the caller's call is still waiting under the original one)."""
        nested = request.model_copy(update={"method": method, "params": params, "correlation_id": new_id()})
        reply = await bus.call("policysvc", nested,
                               timeout=p.settings.rpc_timeout_seconds)
        if reply.problem is not None:
            raise rpc.ProblemError(reply.problem.status, reply.problem.title, reply.problem.detail, reply.problem.field)
        return reply.result

    methods.add("volume_escrow_key", partial(v.escrow_key, store=s, hierarchy=h), cv.EscrowKeyCall, cv.EscrowKey)
    methods.add("volume_escrow", partial(v.escrow_passphrase, store=s, hierarchy=h, outbox=p.outbox), cv.EscrowCall,
                cv.Escrowed, changes=True)
    methods.add("volume_recovery_release", partial(v.release_recovery, store=s, hierarchy=h, ask_policy=ask_policy,
                                                   publish=bus.publish_audited), cv.RecoveryReleaseCall,
                cv.RecoveryRelease)


def _jobs(p: Parts) -> dict[str, scheduler.Job]:
    """The scheduler's jobs; none runs while custody is sealed, and a busy re-wrap pauses between batches."""
    settings = p.settings

    async def when_unsealed(job: scheduler.Job) -> int:
        return 0 if p.hierarchy.sealed else await job()

    async def paced(job: scheduler.Job) -> int:
        done = await job()
        if done and settings.kek_rewrap_pause_seconds:
            await asyncio.sleep(settings.kek_rewrap_pause_seconds)
        return done

    rewrap = partial(handlers_kek.rewrap_step, store=p.store, hierarchy=p.hierarchy, cache=p.cache, outbox=p.outbox,
                     batch=settings.kek_rewrap_batch)
    root_rekey = partial(rekey.resume, p.store, p.hierarchy, p.outbox, batch=settings.kek_rewrap_batch,
                         grace=timedelta(seconds=settings.root_rekey_grace_seconds))
    return {
        "destructions": partial(when_unsealed, partial(handlers_destruction.run_due_destructions, store=p.store,
                                                       cache=p.cache, signer=p.signer, outbox=p.outbox)),
        "rotations": partial(when_unsealed, partial(handlers_keys.rotate_due_keys, store=p.store, hierarchy=p.hierarchy,
                                                    cache=p.cache, outbox=p.outbox)),
        "kek_rewrap": partial(when_unsealed, partial(paced, rewrap)),
        "root_rekey": partial(when_unsealed, partial(paced, root_rekey)),
    }


async def _work(event: Event, *, p: Parts, publish: handlers_release.Publish, notify: handlers_release.Publish) -> None:
    """keysvc's work queue (bound in shared/topology.py): decided key requests and offboarded tenants."""
    if event.type == "tenant.offboarded":  # type: ignore[attr-defined]
        await handlers_destruction.offboard_tenant(event, store=p.store, cache=p.cache, hierarchy=p.hierarchy,
                                                   signer=p.signer, outbox=p.outbox)
        return
    # Audit first: no key.released reaches the gateway unless its audit record is durably queued.
    await handlers_release.release_key(event, store=p.store, hierarchy=p.hierarchy, cache=p.cache,
                                       publish=publish, notify=notify)


async def start(settings: KeySettings, *, bus: Bus, client: AsyncMongoClient, root_key: bytes | None) -> Running:
    db = service_database(client, "keysvc", prefix=settings.db_prefix)
    store, replies = KeyStore(db), ReplyLog(db)
    await store.create_indexes()
    await replies.create_indexes()
    root_doc = await store.root_record()
    if root_key is not None and root_doc is not None and fingerprint(root_key) not in unseal_fingerprints(root_doc):
        raise RootKeyError("the configured root key does not match custody's recorded root fingerprint")
    hierarchy = KeyHierarchy(store, root_key=root_key)
    hierarchy.follow_root_record(root_doc)
    outbox = Outbox(bus.publish, store.outbox_collections)
    await outbox.create_indexes()
    await outbox.relay()
    signer = Signer(signing_key_from_settings(settings))
    unsealing = Unsealing(store, hierarchy, Peer(signer.private_key), ttl=timedelta(seconds=settings.lease_seconds))
    await unsealing.register()
    custody = Custody(hierarchy=hierarchy, unsealing=unsealing, signing_key=signer.private_key,
                      allow_single_custodian=settings.allow_single_custodian)
    p = Parts(settings, store, hierarchy, KeyCache(store, settings.key_cache_size), outbox, signer, custody)

    methods = Methods(replies)
    _key_methods(methods, p)
    _destruction_methods(methods, p)
    _root_methods(methods, p, bus)
    _volume_methods(methods, p, bus)
    await bus.listen(["key.state_changed", "key.rotated", "key.min_decryption_version_set"],
                     partial(handlers_release.forget_changed_key, cache=p.cache))
    await bus.listen(["custody.unseal_progress"], partial(handlers_root.catch_up_unseal, store=store, custody=custody))
    await bus.listen(["kek.rotated", "tenant.destroyed", "key.destroyed"],
                     partial(handlers_kek.forget_rotated_kek, cache=p.cache, hierarchy=hierarchy))
    probe = _probe(settings, bus=bus, client=client, hierarchy=hierarchy)
    metrics = probe.metrics
    await bus.subscribe("keysvc", metrics.timed("work", partial(
        _work, p=p, publish=metrics.counting(bus.publish_audited), notify=metrics.counting(bus.publish))))
    await bus.serve("keysvc", metrics.timed_rpc(methods))

    lease = scheduler.Lease(store, "keysvc-scheduler", seconds=settings.lease_seconds)
    running = Running("keysvc")
    running.tasks.append(asyncio.create_task(outbox.run()))
    interval = settings.scheduler_interval_seconds
    running.tasks.append(asyncio.create_task(scheduler.run(lease, _jobs(p), interval=interval)))
    running.tasks.append(asyncio.create_task(follow_root(store, hierarchy, unsealing, interval=interval)))
    running.on_stop.append(unsealing.withdraw)
    running.on_stop.append(lease.release)
    running.hierarchy = hierarchy  # type: ignore[attr-defined]
    running.cache = p.cache  # type: ignore[attr-defined]
    await expose(running, probe, settings)
    return running


def _probe(settings: KeySettings, *, bus: Bus, client: AsyncMongoClient, hierarchy: KeyHierarchy) -> Probe:
    """keysvc is ready only while unsealed: sealed, it releases nothing."""
    probe = observe("keysvc", settings, bus=bus, client=client)

    async def unsealed() -> str | None:
        return "key custody is sealed: root custodians must submit their unseal shares" if hierarchy.sealed else None

    probe.checks["sealed"] = unsealed
    probe.metrics.gauge("strongroom_sealed", "1 while key custody is sealed (nothing is released)",
                        lambda: float(hierarchy.sealed))
    return probe


# The launchers (strongroom serve) read the root source through the composition root.
__all__ = ["RootKeyError", "root_key_from_settings", "start"]
