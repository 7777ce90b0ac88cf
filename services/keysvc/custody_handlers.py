"""keysvc's custody operations: tenant key policy, destruction with dual control and certificates,
offboarding, the root of trust (init, unseal, re-key), tenant KEK rotation, import and export.

Thin like `handlers.py`: validate, load, decide in the pure modules, save with the event
staged in the same write, publish. Dependencies are keyword arguments bound in `app.py`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from shared import events, rpc
from shared import outbox as staging
from shared.commands_custody import (
    ApproveDestruction,
    CancelDestruction,
    CustodySettingsBody,
    ExportKey,
    ImportKey,
    ImportParamsQuery,
    InitCustody,
    RekeyRoot,
    ScheduleDestruction,
    SealedShare,
    TransportKeyRequest,
)
from shared.crypto import byok
from shared.crypto import shares as transit
from shared.crypto.envelope import UnwrapError, aad_for, unwrap, wrap
from shared.outbox import Outbox
from shared.store import DuplicateKeyError

from . import destruction as shredding
from . import keys as domain
from . import rekey as rekeying
from .handlers import KeyCache, _existing, _now, _save, tenant_settings
from .hierarchy import KeyHierarchy, Sealed
from .rootkey import (
    ROOT_KEY_BYTES,
    ShareError,
    fingerprint,
    share_set_id,
    split_root_key,
)
from .store import SYSTEM_TENANT, KeyStore, public_view
from .unseal import RoundChanged, ShareReplayed, Unsealing

log = structlog.get_logger("strongroom.keysvc")

IMPORT_TTL = timedelta(hours=24)
EXPORT_ALGORITHM = byok.RSA_OAEP


@dataclass
class Signer:
    """keysvc's Ed25519 key for destruction certificates (the private half never leaves memory)."""

    private_key: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return shredding.public_key_id(self.private_key.public_key())

    @property
    def public_key_b64(self) -> str:
        raw = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id})"


@dataclass
class Custody:
    """The root-of-trust state of this keysvc instance: its hierarchy, its part in unsealing, the minimum waits."""

    hierarchy: KeyHierarchy
    min_destruction_wait: timedelta
    unsealing: Unsealing | None = None
    # keysvc's signing key: signs the share-transport key and the sealed new shares it hands out.
    signing_key: Ed25519PrivateKey | None = None

    @property
    def signer_key(self) -> Ed25519PrivateKey:
        if self.signing_key is None:
            raise rpc.ProblemError(503, "Service Unavailable", "keysvc has no signing key for share transport")
        return self.signing_key


def _fields(request: rpc.RpcRequest) -> dict[str, Any]:
    return {"tenant_id": request.tenant_id, "correlation_id": request.correlation_id, "actor": request.actor,
            "source_ip": request.source_ip}


def _unprocessable(exc: Exception, field_name: str | None = None) -> rpc.ProblemError:
    return rpc.ProblemError(422, "Unprocessable Content", str(exc), field_name)


def _iso(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in doc.items()
            if k not in ("_id", "_outbox", "tenant_id")}


# --- tenant settings ------------------------------------------------------------------------


async def get_settings(request: rpc.RpcRequest, params: dict, *, store: KeyStore) -> dict:
    policy = await tenant_settings(store, request.tenant_id)
    return {**policy.__dict__}


async def put_settings(request: rpc.RpcRequest, body: CustodySettingsBody, *, store: KeyStore, outbox: Outbox) -> dict:
    """Set the tenant's key policy; later key creations and destructions follow it."""
    try:
        policy = domain.CustodySettings(**body.model_dump())
    except domain.KeyPolicyError as exc:
        raise _unprocessable(exc) from None
    doc = {**policy.__dict__, "updated_at": _now(), "updated_by": request.actor.id}
    event = events.CustodySettingsChanged(**_fields(request), settings={**policy.__dict__})
    await store.settings.update_one(request.tenant_id, {}, {"$set": doc, **staging.push(event)}, upsert=True)
    await outbox.publish(store.settings.raw, request.tenant_id, event)
    return {**policy.__dict__}


# --- destruction -----------------------------------------------------------------------------


def _destruction_from(doc: dict[str, Any]) -> shredding.Destruction:
    names = shredding.Destruction.__dataclass_fields__
    values = {k: doc.get(k) for k in names if k in doc}
    values["approvals"] = tuple(doc.get("approvals", ()))
    return shredding.Destruction(**values)


def _destruction_doc(d: shredding.Destruction) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.__dict__.items() if k != "tenant_id"}


async def dependency_report(store: KeyStore, tenant_id: str, key_id: str, *, window_days: int) -> dict[str, Any]:
    """Which devices received this key within the window (from the release ledger, indexed)."""
    since = _now() - timedelta(days=window_days)
    # Filtered on exactly the indexed fields (tenant, key, time); refusals are dropped here.
    docs = await store.releases.find(
        tenant_id, {"key_id": key_id, "at": {"$gte": since}},
        projection={"device_id": 1, "at": 1, "key_version": 1, "released": 1}, sort=[("at", -1)], limit=10_000,
    )
    docs = [d for d in docs if d.get("released")]
    devices: dict[str, dict[str, Any]] = {}
    for d in docs:
        entry = devices.setdefault(d["device_id"], {"device_id": d["device_id"], "releases": 0,
                                                    "last_release_at": d["at"].isoformat(), "versions": set()})
        entry["releases"] += 1
        entry["versions"].add(d.get("key_version"))
    return {
        "key_id": key_id,
        "window_days": window_days,
        "releases": len(docs),
        "devices": [{**v, "versions": sorted(x for x in v["versions"] if x is not None)} for v in devices.values()],
    }


