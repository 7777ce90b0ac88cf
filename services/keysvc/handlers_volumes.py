"""keysvc's half of volume recovery: a single-use escrow key per escrow, the passphrase opened and
wrapped under the tenant KEK at once, and its break-glass release, sealed to the requester's
one-time key, once policysvc says two other people approved.

The gateway only ever forwards ciphertext: the agent seals to the escrow key here, and the release
is sealed to a key only the requesting operator holds.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared import commands_volumes as cv
from shared import events, rpc
from shared.crypto import byok, escrow
from shared.crypto.envelope import UnwrapError, aad_for, unwrap, wrap
from shared.crypto.release import SUITE_NAME, ReleaseError
from shared.outbox import Outbox

from .clock import now as _now
from .handlers_common import event_fields, sealed, unprocessable
from .hierarchy import KeyHierarchy, Sealed
from .store import KeyStore

ESCROW_KEY_TTL = timedelta(minutes=10)
_SPENT = "unknown, used or expired escrow_token"
AskPolicy = Callable[[rpc.RpcRequest, str, dict[str, Any]], Awaitable[dict[str, Any]]]


def _key_aad(tenant_id: str, token: str, volume_id: str) -> bytes:
    return aad_for("volume-escrow-key", tenant_id, token, volume_id)


def _passphrase_aad(tenant_id: str, volume_id: str) -> bytes:
    return aad_for("volume-recovery-passphrase", tenant_id, volume_id)


async def _current_kek(hierarchy: KeyHierarchy, tenant_id: str) -> tuple[int, Any]:
    try:
        return await hierarchy.current_kek(tenant_id)
    except Sealed:
        raise sealed() from None


async def _unwrap_any(store: KeyStore, hierarchy: KeyHierarchy, tenant_id: str, blob: bytes, aad: bytes) -> bytes | None:
    """Open `blob` under whichever of the tenant's KEK versions wrapped it (an older one after a rotation)."""
    for version in await store.kek_versions(tenant_id):
        try:
            return unwrap(await hierarchy.kek(tenant_id, version), blob, aad=aad)
        except UnwrapError:
            continue
    return None


async def escrow_key(request: rpc.RpcRequest, call: cv.EscrowKeyCall, *, store: KeyStore,
                     hierarchy: KeyHierarchy) -> cv.EscrowKey:
    """A fresh single-use X25519 key for one escrow of this volume's passphrase, valid ten minutes."""
    tenant_id = request.tenant_id
    _, kek = await _current_kek(hierarchy, tenant_id)
    private = byok.new_import_key(byok.X25519_HPKE)
    token, expires_at = events.new_id("esc_"), _now() + ESCROW_KEY_TTL
    # SECURITY: the escrow private key is stored only wrapped under the tenant KEK.
    await store.insert_escrow_key(tenant_id, {
        "escrow_token": token, "volume_id": call.volume_id, "device_id": call.device_id, "used": False,
        "expires_at": expires_at, "wrapped": wrap(kek, private, aad=_key_aad(tenant_id, token, call.volume_id)),
    })
    public = escrow.public_key_b64(X25519PrivateKey.from_private_bytes(private))
    del private
    return cv.EscrowKey(volume_id=call.volume_id, escrow_token=token, public_key=public, hpke_suite=SUITE_NAME,
                        expires_at=expires_at)


