"""keysvc's root of trust: status, init (the root's shares handed out once, sealed), the share
transport key, unsealing (with every other instance), and the root re-key (start, verify, cancel)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared import commands, events, rpc
from shared.commands_custody import (
    CustodyInitialized,
    CustodyStatus,
    InitCustody,
    RekeyCancelled,
    RekeyRoot,
    RekeyStarted,
    RekeyVerified,
    RekeyView,
    SealedShare,
    TransportKey,
    TransportKeyRequest,
    UnsealProgress,
    UnsealResult,
)
from shared.crypto import shares as transit
from shared.outbox import Outbox

from . import rekey as rekeying
from .clock import now as _now
from .handlers_common import event_fields, iso, sealed, unprocessable
from .hierarchy import KeyHierarchy
from .rootkey import ROOT_KEY_BYTES, ShareError, fingerprint, share_set_id, split_root_key
from .store import SYSTEM_TENANT, KeyStore
from .unseal import RoundChanged, ShareReplayed, Unsealing

log = structlog.get_logger("strongroom.keysvc")
ALREADY_ROOTED = "custody already has a root key; use re-key to replace it"


@dataclass
class Custody:
    """The root-of-trust state of this keysvc instance: its hierarchy and its part in unsealing."""

    hierarchy: KeyHierarchy
    unsealing: Unsealing | None = None
    # keysvc's signing key: signs the share-transport key and the sealed new shares it hands out.
    signing_key: Ed25519PrivateKey | None = None

    @property
    def signer_key(self) -> Ed25519PrivateKey:
        if self.signing_key is None:
            raise rpc.ProblemError(503, "Service Unavailable", "keysvc has no signing key for share transport")
        return self.signing_key


def _conflict(detail: str, field_name: str | None = None) -> rpc.ProblemError:
    return rpc.ProblemError(409, "Conflict", detail, field_name)


async def custody_status(request: rpc.RpcRequest, params: commands.NoParams, *, store: KeyStore,
                         custody: Custody) -> CustodyStatus:
    """Sealed or not, the root's fingerprint and share layout, a pending re-key, unseal progress."""
    root = await store.root_record() or {}
    progress = await custody.unsealing.progress(root.get("threshold")) if custody.unsealing else None
    return CustodyStatus(
        sealed=custody.hierarchy.sealed,
        initialized=bool(root) or not custody.hierarchy.sealed,
        root_fingerprint=custody.hierarchy.root_fingerprint or root.get("fingerprint"),
        threshold=root.get("threshold"),
        custodians=root.get("shares"),
        generation=root.get("generation"),
        rekey=_rekey_view(root.get("rekey")),
        unseal_progress=UnsealProgress.model_validate(progress or {"submitted": 0, "needed": root.get("threshold")}),
    )


def _rekey_view(rekey: dict[str, Any] | None) -> RekeyView | None:
    if rekey is None:
        return None
    view = {k: rekey.get(k) for k in ("status", "new_fingerprint", "previous_fingerprint", "threshold", "started_at",
                                      "expires_at", "switched_at")}
    return RekeyView.model_validate({**iso(view), "verified_shares": len(rekey.get("verify_shares") or [])})


def _seal_new_shares(shares: list[str], cmd: InitCustody, purpose: str, fp: str,
                     signing_key: Ed25519PrivateKey) -> dict[str, Any]:
    try:
        return transit.seal_delivery(shares, cmd.recipient_public_key, purpose=purpose, root_fingerprint=fp,
                                     signing_key=signing_key)
    except ValueError:  # e.g. a low-order X25519 point
        raise unprocessable("recipient_public_key is not a usable X25519 public key", "recipient_public_key") from None