async def get_dependencies(request: rpc.RpcRequest, params: dict, *, store: KeyStore, cache: KeyCache) -> dict:
    key = await _existing(cache, request.tenant_id, str(params.get("key_id", "")))
    policy = await tenant_settings(store, request.tenant_id)
    return await dependency_report(store, request.tenant_id, key.key_id, window_days=policy.dependency_window_days)


async def schedule_destruction(
    request: rpc.RpcRequest, params: dict, *, store: KeyStore, cache: KeyCache, custody: Custody, outbox: Outbox
) -> dict:
    """Schedule crypto-shredding: waiting period, dependency check, then a second custodian approves."""
    cmd = ScheduleDestruction.model_validate(params.get("schedule", {}))
    key = await _existing(cache, request.tenant_id, str(params.get("key_id", "")))
    policy = await tenant_settings(store, request.tenant_id)
    report = await dependency_report(store, request.tenant_id, key.key_id, window_days=policy.dependency_window_days)
    wait = timedelta(seconds=cmd.wait_seconds) if cmd.wait_seconds else timedelta(days=policy.destruction_wait_days)
    try:
        d = shredding.schedule(
            key, destruction_id=events.new_id("dst_"), actor=request.actor.id, reason=cmd.reason, wait=wait,
            now=_now(), min_wait=custody.min_destruction_wait, max_wait=timedelta(days=30),
            dependent_releases=report["releases"], force=cmd.force,
        )
    except domain.IllegalTransition as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc), "key_id") from None
    except shredding.DependencyError as exc:
        raise rpc.ProblemError(409, "Conflict", f"{exc} ({len(report['devices'])} device(s))", "force") from None
    except shredding.DestructionError as exc:
        raise _unprocessable(exc, "wait_seconds") from None
    event = events.KeyDestructionScheduled(
        **_fields(request), key_id=key.key_id, destruction_id=d.destruction_id, not_before=d.not_before,
        reason=d.reason, forced=d.forced, dependent_releases=d.dependent_releases,
    )
    doc = _destruction_doc(d)
    try:
        await store.destructions.insert(request.tenant_id, staging.staged(doc, event))
    except DuplicateKeyError:
        # One destruction document per key: a cancelled one may be replaced, an open one may not.
        matched = await store.destructions.update_one(
            request.tenant_id, {"key_id": key.key_id, "status": "cancelled"},
            {"$set": doc, **staging.push(event)},
        )
        if not matched:
            raise rpc.ProblemError(409, "Conflict", "a destruction of this key is already scheduled or done", "key_id") from None
    await outbox.publish(store.destructions.raw, request.tenant_id, event)
    return {**_iso(doc), "dependencies": report}


async def _open_destruction(store: KeyStore, tenant_id: str, key_id: str) -> tuple[dict[str, Any], shredding.Destruction]:
    doc = await store.destructions.find_one(tenant_id, {"key_id": key_id})
    if doc is None:
        raise rpc.NotFound("destruction of this key", "key_id")
    return doc, _destruction_from(doc)


async def approve_destruction(
    request: rpc.RpcRequest, params: dict, *, store: KeyStore, outbox: Outbox
) -> dict:
    """Dual control: a custodian other than the scheduler approves (the person is the actor id)."""
    ApproveDestruction.model_validate(params.get("approve", {}))
    _, d = await _open_destruction(store, request.tenant_id, str(params.get("key_id", "")))
    try:
        approved = shredding.approve(d, actor=request.actor.id)
    except shredding.DualControlError as exc:
        raise rpc.ProblemError(403, "Forbidden", str(exc), "actor") from None
    except shredding.DestructionError as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc)) from None
    event = events.KeyDestructionApproved(**_fields(request), key_id=d.key_id, destruction_id=d.destruction_id)
    matched = await store.destructions.update_one(
        request.tenant_id, {"key_id": d.key_id, "destruction_id": d.destruction_id, "status": "scheduled",
                            "approvals": list(d.approvals)},
        {"$set": {"approvals": list(approved.approvals)}, **staging.push(event)},
    )
    if not matched:
        raise rpc.ProblemError(409, "Conflict", "the destruction changed concurrently; retry")
    await outbox.publish(store.destructions.raw, request.tenant_id, event)
    return _iso(_destruction_doc(approved))


async def cancel_destruction(request: rpc.RpcRequest, params: dict, *, store: KeyStore, outbox: Outbox) -> dict:
    cmd = CancelDestruction.model_validate(params.get("cancel", {}))
    _, d = await _open_destruction(store, request.tenant_id, str(params.get("key_id", "")))
    try:
        cancelled = shredding.cancel(d, actor=request.actor.id)
    except shredding.DestructionError as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc)) from None
    event = events.KeyDestructionCancelled(**_fields(request), key_id=d.key_id, destruction_id=d.destruction_id,
                                           reason=cmd.reason)
    matched = await store.destructions.update_one(
        request.tenant_id, {"key_id": d.key_id, "destruction_id": d.destruction_id, "status": "scheduled"},
        {"$set": {"status": "cancelled", "cancelled_by": request.actor.id}, **staging.push(event)},
    )
    if not matched:
        raise rpc.ProblemError(409, "Conflict", "the destruction already ran or changed; it can no longer be cancelled")
    await outbox.publish(store.destructions.raw, request.tenant_id, event)
    return _iso(_destruction_doc(cancelled))


async def get_destruction(request: rpc.RpcRequest, params: dict, *, store: KeyStore) -> dict:
    doc, d = await _open_destruction(store, request.tenant_id, str(params.get("key_id", "")))
    ready, why = shredding.due(d, now=_now())
    return {**_iso(doc), "ready": ready, "waiting_for": None if ready else why}


