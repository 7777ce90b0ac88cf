"""keysvc's root of trust: status, init (share i sealed to root custodian i's enrolled key, fetched
once by that custodian), the per-round share transport key, unsealing (with every other instance),
and the root re-key (start, verify by distinct custodians, cancel)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared import commands, events, rpc
from shared.commands_custody import (
    CustodianShare,
    CustodyInitialized,
    CustodyStatus,
    InitCustodyCall,
    RekeyCancelled,
    RekeyRootCall,
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

from . import custodians as custodianship
from . import rekey as rekeying
from . import unseal_rounds
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
    # Development and tests only: allow a 1-of-1 root (one custodian holds the whole root).
    allow_single_custodian: bool = False

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


async def _seal_to_custodians(store: KeyStore, custody: Custody, cmd: InitCustodyCall, root: bytes, purpose: str,
                              fp: str) -> tuple[list[custodianship.Recipient], int]:
    """Split `root`, seal share i to custodian i's enrolled key, and leave each for its custodian to
    fetch once (GET /v1/custody/shares/mine). Nothing is written when the layout is refused."""
    try:
        recipients = custodianship.choose(named=cmd.custodians, shares=cmd.shares, threshold=cmd.threshold,
                                          enrolled=await store.custodian_keys(), eligible=set(cmd.eligible),
                                          allow_single=custody.allow_single_custodian)
        shares = split_root_key(root, threshold=cmd.threshold, shares=len(recipients))
    except custodianship.CustodianError as exc:
        raise unprocessable(exc, exc.field) from None
    except ShareError as exc:
        raise unprocessable(exc, "threshold") from None
    try:
        # SECURITY: a share leaves keysvc only sealed to its own custodian's key (the store and the bus
        # carry ciphertext only that custodian can open); no provider admin receives one.
        deliveries = [{**transit.seal_to_custodian(share, r.public_key, purpose=purpose, root_fingerprint=fp,
                                                   custodian_id=r.custodian_id, number=r.number,
                                                   signing_key=custody.signer_key), "created_at": _now()}
                      for share, r in zip(shares, recipients, strict=True)]
    except (ValueError, transit.ShareTransportError):  # e.g. a low-order X25519 point
        raise unprocessable("an enrolled custodian key is not a usable X25519 public key; that custodian "
                            "must enrol again", "custodians") from None
    share_set = share_set_id(shares[0])
    del shares
    await store.put_deliveries(deliveries)
    return recipients, share_set


def _listed(recipients: list[custodianship.Recipient]) -> list[CustodianShare]:
    return [CustodianShare(custodian_id=r.custodian_id, number=r.number, key_id=r.key_id) for r in recipients]


async def init_custody(request: rpc.RpcRequest, cmd: InitCustodyCall, *, store: KeyStore, custody: Custody,
                       outbox: Outbox) -> CustodyInitialized:
    """Create the root key once; each share goes sealed to a different custodian; keep only a fingerprint.

    keysvc stays sealed afterwards: the custodians prove their shares by unsealing.
    """
    if not custody.hierarchy.sealed or await store.any_kek():
        raise _conflict(ALREADY_ROOTED)
    _ = custody.signer_key  # refuses before anything is created
    root = secrets.token_bytes(ROOT_KEY_BYTES)
    fp = fingerprint(root)
    try:
        recipients, _ = await _seal_to_custodians(store, custody, cmd, root, transit.INIT, fp)
    finally:
        del root
    event = events.CustodyInitialized(**event_fields(request), root_fingerprint=fp, custodian_count=len(recipients),
                                      threshold=cmd.threshold)
    doc = {"fingerprint": fp, "threshold": cmd.threshold, "shares": len(recipients), "generation": 1,
           "custodians": [r.custodian_id for r in recipients], "created_at": _now(), "created_by": request.actor.id}
    if not await store.insert_root_record(doc, event):
        raise _conflict(ALREADY_ROOTED)
    await outbox.publish(store.outbox_of("custody"), SYSTEM_TENANT, event)
    log.info("custody_initialized", root_fingerprint=fp, shares=len(recipients), threshold=cmd.threshold)
    return CustodyInitialized(root_fingerprint=fp, threshold=cmd.threshold, shares=len(recipients),
                              custodians=_listed(recipients),
                              note="each custodian fetches their own share once (`strongroom operator my-share`)")


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
        public = bytes(round_doc["transport"]["public_key"])
    else:
        rekey = (root_doc or {}).get("rekey")
        if rekey is None or rekey["status"] != "copying":
            raise _conflict("no root re-key is waiting for verification")
        round_id, expires_at = rekey["new_fingerprint"], rekey["expires_at"].isoformat()
        public = bytes(rekey["transport_public"])
    return TransportKey(purpose=cmd.purpose, round_id=round_id, expires_at=expires_at,
                        **transit.published_transport_key(custody.signer_key, public, purpose=cmd.purpose,
                                                          round_id=round_id))


def _open_share(private: X25519PrivateKey | None, body: SealedShare, purpose: str) -> str:
    if private is None:
        raise rpc.ProblemError(503, "Service Unavailable", "this keysvc instance started after the round opened and "
                               "holds no copy of its transport key; submit again")
    try:
        return transit.open_share(body.sealed_share, private, transit.inbound_info(purpose, body.round_id))
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
    digest = transit.sealed_digest(body.sealed_share)
    if unseal_rounds.replayed(round_doc, digest):  # before opening: a restarted instance may hold no transport key
        raise _conflict("this sealed share was already submitted in this round; seal the share again", "sealed_share")
    share = _open_share(custody.unsealing.transport_private(round_doc), body, transit.UNSEAL)
    try:
        out = await custody.unsealing.submit(share, root_doc, rekeying.unseal_fingerprints(root_doc),
                                             by=request.actor.id, round_id=body.round_id,
                                             sealed_digest=digest)
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
    request: rpc.RpcRequest, cmd: RekeyRootCall, *, store: KeyStore, custody: Custody, ttl: timedelta
) -> RekeyStarted:
    """Start replacing the root key: each new share sealed to a different custodian now, the switch once
    a threshold of distinct custodians has verified theirs (see rekey.py). The current shares stay in
    force until then; releases never stop."""
    hierarchy = custody.hierarchy
    if hierarchy.sealed:
        raise sealed()
    _ = custody.signer_key  # refuses before anything is created
    await hierarchy.refresh_roots()
    new_root = secrets.token_bytes(ROOT_KEY_BYTES)
    new_fp = fingerprint(new_root)
    try:
        recipients, share_set = await _seal_to_custodians(store, custody, cmd, new_root, transit.REKEY, new_fp)
        new_fp = await rekeying.begin(store, hierarchy, new_root, threshold=cmd.threshold, shares=len(recipients),
                                      share_set=share_set, request_id=request.correlation_id, actor=request.actor.id,
                                      now=_now(), ttl=ttl)
    except rekeying.RekeyConflict as exc:
        raise _conflict(str(exc)) from None
    finally:
        del new_root
    log.info("custody_rekey_started", root_fingerprint=hierarchy.root_fingerprint, new_fingerprint=new_fp)
    return RekeyStarted(new_fingerprint=new_fp, root_fingerprint=hierarchy.root_fingerprint, threshold=cmd.threshold,
                        shares=len(recipients), custodians=_listed(recipients), expires_at=(_now() + ttl).isoformat(),
                        note="each custodian fetches their new share once (`strongroom operator my-share`); the "
                             "current shares stay in force until a threshold of custodians verifies theirs")


async def verify_rekey(request: rpc.RpcRequest, body: SealedShare, *, store: KeyStore, custody: Custody,
                       outbox: Outbox, batch: int = 500) -> RekeyVerified:
    """One custodian proves their new sealed share; the threshold-th, from as many distinct custodians,
    switches custody to the new root."""
    if custody.hierarchy.sealed:
        raise sealed()
    rekey = (await store.root_record() or {}).get("rekey")
    if rekey is None or rekey["status"] != "copying":
        raise _conflict("no root re-key is waiting for verification")
    if body.round_id != rekey["new_fingerprint"]:
        raise _conflict(f"round_id {body.round_id} is not the pending re-key ({rekey['new_fingerprint']}); "
                        "seal the share again", "round_id")
    try:
        private = rekeying.transport_private(custody.hierarchy, rekey)
    except rekeying.RekeyConflict as exc:
        raise _conflict(str(exc)) from None
    share = _open_share(private, body, transit.REKEY_VERIFY)
    try:
        out = await rekeying.verify_share(store, custody.hierarchy, outbox, share, by=request.actor.id, batch=batch,
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