async def init_custody(request: rpc.RpcRequest, cmd: InitCustody, *, store: KeyStore, custody: Custody,
                       outbox: Outbox) -> CustodyInitialized:
    """Create the root key once; return its SLIP-39 shares once; keep only a fingerprint.

    keysvc stays sealed afterwards: the custodians prove their shares by unsealing.
    """
    if not custody.hierarchy.sealed or await store.any_kek():
        raise _conflict(ALREADY_ROOTED)
    signing_key = custody.signer_key  # refuses before anything is created
    root = secrets.token_bytes(ROOT_KEY_BYTES)
    try:
        shares = split_root_key(root, threshold=cmd.threshold, shares=cmd.shares)
    except ShareError as exc:
        raise unprocessable(exc, "threshold") from None
    fp = fingerprint(root)
    del root
    # SECURITY: the shares leave keysvc only sealed to the requester's key (the reply crosses the bus);
    # sealed before the root is recorded, so a key they cannot be sealed to changes nothing.
    delivery = _seal_new_shares(shares, cmd, transit.INIT, fp, signing_key)
    del shares
    event = events.CustodyInitialized(**event_fields(request), root_fingerprint=fp, custodian_count=cmd.shares,
                                      threshold=cmd.threshold)
    doc = {"fingerprint": fp, "threshold": cmd.threshold, "shares": cmd.shares, "generation": 1,
           "created_at": _now(), "created_by": request.actor.id}
    if not await store.insert_root_record(doc, event):
        raise _conflict(ALREADY_ROOTED)
    await outbox.publish(store.outbox_of("custody"), SYSTEM_TENANT, event)
    log.info("custody_initialized", root_fingerprint=fp, shares=cmd.shares, threshold=cmd.threshold)
    return CustodyInitialized(root_fingerprint=fp, threshold=cmd.threshold, **delivery,
                              note="each share is shown once: give one to each custodian; none is stored")


async def transport_key(request: rpc.RpcRequest, cmd: TransportKeyRequest, *, store: KeyStore,
                        custody: Custody) -> TransportKey:
    """keysvc's signed share-transport key and the round a share must be sealed for (an unseal round
    is opened if none is; for re-key verification the round is the pending re-key's new fingerprint)."""
    root_doc = await store.root_record()
    if cmd.purpose == transit.UNSEAL:
        if not custody.hierarchy.sealed:
            raise _conflict("key custody is already unsealed")
        if root_doc is None:
            raise _conflict("custody has no root key yet; initialise it first")
        assert custody.unsealing is not None
        round_doc = await custody.unsealing.open_round(root_doc)
        round_id, expires_at = round_doc["round_id"], round_doc["expires_at"].isoformat()
    else:
        rekey = (root_doc or {}).get("rekey")
        if rekey is None or rekey["status"] != "copying":
            raise _conflict("no root re-key is waiting for verification")
        round_id, expires_at = rekey["new_fingerprint"], rekey["expires_at"].isoformat()
    return TransportKey(purpose=cmd.purpose, round_id=round_id, expires_at=expires_at,
                        **transit.published_transport_key(custody.signer_key))


def _open_share(custody: Custody, body: SealedShare, purpose: str) -> str:
    try:
        return transit.open_share(body.sealed_share, custody.signer_key, transit.inbound_info(purpose, body.round_id))
    except transit.ShareTransportError as exc:
        raise unprocessable(exc, "sealed_share") from None


async def submit_unseal_share(
    request: rpc.RpcRequest, body: SealedShare, *, store: KeyStore, custody: Custody, bus_publish: Any
) -> UnsealResult:
    """One custodian's sealed share, whichever instance takes it; every instance unseals at the threshold."""
    if not custody.hierarchy.sealed:
        raise _conflict("key custody is already unsealed")
    root_doc = await store.root_record()
    if root_doc is None:
        raise _conflict("custody has no root key yet; initialise it first")
    assert custody.unsealing is not None
    round_doc = await custody.unsealing.current_round(root_doc)
    if round_doc is None or round_doc["round_id"] != body.round_id:
        raise _conflict(str(RoundChanged(body.round_id)), "round_id")
    share = _open_share(custody, body, transit.UNSEAL)
    try:
        out = await custody.unsealing.submit(share, root_doc, rekeying.unseal_fingerprints(root_doc),
                                             by=request.actor.id, round_id=body.round_id,
                                             sealed_digest=transit.sealed_digest(body.sealed_share))
    except ShareError as exc:
        # The message names the problem, never the share's words.
        raise unprocessable(exc, "sealed_share") from None
    except RoundChanged as exc:
        raise _conflict(str(exc), "round_id") from None
    except ShareReplayed as exc:
        raise _conflict(str(exc), "sealed_share") from None
    finally:
        del share
    unsealed = not custody.hierarchy.sealed
    submitted = root_doc["threshold"] if unsealed else out["submitted"]
    # Tells the other instances to open their copies of the new share (the event carries counts only).
    await bus_publish(events.CustodyUnsealProgress(
        **event_fields(request), submitted=submitted, needed=root_doc["threshold"], unsealed=unsealed,
    ))
    return UnsealResult(sealed=not unsealed, submitted=submitted, needed=root_doc["threshold"])