async def get_certificate(request: rpc.RpcRequest, params: dict, *, store: KeyStore, signer: Signer) -> dict:
    doc = await store.destructions.find_one(request.tenant_id, {"key_id": str(params.get("key_id", "")), "status": "destroyed"})
    if doc is None or "certificate" not in doc:
        raise rpc.NotFound("destruction certificate", "key_id")
    return {"certificate": doc["certificate"], "signature": doc["signature"], "signing_key_id": doc["certificate"]["signing_key_id"],
            "algorithm": "Ed25519", "canonicalization": "JSON, sorted keys, no whitespace"}


async def run_due_destructions(
    *, store: KeyStore, cache: KeyCache, hierarchy: KeyHierarchy, signer: Signer, outbox: Outbox, limit: int = 100
) -> int:
    """Scheduler job: shred every approved destruction whose waiting period is over (and resume any cut short)."""
    now = _now()
    docs = await store.destructions.raw.find(
        {"$or": [{"status": "scheduled", "not_before": {"$lte": now}}, {"status": "destroying"}]}, limit=limit
    ).to_list(None)
    done = 0
    for doc in docs:
        if doc["status"] == "scheduled":
            ready, _ = shredding.due(_destruction_from(doc), now=now)
            if not ready:
                continue
        if await _destroy(doc, store=store, cache=cache, hierarchy=hierarchy, signer=signer, outbox=outbox):
            done += 1
    return done


async def _destroy(doc: dict[str, Any], *, store: KeyStore, cache: KeyCache, hierarchy: KeyHierarchy,
                   signer: Signer, outbox: Outbox) -> bool:
    tenant_id, key_id = doc["tenant_id"], doc["key_id"]
    d = _destruction_from(doc)
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
        matched = await store.destructions.update_one(
            tenant_id, {"key_id": key_id, "destruction_id": d.destruction_id, "status": "scheduled"},
            {"$set": {"status": "destroying", "certificate": body, "signature": signature, "destroyed_at": destroyed_at}},
        )
        if not matched:
            return False  # cancelled meanwhile, or another instance claimed it
        doc = await store.destructions.find_one(tenant_id, {"key_id": key_id})
        assert doc is not None
    # 2. The lifecycle transition (its event says who approved), then the material is shredded.
    if key.state not in (domain.KeyState.DESTROYED, domain.KeyState.DESTROYED_COMPROMISED):
        actor = events.Actor(kind="service", id="keysvc")
        after, described = domain.transition(
            key, "destroy", actor="keysvc",
            reason=f"scheduled destruction {d.destruction_id} by {d.scheduled_by}, approved by {', '.join(d.approvals)}",
            now=_now(),
        )
        changed = events.KeyStateChanged(
            tenant_id=tenant_id, actor=actor, key_id=key_id, from_state=described["from"], to_state=described["to"],
            action="destroy", reason=described["reason"],
        )
        try:
            await _save(store, cache, key, after, changed, outbox)
        except rpc.ProblemError:
            return False  # changed concurrently; the next tick resumes from "destroying"
    await store.shred_key_material(tenant_id, key_id)
    cache.drop(tenant_id, key_id)
    # 3. The signed certificate goes into the audit chain through its event.
    event = events.KeyDestroyed(
        tenant_id=tenant_id, actor=events.Actor(kind="service", id="keysvc"), key_id=key_id,
        destruction_id=d.destruction_id, certificate=doc["certificate"], signature=doc["signature"],
        signing_key_id=doc["certificate"]["signing_key_id"],
    )
    matched = await store.destructions.update_one(
        tenant_id, {"key_id": key_id, "destruction_id": d.destruction_id, "status": "destroying"},
        {"$set": {"status": "destroyed"}, **staging.push(event)},
    )
    if matched:
        await outbox.publish(store.destructions.raw, tenant_id, event)
        log.info("key_destroyed", tenant_id=tenant_id, key_id=key_id, destruction_id=d.destruction_id)
    return bool(matched)


async def offboard_tenant(
    request: rpc.RpcRequest, params: dict, *, store: KeyStore, cache: KeyCache, hierarchy: KeyHierarchy, outbox: Outbox
) -> dict:
    """Offboarding: shred the tenant's KEKs (so every data key is unrecoverable at once), then the blobs.

    Called by the accounts area's tenant lifecycle with the tenant's id as the request tenant.
    """
    tenant_id = request.tenant_id
    if tenant_id in (SYSTEM_TENANT, "provider"):
        raise rpc.ProblemError(422, "Unprocessable Content", "not a tenant", "tenant_id")
    keks = await store.keks.find(tenant_id, {}, projection={"_id": 1, "kek_version": 1, "wrapped": 1})
    for doc in keks:
        noise = secrets.token_bytes(len(bytes(doc["wrapped"])))
        await store.keks.update_one(tenant_id, {"_id": doc["_id"]}, {"$set": {"wrapped": noise}, "$unset": {"wrapped_next": ""}})
        await store.keks.delete_one(tenant_id, {"_id": doc["_id"]})
    hierarchy.forget_tenant(tenant_id)
    cache.drop_tenant(tenant_id)
    blobs = await store.shred_key_material(tenant_id)
    now = _now()
    keys = await store.keys.raw.update_many(
        {"tenant_id": tenant_id, "state": {"$nin": ["destroyed", "destroyed_compromised"]}},
        {"$set": {"state": "destroyed", "destroyed_at": now, "updated_at": now, "next_rotation_at": None}},
    )
    await store.import_keys.raw.delete_many({"tenant_id": tenant_id})
    event = events.TenantKeysShredded(
        **_fields(request), keys=keys.modified_count, kek_versions=tuple(sorted(d["kek_version"] for d in keks)),
        wrapped_blobs_shredded=blobs,
    )
    # The tenant's KEK documents are gone; the event is staged on its settings document.
    await store.settings.update_one(tenant_id, {}, {"$set": {"offboarded_at": now}, **staging.push(event)}, upsert=True)
    await outbox.publish(store.settings.raw, tenant_id, event)
    return {"tenant_id": tenant_id, "keys_destroyed": keys.modified_count, "kek_versions_shredded": list(event.kek_versions),
            "wrapped_blobs_shredded": blobs}


