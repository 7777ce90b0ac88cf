"""keysvc's destruction operations: dependency report, schedule, dual-control approval, cancel, the
scheduler's run of due destructions with their signed certificates, and tenant offboarding
(consumed from the gateway's tenant.offboarded). Decisions live in destruction.py; each write is
a compare-and-swap with its event staged."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog

from shared import commands, events, rpc
from shared.commands_custody import (
    ApproveDestructionCall,
    CancelDestructionCall,
    CertificateView,
    DependencyReport,
    DestructionView,
    OffboardingView,
    ScheduleDestructionCall,
    SigningKeyView,
)
from shared.key_states import STATES
from shared.outbox import Outbox

from . import destruction as shredding
from . import keys as domain
from .cache import KeyCache
from .clock import now as _now
from .handlers_common import event_fields, existing, iso, save, tenant_settings, unprocessable
from .hierarchy import KeyHierarchy
from .signer import Signer
from .store import SYSTEM_TENANT, KeyStore

log = structlog.get_logger("strongroom.keysvc")
SERVICE = events.Actor(kind="service", id="keysvc")
MAX_WAIT = timedelta(days=30)


async def _dependencies(store: KeyStore, tenant_id: str, key_id: str, *, window_days: int) -> dict[str, Any]:
    releases = await store.releases_since(tenant_id, key_id, _now() - timedelta(days=window_days))
    return shredding.dependency_report(key_id, releases, window_days=window_days)


async def get_dependencies(request: rpc.RpcRequest, ref: commands.KeyRef, *, store: KeyStore,
                           cache: KeyCache) -> DependencyReport:
    """Which devices received this key within the tenant's dependency window."""
    key = await existing(cache, request.tenant_id, ref.key_id)
    policy = await tenant_settings(store, request.tenant_id)
    report = await _dependencies(store, request.tenant_id, key.key_id, window_days=policy.dependency_window_days)
    return DependencyReport.model_validate(report)


async def schedule_destruction(
    request: rpc.RpcRequest, call: ScheduleDestructionCall, *, store: KeyStore, cache: KeyCache,
    min_wait: timedelta, outbox: Outbox,
) -> DestructionView:
    """Schedule crypto-shredding: waiting period, dependency check, then a second custodian approves."""
    cmd = call.schedule
    key = await existing(cache, request.tenant_id, call.key_id)
    policy = await tenant_settings(store, request.tenant_id)
    report = await _dependencies(store, request.tenant_id, key.key_id, window_days=policy.dependency_window_days)
    wait = timedelta(seconds=cmd.wait_seconds) if cmd.wait_seconds else timedelta(days=policy.destruction_wait_days)
    try:
        d = shredding.schedule(
            key, destruction_id=events.new_id("dst_"), actor=request.actor.id, reason=cmd.reason, wait=wait,
            now=_now(), min_wait=min_wait, max_wait=MAX_WAIT, dependent_releases=report["releases"], force=cmd.force,
        )
    except domain.IllegalTransition as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc), "key_id") from None
    except shredding.DependencyError as exc:
        raise rpc.ProblemError(409, "Conflict", f"{exc} ({len(report['devices'])} device(s))", "force") from None
    except shredding.DestructionError as exc:
        raise unprocessable(exc, "wait_seconds") from None
    event = events.KeyDestructionScheduled(
        **event_fields(request), key_id=key.key_id, destruction_id=d.destruction_id, not_before=d.not_before,
        reason=d.reason, forced=d.forced, dependent_releases=d.dependent_releases,
    )
    doc = shredding.to_doc(d)
    if not await store.insert_destruction(request.tenant_id, doc, event):
        raise rpc.ProblemError(409, "Conflict", "a destruction of this key is already scheduled or done", "key_id")
    await outbox.publish(store.outbox_of("destructions"), request.tenant_id, event)
    return DestructionView.model_validate({**iso(doc), "dependencies": report})


async def _open_destruction(store: KeyStore, tenant_id: str, key_id: str) -> tuple[dict[str, Any], shredding.Destruction]:
    doc = await store.find_destruction(tenant_id, key_id)
    if doc is None:
        raise rpc.NotFound("destruction of this key", "key_id")
    return doc, shredding.from_doc(doc)


async def approve_destruction(
    request: rpc.RpcRequest, call: ApproveDestructionCall, *, store: KeyStore, outbox: Outbox
) -> DestructionView:
    """Dual control: a custodian other than the scheduler approves (the person is the actor id)."""
    _, d = await _open_destruction(store, request.tenant_id, call.key_id)
    try:
        approved = shredding.approve(d, actor=request.actor.id)
    except shredding.DualControlError as exc:
        raise rpc.ProblemError(403, "Forbidden", str(exc), "actor") from None
    except shredding.DestructionError as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc)) from None
    event = events.KeyDestructionApproved(**event_fields(request), key_id=d.key_id, destruction_id=d.destruction_id)
    if not await store.add_destruction_approval(request.tenant_id, d.key_id, d.destruction_id, list(d.approvals),
                                                list(approved.approvals), event):
        raise rpc.ProblemError(409, "Conflict", "the destruction changed concurrently; retry")
    await outbox.publish(store.outbox_of("destructions"), request.tenant_id, event)
    return DestructionView.model_validate(iso(shredding.to_doc(approved)))