async def catch_up_unseal(event: events.Event, *, store: KeyStore, custody: Custody) -> None:
    """Another instance took a share: open our copy of it (or hand the root on, once unsealed)."""
    if isinstance(event, events.CustodyUnsealProgress) and custody.unsealing is not None:
        root_doc = await store.root_record()
        if root_doc is not None:
            await custody.unsealing.catch_up(root_doc, rekeying.unseal_fingerprints(root_doc))


async def rekey_root(
    request: rpc.RpcRequest, cmd: RekeyRoot, *, store: KeyStore, custody: Custody, ttl: timedelta
) -> RekeyStarted:
    """Start replacing the root key: new shares now, the switch once a threshold of them is verified
    (see rekey.py). The current shares stay in force until then; releases never stop."""
    hierarchy = custody.hierarchy
    if hierarchy.sealed:
        raise sealed()
    signing_key = custody.signer_key
    await hierarchy.refresh_roots()
    new_root = secrets.token_bytes(ROOT_KEY_BYTES)
    try:
        shares = split_root_key(new_root, threshold=cmd.threshold, shares=cmd.shares)
    except ShareError as exc:
        raise unprocessable(exc, "threshold") from None
    # SECURITY: as for init, the new shares leave keysvc only sealed to the requester's key.
    new_fp = fingerprint(new_root)
    delivery = _seal_new_shares(shares, cmd, transit.REKEY, new_fp, signing_key)
    share_set = share_set_id(shares[0])
    del shares
    try:
        new_fp = await rekeying.begin(store, hierarchy, new_root, threshold=cmd.threshold, shares=cmd.shares,
                                      share_set=share_set, request_id=request.correlation_id, actor=request.actor.id,
                                      now=_now(), ttl=ttl)
    except rekeying.RekeyConflict as exc:
        raise _conflict(str(exc)) from None
    finally:
        del new_root
    log.info("custody_rekey_started", root_fingerprint=hierarchy.root_fingerprint, new_fingerprint=new_fp)
    return RekeyStarted(new_fingerprint=new_fp, root_fingerprint=hierarchy.root_fingerprint, threshold=cmd.threshold,
                        **delivery, expires_at=(_now() + ttl).isoformat(),
                        note="each share is shown once; the current shares stay in force until a threshold of these "
                             "is submitted to /v1/custody/rekey/verify")


async def verify_rekey(request: rpc.RpcRequest, body: SealedShare, *, store: KeyStore, custody: Custody,
                       outbox: Outbox, batch: int = 500) -> RekeyVerified:
    """One custodian proves a new sealed share; the threshold-th switches custody to the new root."""
    if custody.hierarchy.sealed:
        raise sealed()
    rekey = (await store.root_record() or {}).get("rekey")
    if rekey is None or rekey["status"] != "copying":
        raise _conflict("no root re-key is waiting for verification")
    if body.round_id != rekey["new_fingerprint"]:
        raise _conflict(f"round_id {body.round_id} is not the pending re-key ({rekey['new_fingerprint']}); "
                        "seal the share again", "round_id")
    share = _open_share(custody, body, transit.REKEY_VERIFY)
    try:
        out = await rekeying.verify_share(store, custody.hierarchy, outbox, share, batch=batch,
                                          event_fields=event_fields(request))
    except ShareError as exc:
        raise unprocessable(exc, "sealed_share") from None  # names the problem, never the share's words
    except rekeying.RekeyConflict as exc:
        raise _conflict(str(exc)) from None
    return RekeyVerified.model_validate(out)


async def cancel_rekey(request: rpc.RpcRequest, params: commands.NoParams, *, store: KeyStore, custody: Custody,
                       outbox: Outbox) -> RekeyCancelled:
    """Abandon a pending re-key before its switch; the current shares stay in force."""
    rekey = (await store.root_record() or {}).get("rekey")
    if rekey is None or rekey["status"] == "switched":
        raise _conflict("no root re-key is pending, or it is already switched")
    try:
        await rekeying.roll_back(store, custody.hierarchy, outbox, rekey, reason=f"cancelled by {request.actor.id}",
                                 actor=request.actor)
    except rekeying.RekeyConflict as exc:
        raise _conflict(str(exc)) from None
    return RekeyCancelled(cancelled=rekey["new_fingerprint"], root_fingerprint=rekey["previous_fingerprint"])