# --- root of trust -------------------------------------------------------------------------------


async def custody_status(request: rpc.RpcRequest, params: dict, *, store: KeyStore, custody: Custody) -> dict:
    root = await store.custody.find_one(SYSTEM_TENANT, {"name": "root"})
    progress = await custody.unsealing.progress((root or {}).get("threshold")) if custody.unsealing else None
    return {
        "sealed": custody.hierarchy.sealed,
        "initialized": root is not None or not custody.hierarchy.sealed,
        "root_fingerprint": custody.hierarchy.root_fingerprint or (root or {}).get("fingerprint"),
        "threshold": (root or {}).get("threshold"),
        "custodians": (root or {}).get("shares"),
        "generation": (root or {}).get("generation"),
        "rekey": _rekey_view((root or {}).get("rekey")),
        "unseal_progress": progress or {"submitted": 0, "needed": (root or {}).get("threshold")},
    }


def _rekey_view(rekey: dict[str, Any] | None) -> dict[str, Any] | None:
    if rekey is None:
        return None
    view = {k: rekey.get(k) for k in ("status", "new_fingerprint", "previous_fingerprint", "threshold", "started_at",
                                      "expires_at", "switched_at")}
    return {**_iso(view), "verified_shares": len(rekey.get("verify_shares") or [])}


async def init_custody(request: rpc.RpcRequest, cmd: InitCustody, *, store: KeyStore, custody: Custody, outbox: Outbox) -> dict:
    """Create the root key once; return its SLIP-39 shares once; keep only a fingerprint.

    keysvc stays sealed afterwards: the custodians prove their shares by unsealing.
    """
    if not custody.hierarchy.sealed or await store.keks.raw.find_one({}) is not None:
        raise rpc.ProblemError(409, "Conflict", "custody already has a root key; use re-key to replace it")
    signing_key = custody.signer_key  # refuses before anything is created
    root = secrets.token_bytes(ROOT_KEY_BYTES)
    try:
        shares = split_root_key(root, threshold=cmd.threshold, shares=cmd.shares)
    except ShareError as exc:
        raise _unprocessable(exc, "threshold") from None
    fp = fingerprint(root)
    del root
    # SECURITY: the shares leave keysvc only sealed to the requester's key (the reply crosses the bus);
    # sealed before the root is recorded, so a key they cannot be sealed to changes nothing.
    delivery = _seal_new_shares(shares, cmd, transit.INIT, fp, signing_key)
    del shares
    event = events.CustodyInitialized(**_fields(request), root_fingerprint=fp, custodian_count=cmd.shares,
                                      threshold=cmd.threshold)
    doc = {"name": "root", "fingerprint": fp, "threshold": cmd.threshold, "shares": cmd.shares, "generation": 1,
           "created_at": _now(), "created_by": request.actor.id}
    try:
        await store.custody.insert(SYSTEM_TENANT, staging.staged(doc, event))
    except DuplicateKeyError:
        raise rpc.ProblemError(409, "Conflict", "custody already has a root key; use re-key to replace it") from None
    await outbox.publish(store.custody.raw, SYSTEM_TENANT, event)
    log.info("custody_initialized", root_fingerprint=fp, shares=cmd.shares, threshold=cmd.threshold)
    return {"root_fingerprint": fp, "threshold": cmd.threshold, **delivery,
            "note": "each share is shown once: give one to each custodian; none is stored"}


def _seal_new_shares(shares: list[str], cmd: InitCustody, purpose: str, fp: str, signing_key: Ed25519PrivateKey) -> dict:
    try:
        return transit.seal_delivery(shares, cmd.recipient_public_key, purpose=purpose, root_fingerprint=fp,
                                     signing_key=signing_key)
    except ValueError:  # e.g. a low-order X25519 point
        raise _unprocessable(ValueError("recipient_public_key is not a usable X25519 public key"),
                             "recipient_public_key") from None


async def transport_key(request: rpc.RpcRequest, cmd: TransportKeyRequest, *, store: KeyStore, custody: Custody) -> dict:
    """keysvc's signed share-transport key and the round a share must be sealed for (an unseal round
    is opened if none is; for re-key verification the round is the pending re-key's new fingerprint)."""
    root_doc = await store.custody.find_one(SYSTEM_TENANT, {"name": "root"})
    if cmd.purpose == transit.UNSEAL:
        if not custody.hierarchy.sealed:
            raise rpc.ProblemError(409, "Conflict", "key custody is already unsealed")
        if root_doc is None:
            raise rpc.ProblemError(409, "Conflict", "custody has no root key yet; initialise it first")
        assert custody.unsealing is not None
        round_doc = await custody.unsealing.open_round(root_doc)
        round_id, expires_at = round_doc["round_id"], round_doc["expires_at"].isoformat()
    else:
        rekey = (root_doc or {}).get("rekey")
        if rekey is None or rekey["status"] != "copying":
            raise rpc.ProblemError(409, "Conflict", "no root re-key is waiting for verification")
        round_id, expires_at = rekey["new_fingerprint"], rekey["expires_at"].isoformat()
    return {"purpose": cmd.purpose, "round_id": round_id, "expires_at": expires_at,
            **transit.published_transport_key(custody.signer_key)}