async def cancel_destruction(request: rpc.RpcRequest, call: CancelDestructionCall, *, store: KeyStore,
                             outbox: Outbox) -> DestructionView:
    """Cancel a destruction any time before it has run."""
    _, d = await _open_destruction(store, request.tenant_id, call.key_id)
    try:
        cancelled = shredding.cancel(d, actor=request.actor.id)
    except shredding.DestructionError as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc)) from None
    event = events.KeyDestructionCancelled(**event_fields(request), key_id=d.key_id, destruction_id=d.destruction_id,
                                           reason=call.cancel.reason)
    if not await store.cancel_destruction(request.tenant_id, d.key_id, d.destruction_id, request.actor.id, event):
        raise rpc.ProblemError(409, "Conflict", "the destruction already ran or changed; it can no longer be cancelled")
    await outbox.publish(store.outbox_of("destructions"), request.tenant_id, event)
    return DestructionView.model_validate(iso(shredding.to_doc(cancelled)))


async def get_destruction(request: rpc.RpcRequest, ref: commands.KeyRef, *, store: KeyStore) -> DestructionView:
    """The destruction of a key, and whether it may run now (or what it waits for)."""
    doc, d = await _open_destruction(store, request.tenant_id, ref.key_id)
    ready, why = shredding.due(d, now=_now())
    return DestructionView.model_validate({**iso(doc), "ready": ready, "waiting_for": None if ready else why})


async def get_certificate(request: rpc.RpcRequest, ref: commands.KeyRef, *, store: KeyStore) -> CertificateView:
    """The signed certificate of a destruction that has run."""
    doc = await store.find_destroyed(request.tenant_id, ref.key_id)
    if doc is None or "certificate" not in doc:
        raise rpc.NotFound("destruction certificate", "key_id")
    return CertificateView(certificate=doc["certificate"], signature=doc["signature"],
                           signing_key_id=doc["certificate"]["signing_key_id"], algorithm="Ed25519",
                           canonicalization="JSON, sorted keys, no whitespace")


async def signing_key(request: rpc.RpcRequest, params: commands.NoParams, *, signer: Signer) -> SigningKeyView:
    """keysvc's public key, which verifies destruction certificates."""
    return SigningKeyView(algorithm="Ed25519", key_id=signer.key_id, public_key=signer.public_key_b64,
                          public_key_format="raw 32 bytes, base64", use="destruction certificates")


async def run_due_destructions(
    *, store: KeyStore, cache: KeyCache, signer: Signer, outbox: Outbox, limit: int = 100
) -> int:
    """Scheduler job: shred every approved destruction whose waiting period is over (and resume any cut short)."""
    now = _now()
    done = 0
    for doc in await store.destructions_to_run(now, limit=limit):
        if shredding.runnable(doc, now=now) and await _destroy(doc, store=store, cache=cache, signer=signer, outbox=outbox):
            done += 1
    return done


async def _destroy(doc: dict[str, Any], *, store: KeyStore, cache: KeyCache, signer: Signer, outbox: Outbox) -> bool:
    tenant_id, key_id = doc["tenant_id"], doc["key_id"]
    d = shredding.from_doc(doc)
    key = await store.load_key(tenant_id, key_id)
    if key is None:
        return False
    if doc["status"] == "scheduled":
        # 1. Certificate first (digests of the blobs about to go), claimed by compare-and-swap.
        destroyed_at = _now()
        body = shredding.certificate(
            d, key=key, wrapped_by_version=await store.wrapped_by_version(tenant_id, key_id),
            destroyed_at=destroyed_at, signing_key_id=signer.key_id,
        )
        signature = shredding.sign_certificate(body, signer.private_key)
        if not await store.claim_destruction(tenant_id, key_id, d.destruction_id, certificate=body,
                                             signature=signature, destroyed_at=destroyed_at):
            return False  # cancelled meanwhile, or another instance claimed it
        claimed = await store.find_destruction(tenant_id, key_id)
        assert claimed is not None
        doc = claimed
    # 2. The lifecycle transition (its event says who approved), then the material is shredded.
    if not STATES[key.state].destroyed:
        after, described = domain.transition(key, "destroy", actor="keysvc", reason=shredding.destroy_reason(d), now=_now())
        changed = events.KeyStateChanged(
            tenant_id=tenant_id, actor=SERVICE, key_id=key_id, from_state=described["from"], to_state=described["to"],
            action="destroy", reason=described["reason"],
        )
        try:
            await save(store, cache, key, after, changed, outbox)
        except rpc.ProblemError:
            return False  # changed concurrently; the next tick resumes from "destroying"
    await store.shred_key_material(tenant_id, key_id)
    cache.drop(tenant_id, key_id)
    # 3. The signed certificate goes into the audit chain through its event.
    event = events.KeyDestroyed(
        tenant_id=tenant_id, actor=SERVICE, key_id=key_id, destruction_id=d.destruction_id,
        certificate=doc["certificate"], signature=doc["signature"], signing_key_id=doc["certificate"]["signing_key_id"],
    )
    recorded = await store.record_destruction(tenant_id, key_id, d.destruction_id, event)
    if recorded:
        await outbox.publish(store.outbox_of("destructions"), tenant_id, event)
        log.info("key_destroyed", tenant_id=tenant_id, key_id=key_id, destruction_id=d.destruction_id)
    return recorded


