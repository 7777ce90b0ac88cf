"""keysvc's tenant KEK rotation: start it, report it, and the scheduler's resumable re-wrap step
that finishes it (the old KEK versions are then shredded). Decisions live in kek_rotation.py."""

from __future__ import annotations

import structlog

from shared import commands, events, rpc
from shared.commands_custody import KekRotationView, KekStatus
from shared.outbox import Outbox

from . import kek_rotation as rotation
from .cache import KeyCache
from .clock import now as _now
from .handlers_common import event_fields, iso, sealed
from .hierarchy import KeyHierarchy, Sealed
from .store import KeyStore

log = structlog.get_logger("strongroom.keysvc")


async def rotate_kek(request: rpc.RpcRequest, params: commands.NoParams, *, store: KeyStore, hierarchy: KeyHierarchy,
                     outbox: Outbox) -> KekRotationView:
    """Start rotating the tenant's KEK: new version now, data keys re-wrapped in the background."""
    tenant_id = request.tenant_id
    running = await store.running_kek_rotation(tenant_id)
    if running is not None:
        raise rpc.ProblemError(409, "Conflict", f"a KEK rotation to version {running['to_version']} is still running")
    try:
        current, _ = await hierarchy.current_kek(tenant_id)
        if not await hierarchy.create_kek(tenant_id, current + 1):
            raise rpc.ProblemError(409, "Conflict", "the KEK changed concurrently; retry")
    except Sealed:
        raise sealed() from None
    total = await store.count_wrapped_below(tenant_id, current + 1)
    doc = rotation.new_rotation(rotation_id=events.new_id("kro_"), from_version=current, total=total, now=_now(),
                                actor=request.actor.id)
    event = events.KekRotationStarted(**event_fields(request), kek_id=rotation.kek_id(tenant_id, doc["to_version"]),
                                      kek_version=doc["to_version"], from_version=current, total=total)
    await store.insert_kek_rotation(tenant_id, doc, event)
    await outbox.publish(store.outbox_of("kek_rotations"), tenant_id, event)
    return KekRotationView.model_validate(iso(doc))


async def kek_status(request: rpc.RpcRequest, params: commands.NoParams, *, store: KeyStore) -> KekStatus:
    current = await store.current_kek(request.tenant_id)
    latest = rotation.status_view(await store.latest_kek_rotation(request.tenant_id))
    return KekStatus(kek_version=current["kek_version"] if current else None,
                     rotation=None if latest is None else KekRotationView.model_validate(latest))


async def rewrap_step(
    *, store: KeyStore, hierarchy: KeyHierarchy, cache: KeyCache, outbox: Outbox, batch: int
) -> int:
    """Scheduler job: re-wrap one batch of every running KEK rotation; finish those with nothing left.

    The cursor (the last re-wrapped version document's _id) is saved after each batch, so a
    crash repeats at most one batch; each re-wrap is a compare-and-swap on the old blob.
    """
    done = 0
    for rot in await store.running_kek_rotations():
        tenant_id, to_version = rot["tenant_id"], rot["to_version"]
        page = await store.versions_after(tenant_id, rot.get("cursor"), limit=batch)
        rewraps = []
        for d in rotation.to_rewrap(page, to_version):
            old = bytes(d["wrapped"])
            new = await hierarchy.rewrap_data_key(tenant_id, d["key_id"], d["version"], old, d["kek_version"], to_version)
            rewraps.append(rotation.Rewrap(doc_id=d["_id"], key_id=d["key_id"], version=d["version"],
                                           from_version=d["kek_version"], old=d["wrapped"], new=new))
        await store.save_rewrapped(tenant_id, rewraps, to_version)
        done += len(page)
        left = 0 if page else await store.count_wrapped_below(tenant_id, to_version)
        step = rotation.next_step(page_size=len(page), left=left)
        if step is rotation.Next.ADVANCE:
            await store.advance_kek_rotation(tenant_id, rot["rotation_id"], page[-1]["_id"], len(rewraps), _now())
        elif step is rotation.Next.SWEEP_AGAIN:  # written behind the cursor meanwhile (a create that raced it)
            await store.restart_kek_sweep(tenant_id, rot["rotation_id"])
        else:
            await _finish(rot, store=store, hierarchy=hierarchy, cache=cache, outbox=outbox)
    return done


async def _finish(rot: dict, *, store: KeyStore, hierarchy: KeyHierarchy, cache: KeyCache, outbox: Outbox) -> None:
    tenant_id, to_version = rot["tenant_id"], rot["to_version"]
    cache.drop_tenant(tenant_id)
    rewrapped = rotation.final_count(rot.get("rewrapped", 0), await store.count_wrapped_under(tenant_id, to_version))
    # Retiring the old KEK versions shreds any copy of blobs wrapped under them (backups included).
    retired = await store.retire_keks_below(tenant_id, to_version)
    hierarchy.forget_tenant(tenant_id, below=to_version)
    event = events.KekRotated(tenant_id=tenant_id, kek_id=rotation.kek_id(tenant_id, to_version), kek_version=to_version,
                              rewrapped=rewrapped, retired_versions=tuple(sorted(retired)))
    if await store.finish_kek_rotation(tenant_id, rot["rotation_id"], rewrapped, _now(), event):
        await outbox.publish(store.outbox_of("kek_rotations"), tenant_id, event)
        log.info("kek_rotated", tenant_id=tenant_id, kek_version=to_version, rewrapped=rewrapped)


async def forget_rotated_kek(event: events.Event, *, cache: KeyCache, hierarchy: KeyHierarchy) -> None:
    """Another instance finished a KEK rotation or offboarded a tenant: drop our copies."""
    if isinstance(event, events.KekRotated):
        cache.drop_tenant(event.tenant_id)
        hierarchy.forget_tenant(event.tenant_id, below=event.kek_version)
    elif isinstance(event, events.TenantDestroyed):
        cache.drop_tenant(event.tenant_id)
        hierarchy.forget_tenant(event.tenant_id)
    elif isinstance(event, events.KeyDestroyed):
        cache.drop(event.tenant_id, event.key_id)