def _open_share(custody: Custody, body: SealedShare, purpose: str) -> str:
    try:
        return transit.open_share(body.sealed_share, custody.signer_key, transit.inbound_info(purpose, body.round_id))
    except transit.ShareTransportError as exc:
        raise _unprocessable(exc, "sealed_share") from None


async def submit_unseal_share(
    request: rpc.RpcRequest, body: SealedShare, *, store: KeyStore, custody: Custody, bus_publish: Any
) -> dict:
    """One custodian's sealed share, whichever instance takes it; every instance unseals at the threshold."""
    if not custody.hierarchy.sealed:
        raise rpc.ProblemError(409, "Conflict", "key custody is already unsealed")
    root_doc = await store.custody.find_one(SYSTEM_TENANT, {"name": "root"})
    if root_doc is None:
        raise rpc.ProblemError(409, "Conflict", "custody has no root key yet; initialise it first")
    assert custody.unsealing is not None
    round_doc = await custody.unsealing.current_round(root_doc)
    if round_doc is None or round_doc["round_id"] != body.round_id:
        raise rpc.ProblemError(409, "Conflict", str(RoundChanged(body.round_id)), "round_id")
    share = _open_share(custody, body, transit.UNSEAL)
    try:
        out = await custody.unsealing.submit(share, root_doc, rekeying.unseal_fingerprints(root_doc),
                                             by=request.actor.id, round_id=body.round_id,
                                             sealed_digest=transit.sealed_digest(body.sealed_share))
    except ShareError as exc:
        # The message names the problem, never the share's words.
        raise _unprocessable(exc, "sealed_share") from None
    except RoundChanged as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc), "round_id") from None
    except ShareReplayed as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc), "sealed_share") from None
    finally:
        del share
    unsealed = not custody.hierarchy.sealed
    submitted = root_doc["threshold"] if unsealed else out["submitted"]
    # Tells the other instances to open their copies of the new share (the event carries counts only).
    await bus_publish(events.CustodyUnsealProgress(
        **_fields(request), submitted=submitted, needed=root_doc["threshold"], unsealed=unsealed,
    ))
    return {"sealed": not unsealed, "submitted": submitted, "needed": root_doc["threshold"]}


async def catch_up_unseal(event: events.Event, *, store: KeyStore, custody: Custody) -> None:
    """Another instance took a share: open our copy of it (or hand the root on, once unsealed)."""
    if isinstance(event, events.CustodyUnsealProgress) and custody.unsealing is not None:
        root_doc = await store.custody.find_one(SYSTEM_TENANT, {"name": "root"})
        if root_doc is not None:
            await custody.unsealing.catch_up(root_doc, rekeying.unseal_fingerprints(root_doc))


async def rekey_root(
    request: rpc.RpcRequest, cmd: RekeyRoot, *, store: KeyStore, custody: Custody, ttl: timedelta
) -> dict:
    """Start replacing the root key: new shares now, the switch once a threshold of them is verified
    (see rekey.py). The current shares stay in force until then; releases never stop."""
    hierarchy = custody.hierarchy
    if hierarchy.sealed:
        raise rpc.ProblemError(503, "Service Unavailable", "key custody is sealed")
    signing_key = custody.signer_key
    await hierarchy.refresh_roots()
    new_root = secrets.token_bytes(ROOT_KEY_BYTES)
    try:
        shares = split_root_key(new_root, threshold=cmd.threshold, shares=cmd.shares)
    except ShareError as exc:
        raise _unprocessable(exc, "threshold") from None
    # SECURITY: as for init, the new shares leave keysvc only sealed to the requester's key.
    new_fp = fingerprint(new_root)
    delivery = _seal_new_shares(shares, cmd, transit.REKEY, new_fp, signing_key)
    share_set = share_set_id(shares[0])
    del shares
    try:
        new_fp = await rekeying.begin(store, hierarchy, new_root, threshold=cmd.threshold, shares=cmd.shares,
                                      share_set=share_set, request_id=request.correlation_id, actor=request.actor.id, now=_now(), ttl=ttl)
    except rekeying.RekeyConflict as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc)) from None
    finally:
        del new_root
    log.info("custody_rekey_started", root_fingerprint=hierarchy.root_fingerprint, new_fingerprint=new_fp)
    return {"new_fingerprint": new_fp, "root_fingerprint": hierarchy.root_fingerprint, "threshold": cmd.threshold,
            **delivery, "expires_at": (_now() + ttl).isoformat(),
            "note": "each share is shown once; the current shares stay in force until a threshold of these is "
                    "submitted to /v1/custody/rekey/verify"}


async def verify_rekey(request: rpc.RpcRequest, body: SealedShare, *, store: KeyStore, custody: Custody,
                       outbox: Outbox, batch: int = 500) -> dict:
    """One custodian proves a new sealed share; the threshold-th switches custody to the new root."""
    if custody.hierarchy.sealed:
        raise rpc.ProblemError(503, "Service Unavailable", "key custody is sealed")
    rekey = ((await rekeying.root_record(store)) or {}).get("rekey")
    if rekey is None or rekey["status"] != "copying":
        raise rpc.ProblemError(409, "Conflict", "no root re-key is waiting for verification")
    if body.round_id != rekey["new_fingerprint"]:
        raise rpc.ProblemError(409, "Conflict", f"round_id {body.round_id} is not the pending re-key "
                               f"({rekey['new_fingerprint']}); seal the share again", "round_id")
    share = _open_share(custody, body, transit.REKEY_VERIFY)
    try:
        return await rekeying.verify_share(store, custody.hierarchy, outbox, share, batch=batch,
                                           event_fields=_fields(request))
    except ShareError as exc:
        raise _unprocessable(exc, "sealed_share") from None  # names the problem, never the share's words
    except rekeying.RekeyConflict as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc)) from None