async def offboard_tenant(
    event: events.Event, *, store: KeyStore, cache: KeyCache, hierarchy: KeyHierarchy, signer: Signer, outbox: Outbox,
) -> None:
    """Offboarding: shred the tenant's KEKs (so every data key is unrecoverable at once), then the
    blobs, and publish the signed tenant-destruction certificate.

    Consumed from the work queue (the gateway stages tenant.offboarded with the status change). The
    certificate is signed and claimed before anything is shredded and every step is idempotent, so a
    redelivery after a crash finishes the job, and a redelivery after it did nothing.
    """
    if not isinstance(event, events.TenantLifecycleChanged) or event.type != "tenant.offboarded":
        return
    tenant_id = event.tenant_id
    if tenant_id in (SYSTEM_TENANT, "provider"):
        log.warning("offboarding_refused", tenant_id=tenant_id, reason="not a customer tenant")
        return
    doc = await store.find_offboarding(tenant_id) or await _claim_offboarding(event, store=store, signer=signer)
    if doc["status"] == "shredded":
        return  # done before; its tenant.destroyed is relayed by the outbox if it was still staged
    await store.shred_keks(tenant_id)
    hierarchy.forget_tenant(tenant_id)
    cache.drop_tenant(tenant_id)
    await store.shred_key_material(tenant_id)
    await store.mark_all_keys_destroyed(tenant_id, _now())
    await store.drop_import_keys(tenant_id)
    # Counts from the certificate, taken before the first shred: a resumed run reports the whole job.
    cert = doc["certificate"]
    done = event.caused(
        events.TenantDestroyed, actor=SERVICE, offboarding_id=doc["offboarding_id"],
        certificate_id=cert["certificate_id"], keys=cert["keys"], kek_versions=tuple(k["kek_version"] for k in cert["keks"]),
        wrapped_blobs_shredded=cert["wrapped_blobs"], certificate=cert, signature=doc["signature"],
        signing_key_id=cert["signing_key_id"],
    )
    if await store.record_offboarding(tenant_id, doc["offboarding_id"], _now(), done):
        await outbox.publish(store.outbox_of("offboardings"), tenant_id, done)
        log.info("tenant_destroyed", tenant_id=tenant_id, keys=done.keys, certificate_id=done.certificate_id)


async def _claim_offboarding(event: events.TenantLifecycleChanged, *, store: KeyStore, signer: Signer) -> dict[str, Any]:
    """The offboarding document with the certificate of what is about to go (another instance's claim wins)."""
    tenant_id = event.tenant_id
    keks, keys, blobs = await store.tenant_material(tenant_id)
    body = shredding.tenant_certificate(
        tenant_id=tenant_id, certificate_id=events.new_id("tdc_"), offboarding_id=event.event_id,
        requested_by=event.actor.id, requested_at=event.occurred_at, keks=keks, keys=keys, wrapped_blobs=blobs,
        issued_at=_now(), signing_key_id=signer.key_id,
    )
    doc = {"offboarding_id": event.event_id, "status": "shredding", "certificate": body,
           "signature": shredding.sign_certificate(body, signer.private_key), "started_at": _now()}
    await store.claim_offboarding(tenant_id, doc)
    claimed = await store.find_offboarding(tenant_id)
    assert claimed is not None
    return claimed


async def get_offboarding(request: rpc.RpcRequest, params: commands.NoParams, *, store: KeyStore) -> OffboardingView:
    """The request tenant's offboarding: what is shredded and its signed certificate."""
    doc = await store.find_offboarding(request.tenant_id)
    if doc is None:
        raise rpc.NotFound("offboarding of this tenant", "tenant_id")
    cert = doc["certificate"]
    shredded_at = doc.get("shredded_at")
    return OffboardingView(
        tenant_id=request.tenant_id, offboarding_id=doc["offboarding_id"], status=doc["status"],
        keys_destroyed=cert["keys"], kek_versions_shredded=[k["kek_version"] for k in cert["keks"]],
        wrapped_blobs_shredded=cert["wrapped_blobs"], certificate_id=cert["certificate_id"], certificate=cert,
        signature=doc["signature"], signing_key_id=cert["signing_key_id"],
        shredded_at=shredded_at.isoformat() if shredded_at else None,
    )