async def escrow_passphrase(request: rpc.RpcRequest, call: cv.EscrowCall, *, store: KeyStore, hierarchy: KeyHierarchy,
                            outbox: Outbox) -> cv.Escrowed:
    """Open the sealed passphrase with the single-use key and keep it wrapped under the tenant KEK."""
    tenant_id, now = request.tenant_id, _now()
    doc = await store.escrow_key(tenant_id, call.escrow_token)
    if (doc is None or doc["expires_at"] <= now or doc["volume_id"] != call.volume_id
            or doc["device_id"] != call.device_id):
        raise unprocessable(_SPENT, "escrow_token")
    kek_version, kek = await _current_kek(hierarchy, tenant_id)
    private = await _unwrap_any(store, hierarchy, tenant_id, bytes(doc["wrapped"]),
                                _key_aad(tenant_id, call.escrow_token, call.volume_id))
    if private is None:
        raise unprocessable("the escrow key is no longer available; ask for a new one", "escrow_token")
    info = escrow.escrow_info(tenant_id=tenant_id, volume_id=call.volume_id, escrow_token=call.escrow_token)
    try:
        passphrase = escrow.open_b64(call.sealed_passphrase, X25519PrivateKey.from_private_bytes(private), info=info)
    except ReleaseError as exc:
        raise unprocessable(exc, "sealed_passphrase") from None
    finally:
        del private
    if not await store.consume_escrow_key(tenant_id, call.escrow_token, now):
        raise unprocessable(_SPENT, "escrow_token")
    wrapped = wrap(kek, passphrase, aad=_passphrase_aad(tenant_id, call.volume_id))
    del passphrase
    event = events.VolumeRecoveryEscrowed(**event_fields(request), volume_id=call.volume_id, device_id=call.device_id)
    replaced = await store.save_recovery(tenant_id, call.volume_id, {
        "device_id": call.device_id, "wrapped": wrapped, "kek_version": kek_version, "escrowed_at": now}, event)
    await outbox.publish(store.outbox_of("volume_recovery"), tenant_id, event)
    return cv.Escrowed(volume_id=call.volume_id, escrowed_at=now, replaced=replaced)


async def release_recovery(request: rpc.RpcRequest, call: cv.RecoveryReleaseCall, *, store: KeyStore,
                           hierarchy: KeyHierarchy, ask_policy: AskPolicy,
                           publish: Callable[[events.Event], Awaitable[None]]) -> cv.RecoveryRelease:
    """Break-glass: the passphrase sealed to the requester's one-time key, once, after the approval."""
    tenant_id = request.tenant_id
    approval = cv.RecoveryApproval.model_validate(await ask_policy(
        request, "recovery_approval", {"volume_id": call.volume_id, "request_id": call.request_id}))
    # SECURITY: only the person who asked (and whose one-time key it is) collects, only once approved.
    if approval.requested_by != request.actor.id:
        raise rpc.ProblemError(403, "Forbidden", "only the operator who asked may collect this recovery", "request_id")
    if approval.status != "approved":
        raise rpc.ProblemError(409, "Conflict", f"the recovery request is {approval.status}", "request_id")
    doc = await store.recovery(tenant_id, call.volume_id)
    if doc is None:
        raise rpc.NotFound("escrowed recovery passphrase", "volume_id")
    await _current_kek(hierarchy, tenant_id)
    passphrase = await _unwrap_any(store, hierarchy, tenant_id, bytes(doc["wrapped"]),
                                   _passphrase_aad(tenant_id, call.volume_id))
    if passphrase is None:
        raise rpc.ProblemError(409, "Conflict", "the escrowed passphrase is no longer readable", "volume_id")
    info = escrow.recovery_info(tenant_id=tenant_id, volume_id=call.volume_id, request_id=call.request_id)
    try:
        sealed_b64 = escrow.seal_b64(passphrase, approval.public_key, info=info)
    finally:
        del passphrase
    if not await store.claim_recovery_release(tenant_id, call.request_id, _now()):
        raise rpc.ProblemError(409, "Conflict", "this recovery was collected already; ask again", "request_id")
    fingerprint = hashlib.sha256(base64.b64decode(approval.public_key)).hexdigest()
    # Audit first: the sealed passphrase leaves only once its release is durably queued for audit.
    await publish(events.VolumeRecoveryReleased(
        **event_fields(request), volume_id=call.volume_id, request_id=call.request_id,
        approval_id=approval.approval_id, approvers=tuple(approval.approvers), recipient_fingerprint=fingerprint))
    return cv.RecoveryRelease(volume_id=call.volume_id, request_id=call.request_id, sealed_passphrase=sealed_b64,
                              hpke_suite=SUITE_NAME, approvers=approval.approvers)