async def cancel_rekey(request: rpc.RpcRequest, params: dict, *, store: KeyStore, custody: Custody, outbox: Outbox) -> dict:
    """Abandon a pending re-key before its switch; the current shares stay in force."""
    doc = await rekeying.root_record(store)
    rekey = (doc or {}).get("rekey")
    if rekey is None or rekey["status"] == "switched":
        raise rpc.ProblemError(409, "Conflict", "no root re-key is pending, or it is already switched")
    try:
        await rekeying.roll_back(store, custody.hierarchy, outbox, rekey, reason=f"cancelled by {request.actor.id}",
                                 actor=request.actor)
    except rekeying.RekeyConflict as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc)) from None
    return {"cancelled": rekey["new_fingerprint"], "root_fingerprint": rekey["previous_fingerprint"]}


# --- tenant KEK rotation ------------------------------------------------------------------------


def _kek_id(tenant_id: str, version: int) -> str:
    return f"{tenant_id}/kek/{version}"


async def rotate_kek(request: rpc.RpcRequest, params: dict, *, store: KeyStore, hierarchy: KeyHierarchy, outbox: Outbox) -> dict:
    """Start rotating the tenant's KEK: new version now, data keys re-wrapped in the background."""
    tenant_id = request.tenant_id
    running = await store.kek_rotations.find_one(tenant_id, {"status": "running"})
    if running is not None:
        raise rpc.ProblemError(409, "Conflict", f"a KEK rotation to version {running['to_version']} is still running")
    try:
        current, _ = await hierarchy.current_kek(tenant_id)
        if not await hierarchy.create_kek(tenant_id, current + 1):
            raise rpc.ProblemError(409, "Conflict", "the KEK changed concurrently; retry")
    except Sealed:
        raise rpc.ProblemError(503, "Service Unavailable", "key custody is sealed") from None
    to_version = current + 1
    total = await store.versions.count(tenant_id, {"kek_version": {"$lt": to_version}, "wrapped": {"$ne": None}})
    event = events.KekRotationStarted(**_fields(request), kek_id=_kek_id(tenant_id, to_version), kek_version=to_version,
                                      from_version=current, total=total)
    doc = {"rotation_id": events.new_id("kro_"), "from_version": current, "to_version": to_version, "status": "running",
           "cursor": None, "rewrapped": 0, "total": total, "started_at": _now(), "started_by": request.actor.id}
    await store.kek_rotations.insert(tenant_id, staging.staged(doc, event))
    await outbox.publish(store.kek_rotations.raw, tenant_id, event)
    return _iso(doc)


async def kek_status(request: rpc.RpcRequest, params: dict, *, store: KeyStore) -> dict:
    current = await store.current_kek(request.tenant_id)
    rotations = await store.kek_rotations.find(request.tenant_id, {}, sort=[("to_version", -1)], limit=1)
    latest = _iso(rotations[0]) if rotations else None
    if latest is not None:
        latest.pop("cursor", None)
    return {"kek_version": current["kek_version"] if current else None, "rotation": latest}


async def rewrap_step(
    *, store: KeyStore, hierarchy: KeyHierarchy, cache: KeyCache, outbox: Outbox, batch: int
) -> int:
    """Scheduler job: re-wrap one batch of every running KEK rotation; finish those with nothing left.

    The cursor (the last re-wrapped version document's _id) is saved after each batch, so a
    crash repeats at most one batch; each re-wrap is a compare-and-swap on the old blob.
    """
    done = 0
    for rot in await store.kek_rotations.raw.find({"status": "running"}).to_list(None):
        tenant_id, to_version = rot["tenant_id"], rot["to_version"]
        # The walk reads by the (tenant_id, _id) index alone and skips done or destroyed versions
        # here: a filter on more fields would make the embedded store scan the collection.
        query: dict[str, Any] = {"_id": {"$gt": rot["cursor"]}} if rot.get("cursor") is not None else {}
        page = await store.versions.find(tenant_id, query, sort=[("_id", 1)], limit=batch,
                                         projection={"_id": 1, "key_id": 1, "version": 1, "wrapped": 1, "kek_version": 1})
        docs = [d for d in page if d["kek_version"] < to_version and d.get("wrapped") is not None]
        heads = {h["key_id"]: h for h in await store.keys.find(
            tenant_id, {"key_id": {"$in": sorted({d["key_id"] for d in docs})}},
            projection={"_id": 1, "key_id": 1, "latest_material.version": 1, "latest_material.wrapped": 1})} if docs else {}
        versions, copies = [], []
        for d in docs:
            blob = await hierarchy.rewrap_data_key(tenant_id, d["key_id"], d["version"], bytes(d["wrapped"]),
                                                   d["kek_version"], to_version)
            # Each update is a compare-and-swap on the old blob, _id first so it is one indexed write.
            versions.append(({"_id": d["_id"], "kek_version": d["kek_version"], "wrapped": d["wrapped"]},
                             {"$set": {"wrapped": blob, "kek_version": to_version}}))
            head = heads.get(d["key_id"], {})
            latest = head.get("latest_material") or {}
            if latest.get("version") == d["version"] and latest.get("wrapped") == d["wrapped"]:
                copies.append(({"_id": head["_id"], "latest_material.wrapped": d["wrapped"]},  # the head's copy
                               {"$set": {"latest_material.wrapped": blob, "latest_material.kek_version": to_version}}))
        # One round trip per collection for the whole batch.
        await asyncio.gather(store.bulk_swap(store.versions, tenant_id, versions), store.bulk_swap(store.keys, tenant_id, copies))
        done += len(page)
        if page:
            await store.kek_rotations.update_one(
                tenant_id, {"rotation_id": rot["rotation_id"]},
                {"$set": {"cursor": page[-1]["_id"], "updated_at": _now()}, "$inc": {"rewrapped": len(docs)}},
            )
            continue
        left = await store.versions.count(tenant_id, {"kek_version": {"$lt": to_version}, "wrapped": {"$ne": None}})
        if left:  # written behind the cursor meanwhile (a create that raced the rotation): sweep again
            await store.kek_rotations.update_one(tenant_id, {"rotation_id": rot["rotation_id"]}, {"$set": {"cursor": None}})
            continue
        await _finish_kek_rotation(rot, store=store, hierarchy=hierarchy, cache=cache, outbox=outbox)
    return done


