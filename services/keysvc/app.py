"""keysvc's composition root: settings, store, hierarchy, cache and bus bound to handlers."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymongo import AsyncMongoClient

from shared import commands, commands_custody
from shared.bus import Bus
from shared.outbox import Outbox
from shared.rpc import Methods
from shared.service import Running
from shared.store import service_database

from . import custody_handlers as custody
from . import handlers, rekey, release_status, scheduler
from .hierarchy import KeyHierarchy
from .rootkey import RootKeyError, SealedFileRootKey, fingerprint
from .settings import KeySettings
from .store import SYSTEM_TENANT, KeyStore
from .unseal import Peer, Unsealing

log = structlog.get_logger("strongroom.keysvc")


def root_key_from_settings(settings: KeySettings) -> bytes | None:
    """The configured root source (sealed file or PKCS#11); None leaves custody sealed until unsealed with shares."""
    if settings.root_key_file and settings.root_key_passphrase:
        return SealedFileRootKey(settings.root_key_file, settings.root_key_passphrase).load()
    if settings.pkcs11_module and settings.pkcs11_wrapped_root_file:
        from .pkcs11 import Pkcs11RootKey

        return Pkcs11RootKey.from_settings(settings).load()
    return None


def signing_key_from_settings(settings: KeySettings) -> Ed25519PrivateKey:
    """keysvc's certificate-signing key: the PEM file when configured (created 0600 if missing)."""
    if settings.signing_key_file is None:
        log.warning("keysvc_signing_key_ephemeral", hint="set STRONGROOM_KEYSVC_SIGNING_KEY_FILE to keep it across restarts")
        return Ed25519PrivateKey.generate()
    path = Path(settings.signing_key_file)
    if not path.exists():
        write_signing_key(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RootKeyError(f"{path} does not hold an Ed25519 private key")
    return key


def write_signing_key(path: Path) -> None:
    import os

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


async def follow_root(store: KeyStore, hierarchy: KeyHierarchy, unsealing: Unsealing, *, interval: float) -> None:
    """Every instance, every tick: renew its registration, unseal from the round or a hand-off (or hand
    the root on), and keep its roots in line with the root record (another instance's re-key)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await unsealing.register()
            root_doc = await store.custody.find_one(SYSTEM_TENANT, {"name": "root"})
            if root_doc is not None:
                await unsealing.catch_up(root_doc, rekey.unseal_fingerprints(root_doc))
            hierarchy.follow_root_record(root_doc)
        except Exception:  # a store hiccup must not end the loop; the next tick retries
            log.warning("root_follow_failed", exc_info=True)


async def start(settings: KeySettings, *, bus: Bus, client: AsyncMongoClient, root_key: bytes | None) -> Running:
    store = KeyStore(service_database(client, "keysvc", prefix=settings.db_prefix))
    await store.create_indexes()
    root_doc = await store.custody.find_one(SYSTEM_TENANT, {"name": "root"})
    if root_key is not None and root_doc is not None and fingerprint(root_key) not in rekey.unseal_fingerprints(root_doc):
        raise RootKeyError("the configured root key does not match custody's recorded root fingerprint")
    hierarchy = KeyHierarchy(store, root_key=root_key)
    hierarchy.follow_root_record(root_doc)
    cache = handlers.KeyCache(store, settings.key_cache_size)
    outbox = Outbox(bus.publish, store.outbox_collections)
    await outbox.create_indexes()
    await outbox.relay()
    signer = custody.Signer(signing_key_from_settings(settings))
    unsealing = Unsealing(store, hierarchy, Peer(signer.private_key), ttl=timedelta(seconds=settings.lease_seconds))
    await unsealing.register()
    state = custody.Custody(hierarchy=hierarchy, min_destruction_wait=timedelta(seconds=settings.min_destruction_wait_seconds),
                            unsealing=unsealing, signing_key=signer.private_key)

    methods = Methods()
    methods.add("create_key", partial(handlers.create_key, store=store, hierarchy=hierarchy, cache=cache, outbox=outbox), commands.CreateKey)
    methods.add("get_key", partial(handlers.get_key, cache=cache))
    methods.add("get_release", partial(release_status.get_release, store=store))  # agents polling approvals
    methods.add("list_keys", partial(handlers.list_keys, store=store), commands.ListQuery)
    methods.add("change_key_state", partial(handlers.change_key_state, store=store, cache=cache, outbox=outbox))
    methods.add("rotate_key", partial(handlers.rotate_key, store=store, hierarchy=hierarchy, cache=cache, outbox=outbox))
    # --- custody ---
    methods.add("set_min_decryption_version", partial(handlers.set_min_decryption_version, store=store, cache=cache, outbox=outbox))
    methods.add("get_custody_settings", partial(custody.get_settings, store=store))
    methods.add("put_custody_settings", partial(custody.put_settings, store=store, outbox=outbox), commands_custody.CustodySettingsBody)
    methods.add("get_dependencies", partial(custody.get_dependencies, store=store, cache=cache))
    methods.add("schedule_destruction", partial(custody.schedule_destruction, store=store, cache=cache, custody=state, outbox=outbox))
    methods.add("approve_destruction", partial(custody.approve_destruction, store=store, outbox=outbox))
    methods.add("cancel_destruction", partial(custody.cancel_destruction, store=store, outbox=outbox))
    methods.add("get_destruction", partial(custody.get_destruction, store=store))
    methods.add("get_destruction_certificate", partial(custody.get_certificate, store=store, signer=signer))
    methods.add("offboard_tenant", partial(custody.offboard_tenant, store=store, cache=cache, hierarchy=hierarchy, outbox=outbox))
    methods.add("custody_status", partial(custody.custody_status, store=store, custody=state))
    methods.add("init_custody", partial(custody.init_custody, store=store, custody=state, outbox=outbox), commands_custody.InitCustody)
    methods.add("transport_key", partial(custody.transport_key, store=store, custody=state), commands_custody.TransportKeyRequest)
    methods.add("unseal", partial(custody.submit_unseal_share, store=store, custody=state, bus_publish=bus.publish), commands_custody.SealedShare)
    methods.add("rekey_root", partial(custody.rekey_root, store=store, custody=state,
                                      ttl=timedelta(seconds=settings.root_rekey_ttl_seconds)), commands_custody.RekeyRoot)
    methods.add("verify_rekey", partial(custody.verify_rekey, store=store, custody=state, outbox=outbox,
                                        batch=settings.kek_rewrap_batch), commands_custody.SealedShare)
    methods.add("cancel_rekey", partial(custody.cancel_rekey, store=store, custody=state, outbox=outbox))
    methods.add("rotate_kek", partial(custody.rotate_kek, store=store, hierarchy=hierarchy, outbox=outbox))
    methods.add("kek_status", partial(custody.kek_status, store=store))
    methods.add("import_params", partial(custody.import_params, store=store, hierarchy=hierarchy))
    methods.add("import_key", partial(custody.import_key, store=store, hierarchy=hierarchy, cache=cache, outbox=outbox), commands_custody.ImportKey)
    methods.add("export_key", partial(custody.export_key, store=store, hierarchy=hierarchy, cache=cache, bus_publish=bus.publish))
    methods.add("signing_key", partial(custody.signing_key, signer=signer))

    await bus.listen(["key.state_changed", "key.rotated", "key.min_decryption_version_set"], partial(handlers.forget_changed_key, cache=cache))
    await bus.listen(["custody.unseal_progress"], partial(custody.catch_up_unseal, store=store, custody=state))
    await bus.listen(["kek.rotated", "tenant.keys_shredded", "key.destroyed"],
                     partial(custody.forget_rotated_kek, cache=cache, hierarchy=hierarchy))
    await bus.subscribe(
        # Audit first: no key.released reaches the gateway unless its audit record is durably queued.
        "keysvc", partial(handlers.release_key, store=store, hierarchy=hierarchy, cache=cache,
                          publish=bus.publish_audited, notify=bus.publish)
    )
    await bus.serve("keysvc", methods)

    async def when_unsealed(job):
        return 0 if hierarchy.sealed else await job()

    async def rewrap() -> int:
        done = await custody.rewrap_step(store=store, hierarchy=hierarchy, cache=cache, outbox=outbox,
                                         batch=settings.kek_rewrap_batch)
        if done and settings.kek_rewrap_pause_seconds:
            await asyncio.sleep(settings.kek_rewrap_pause_seconds)
        return done

    async def root_rekey() -> int:
        done = await rekey.resume(store, hierarchy, outbox, batch=settings.kek_rewrap_batch,
                                  grace=timedelta(seconds=settings.root_rekey_grace_seconds))
        if done and settings.kek_rewrap_pause_seconds:
            await asyncio.sleep(settings.kek_rewrap_pause_seconds)
        return done

    lease = scheduler.Lease(store.leases, "keysvc-scheduler", seconds=settings.lease_seconds)
    jobs = {
        "destructions": partial(when_unsealed, partial(custody.run_due_destructions, store=store, cache=cache,
                                                       hierarchy=hierarchy, signer=signer, outbox=outbox)),
        "rotations": partial(when_unsealed, partial(handlers.rotate_due_keys, store=store, hierarchy=hierarchy,
                                                    cache=cache, outbox=outbox)),
        "kek_rewrap": partial(when_unsealed, rewrap),
        "root_rekey": partial(when_unsealed, root_rekey),
    }
    running = Running("keysvc")
    running.tasks.append(asyncio.create_task(outbox.run()))
    running.tasks.append(asyncio.create_task(scheduler.run(lease, jobs, interval=settings.scheduler_interval_seconds)))
    running.tasks.append(asyncio.create_task(follow_root(store, hierarchy, unsealing, interval=settings.scheduler_interval_seconds)))
    running.on_stop.append(unsealing.withdraw)
    running.on_stop.append(lease.release)
    running.hierarchy = hierarchy  # type: ignore[attr-defined]
    running.cache = cache  # type: ignore[attr-defined]
    return running


__all__ = ["RootKeyError", "root_key_from_settings", "signing_key_from_settings", "start"]