async def _finish_kek_rotation(rot: dict[str, Any], *, store: KeyStore, hierarchy: KeyHierarchy, cache: KeyCache,
                               outbox: Outbox) -> None:
    tenant_id, to_version = rot["tenant_id"], rot["to_version"]
    cache.drop_tenant(tenant_id)
    # The running count can fall short by a batch that a crash re-wrapped before its count was
    # saved (the repeat finds nothing left to do there), so the final figure is read off the store.
    rot = {**rot, "rewrapped": max(rot.get("rewrapped", 0), await store.versions.count(
        tenant_id, {"kek_version": to_version, "wrapped": {"$ne": None}}))}
    old = await store.keks.find(tenant_id, {"kek_version": {"$lt": to_version}}, projection={"_id": 1, "kek_version": 1, "wrapped": 1})
    # Retiring the old KEK versions shreds any copy of blobs wrapped under them (backups included).
    for doc in old:
        await store.keks.update_one(tenant_id, {"_id": doc["_id"]}, {"$set": {"wrapped": secrets.token_bytes(len(bytes(doc["wrapped"])))}})
        await store.keks.delete_one(tenant_id, {"_id": doc["_id"]})
    hierarchy.forget_tenant(tenant_id, below=to_version)
    event = events.KekRotated(tenant_id=tenant_id, kek_id=_kek_id(tenant_id, to_version), kek_version=to_version,
                              rewrapped=rot["rewrapped"], retired_versions=tuple(sorted(d["kek_version"] for d in old)))
    matched = await store.kek_rotations.update_one(
        tenant_id, {"rotation_id": rot["rotation_id"], "status": "running"},
        {"$set": {"status": "done", "finished_at": _now(), "cursor": None, "rewrapped": rot["rewrapped"]},
         **staging.push(event)},
    )
    if matched:
        await outbox.publish(store.kek_rotations.raw, tenant_id, event)
        log.info("kek_rotated", tenant_id=tenant_id, kek_version=to_version, rewrapped=rot["rewrapped"])


async def forget_rotated_kek(event: events.Event, *, cache: KeyCache, hierarchy: KeyHierarchy) -> None:
    """Another instance finished a KEK rotation or offboarded a tenant: drop our copies."""
    if isinstance(event, events.KekRotated):
        cache.drop_tenant(event.tenant_id)
        hierarchy.forget_tenant(event.tenant_id, below=event.kek_version)
    elif isinstance(event, events.TenantKeysShredded):
        cache.drop_tenant(event.tenant_id)
        hierarchy.forget_tenant(event.tenant_id)
    elif isinstance(event, events.KeyDestroyed):
        cache.drop(event.tenant_id, event.key_id)


# --- bring your own key, export -------------------------------------------------------------


def _import_aad(tenant_id: str, token: str) -> bytes:
    return aad_for("import-key", tenant_id, token)


async def import_params(request: rpc.RpcRequest, params: dict, *, store: KeyStore, hierarchy: KeyHierarchy) -> dict:
    """A fresh single-use import key (RSA-OAEP-3072 or X25519 for HPKE), its token and the key id it
    will create, valid for 24 hours."""
    try:
        query = ImportParamsQuery.model_validate({k: v for k, v in params.items() if k == "wrapping_algorithm"})
    except ValidationError:
        raise _unprocessable(ValueError(f"wrapping_algorithm must be one of {', '.join(byok.WRAPPING_ALGORITHMS)}"),
                             "wrapping_algorithm") from None
    tenant_id = request.tenant_id
    try:
        _, kek = await hierarchy.current_kek(tenant_id)
    except Sealed:
        raise rpc.ProblemError(503, "Service Unavailable", "key custody is sealed") from None
    private = byok.new_import_key(query.wrapping_algorithm)
    public = byok.public_params(query.wrapping_algorithm, private)
    token, key_id = events.new_id("imp_"), events.new_id("key_")
    expires_at = _now() + IMPORT_TTL
    # The import private key is stored only wrapped under the tenant KEK.
    await store.import_keys.insert(tenant_id, {
        "import_token": token, "key_id": key_id, "wrapping_algorithm": query.wrapping_algorithm,
        "expires_at": expires_at, "wrapped": wrap(kek, private, aad=_import_aad(tenant_id, token)),
    })
    del private
    out = {"import_token": token, "tenant_id": tenant_id, "key_id": key_id, **public, "expires_at": expires_at.isoformat()}
    if query.wrapping_algorithm == byok.X25519_HPKE:
        out["hpke_info"] = base64.b64encode(byok.import_info(tenant_id=tenant_id, key_id=key_id, import_token=token)).decode()
    return out


async def import_key(
    request: rpc.RpcRequest, cmd: ImportKey, *, store: KeyStore, hierarchy: KeyHierarchy, cache: KeyCache, outbox: Outbox
) -> dict:
    """Bring your own key: open with the single-use import key, wrap under the tenant KEK."""
    tenant_id = request.tenant_id
    policy = await tenant_settings(store, tenant_id)
    try:
        bits = domain.check_algorithm(cmd.algorithm, min_bits=policy.min_key_bits)
    except domain.KeyPolicyError as exc:
        raise _unprocessable(exc, "algorithm") from None
    doc = await store.import_keys.find_one(tenant_id, {"import_token": cmd.import_token})
    if doc is None or doc["expires_at"] <= _now():
        raise rpc.ProblemError(422, "Unprocessable Content", "unknown, used or expired import_token", "import_token")
    try:
        await hierarchy.current_kek(tenant_id)
    except Sealed:
        raise rpc.ProblemError(503, "Service Unavailable", "key custody is sealed") from None
    # Look up the KEK that wrapped the import key: it may be an older version after a KEK rotation.
    private = None
    for candidate in await _tenant_keks(store, hierarchy, tenant_id):
        try:
            private = unwrap(candidate, bytes(doc["wrapped"]), aad=_import_aad(tenant_id, cmd.import_token))
            break
        except UnwrapError:
            continue  # wrapped under another KEK version
    if private is None:
        raise rpc.ProblemError(422, "Unprocessable Content", "the import key is no longer available; request new parameters", "import_token")
    algorithm = doc.get("wrapping_algorithm", byok.RSA_OAEP)
    key_id = doc.get("key_id") or events.new_id("key_")
    info = byok.import_info(tenant_id=tenant_id, key_id=key_id, import_token=cmd.import_token)
    try:
        material = byok.open_material(algorithm, private, base64.b64decode(cmd.wrapped_key_material), info=info)
    except byok.ImportWrapError as exc:
        raise _unprocessable(exc, "wrapped_key_material") from None
    finally:
        del private
    if len(material) * 8 != bits:
        raise _unprocessable(ValueError(f"{cmd.algorithm} needs {bits // 8} bytes of key material; got {len(material)}"),
                             "wrapped_key_material")
    # Single use: the import key is consumed whatever happens next.
    if not await store.import_keys.delete_one(tenant_id, {"import_token": cmd.import_token}):
        raise rpc.ProblemError(422, "Unprocessable Content", "unknown, used or expired import_token", "import_token")
    wrapped, kek_version = await hierarchy.wrap_data_key(tenant_id, key_id, 1, material)
    del material
    key = domain.new_key(
        tenant_id=tenant_id, key_id=key_id, name=cmd.name, algorithm=cmd.algorithm, wrapped=wrapped,
        kek_version=kek_version, now=_now(), volume=cmd.volume, exportable=cmd.exportable,
        initial_state=domain.KeyState.ACTIVE if cmd.activate else domain.KeyState.PRE_ACTIVATION,
    )
    event = events.KeyImported(**_fields(request), key_id=key_id, name=cmd.name, algorithm=key.algorithm,
                               wrapping_algorithm=algorithm)
    try:
        await store.insert_key(key, event)
    except DuplicateKeyError:
        raise rpc.ProblemError(409, "Conflict", f"a key named {cmd.name!r} exists", "name") from None
    cache.put(key)
    await outbox.publish(store.keys.raw, tenant_id, event)
    return public_view(key)


async def _tenant_keks(store: KeyStore, hierarchy: KeyHierarchy, tenant_id: str) -> list[Any]:
    docs = await store.keks.find(tenant_id, {}, projection={"kek_version": 1}, sort=[("kek_version", -1)])
    return [await hierarchy.kek(tenant_id, d["kek_version"]) for d in docs]


async def export_key(
    request: rpc.RpcRequest, params: dict, *, store: KeyStore, hierarchy: KeyHierarchy, cache: KeyCache,
    bus_publish: Any,
) -> dict:
    """Export a key version wrapped to the caller's RSA public key; only for keys created exportable."""
    cmd = ExportKey.model_validate(params.get("export", {}))
    key = await _existing(cache, request.tenant_id, str(params.get("key_id", "")))
    ok, why = domain.exportable_now(key, await tenant_settings(store, request.tenant_id))
    if not ok:
        raise rpc.ProblemError(409, "Conflict", why, "key_id")
    der = base64.b64decode(cmd.public_key)
    try:
        recipient = serialization.load_der_public_key(der)
    except ValueError:
        raise _unprocessable(ValueError("public_key is not a DER SubjectPublicKeyInfo"), "public_key") from None
    if not isinstance(recipient, rsa.RSAPublicKey) or not 2048 <= recipient.key_size <= 4096:
        raise _unprocessable(ValueError("public_key must be an RSA key of 2048 to 4096 bits"), "public_key")
    try:
        version = domain.version_for_decrypt(key, cmd.key_version or key.latest_version)
    except domain.VersionError as exc:
        raise _unprocessable(exc, "key_version") from None
    assert version.wrapped is not None
    data_key = await hierarchy.open_data_key(request.tenant_id, key.key_id, version.version, version.wrapped, version.kek_version)
    wrapped = recipient.encrypt(data_key, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    del data_key
    await bus_publish(events.KeyExported(
        **_fields(request), key_id=key.key_id, key_version=version.version, wrapping_algorithm=EXPORT_ALGORITHM,
        recipient_fingerprint=hashlib.sha256(der).hexdigest(),
    ))
    return {"key_id": key.key_id, "key_version": version.version, "algorithm": key.algorithm,
            "wrapping_algorithm": EXPORT_ALGORITHM, "wrapped_key_material": base64.b64encode(wrapped).decode()}


async def signing_key(request: rpc.RpcRequest, params: dict, *, signer: Signer) -> dict:
    return {"algorithm": "Ed25519", "key_id": signer.key_id, "public_key": signer.public_key_b64,
            "public_key_format": "raw 32 bytes, base64", "use": "destruction certificates"}
