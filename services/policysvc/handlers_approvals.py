"""policysvc's approvals: listing them, votes that approve or deny, and expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from shared import commands_policy as c
from shared import commands_volumes as cv
from shared import events, rpc
from shared.store import stored_now

from . import approvals as voting
from .cache import TargetCache
from .decision import released_by, trace_record
from .handling import event_fields, page_limit
from .store import PolicyStore

log = structlog.get_logger("strongroom.policysvc")
STATUSES = ("pending", "approved", "denied", "expired")


def approval_view(doc: dict[str, Any]) -> c.ApprovalView:
    keys = ("approval_id", "request_id", "device_id", "key_id", "key_version", "status", "approvals_required",
            "remember_for_seconds", "expires_at", "requested_at", "reasons", "decided_by", "decided_at", "comment",
            "kind", "volume_id")
    votes = [c.Ballot(by=v["by"], at=v["at"], comment=v.get("comment", "")) for v in doc.get("votes", [])]
    return c.ApprovalView(**{k: doc.get(k) for k in keys}, votes=votes, approvals_received=len(votes))


async def list_approvals(request: rpc.RpcRequest, params: c.ListApprovals, *, store: PolicyStore) -> c.ApprovalList:
    if params.status is not None and params.status not in STATUSES:
        raise rpc.ProblemError(400, "Bad Request", "status must be pending, approved, denied or expired", "status")
    docs = await store.list_approvals(request.tenant_id, status=params.status, limit=page_limit(params.limit))
    return c.ApprovalList(items=[approval_view(d) for d in docs])


async def get_approval(request: rpc.RpcRequest, params: c.ApprovalRef, *, store: PolicyStore) -> c.ApprovalView:
    doc = await store.approval(request.tenant_id, params.approval_id)
    if doc is None:
        raise rpc.NotFound("approval", "approval_id")
    return approval_view(doc)


async def vote(request: rpc.RpcRequest, params: c.Vote, *, store: PolicyStore, targets: TargetCache) -> c.ApprovalView:
    """Approve or deny a pending approval. Approvals count once per person; m of them release.

    Each write records the request's id (the ballot; the settling), so a redelivery whose first
    delivery died before its reply was recorded finishes that delivery's work (`_finish`)."""
    tenant_id, approval_id, now = request.tenant_id, params.approval_id, stored_now()
    doc = await store.approval(tenant_id, approval_id)
    if doc is None:
        raise rpc.NotFound("approval", "approval_id")
    if voting.earlier_delivery(doc, request.request_id):
        return await _finish(request, doc, now, store=store, targets=targets)
    if voting.is_overdue(doc, now):
        await expire_approval(doc, store=store)
        doc = await store.approval(tenant_id, approval_id) or doc
    comment = (params.comment or "")[:1000]
    try:
        cast = voting.cast_vote(doc, person=request.actor.id, verdict=params.verdict, comment=comment, now=now,
                                fields=event_fields(request), request_id=request.request_id)
    except voting.VoteRefused as exc:
        raise rpc.ProblemError(exc.status, exc.title, exc.detail, "approval_id") from None
    staged_vote = cast.events[0] if cast.kind == "voted" else None  # a grant stages its events when it settles
    if cast.kind != "denied" and not await store.add_vote(tenant_id, approval_id, seen=doc.get("votes", []),
                                                          ballot=cast.ballot, event=staged_vote):
        return await _finish_or_conflict(request, approval_id, now, "the approval changed concurrently; retry",
                                         store=store, targets=targets)
    if cast.kind == "voted":
        await store.publish_staged("approvals", tenant_id, *cast.events)
        return approval_view({**doc, "votes": cast.votes})
    settled = "approved" if cast.kind == "granted" else "denied"
    if not await store.settle_approval(tenant_id, approval_id, status=settled, now=now, comment=comment,
                                       events=cast.events, request_id=request.request_id):
        return await _finish_or_conflict(request, approval_id, now, "the approval was decided concurrently",
                                         store=store, targets=targets)
    if cast.kind == "denied":
        await store.publish_staged("approvals", tenant_id, *cast.events)
        return approval_view(await store.approval(tenant_id, approval_id) or doc)
    await _release(doc, cast.events, cast.remember_until, store=store, targets=targets)
    return approval_view({**doc, "votes": cast.votes, "status": "approved", "decided_at": now, "comment": comment})


async def _finish_or_conflict(request: rpc.RpcRequest, approval_id: str, now: datetime, detail: str, *,
                              store: PolicyStore, targets: TargetCache) -> c.ApprovalView:
    """A compare-and-swap lost: to this request's own earlier delivery (finish it), or to another (409)."""
    doc = await store.approval(request.tenant_id, approval_id)
    if doc is not None and voting.earlier_delivery(doc, request.request_id):
        return await _finish(request, doc, now, store=store, targets=targets)
    raise rpc.ProblemError(409, "Conflict", detail, "approval_id")


async def _finish(request: rpc.RpcRequest, doc: dict[str, Any], now: datetime, *, store: PolicyStore,
                  targets: TargetCache) -> c.ApprovalView:
    """A redelivered vote whose first delivery made its change and died before recording its reply:
    settle what its counted ballot decides, redo a grant's idempotent steps, send what is staged,
    and answer with the approval as it stands."""
    tenant_id, approval_id = request.tenant_id, doc["approval_id"]
    grant = voting.resumed_grant(doc, request_id=request.request_id, now=now, fields=event_fields(request))
    if grant is not None and await store.settle_approval(
            tenant_id, approval_id, status="approved", now=now, comment=grant.ballot["comment"], events=grant.events,
            request_id=request.request_id):
        log.info("approval_settled_on_redelivery", approval_id=approval_id)
    doc = await store.approval(tenant_id, approval_id) or doc
    staged = await store.approval_staged(tenant_id, approval_id)
    if voting.earlier_delivery(doc, request.request_id) == "settled" and doc["status"] == "approved":
        await _release(doc, staged, voting.remembered_until(doc), store=store, targets=targets)
    else:
        await store.publish_staged("approvals", tenant_id, *staged)
    return approval_view(doc)


async def _release(doc: dict[str, Any], staged: tuple[events.Event, ...], remember_until: datetime | None, *,
                   store: PolicyStore, targets: TargetCache) -> None:
    """A granted approval: remember it if asked, note the key as released, then announce it. Each
    step is idempotent: a redelivered vote runs them again after a replica died among them."""
    tenant_id = doc["tenant_id"]
    if voting.is_recovery(doc):
        await store.publish_staged("approvals", tenant_id, *staged)
        log.info("recovery_approval_granted", approval_id=doc["approval_id"])
        return
    if remember_until is not None:
        await store.remember_grant(tenant_id, doc["device_id"], doc["key_id"], until=remember_until,
                                   approval_id=doc["approval_id"])
        targets.drop_remembered(tenant_id)
    decision = await store.find_decision(tenant_id, doc["request_id"])
    decided_at = decision["decided_at"] if decision else doc["requested_at"]
    # A release decided since (it noted the key, and its policy versions when they changed) stands.
    if not await store.allowed_since(tenant_id, doc["device_id"], doc["key_id"], decided_at):
        await store.note_release(tenant_id, doc["device_id"], doc["key_id"], decided_at=decided_at,
                                 policies=released_by(trace_record(decision)) if decision else None)
    targets.drop_device(tenant_id, doc["device_id"])
    await store.publish_staged("approvals", tenant_id, *staged)
    log.info("approval_granted", approval_id=doc["approval_id"])


async def expire_approval(doc: dict[str, Any], *, store: PolicyStore) -> bool:
    """Pending past its deadline: the request is denied; its one-time key is never used again."""
    staged = voting.expiry(doc, correlation_id=events.new_id())
    matched = await store.settle_approval(doc["tenant_id"], doc["approval_id"], status="expired", now=datetime.now(UTC),
                                          comment=None, events=staged)
    if matched:
        await store.publish_staged("approvals", doc["tenant_id"], *staged)
        log.info("approval_expired", approval_id=doc["approval_id"])
    return matched


async def open_recovery_approval(request: rpc.RpcRequest, params: cv.OpenRecoveryApproval, *, store: PolicyStore,
                                 targets: TargetCache) -> c.ApprovalView:
    """Break-glass: a pending approval for a volume's recovery passphrase, needing
    ``RECOVERY_APPROVALS`` people other than the requester, expiring with the tenant's approvals."""
    now = datetime.now(UTC)
    settings = await targets.settings(request.tenant_id)
    # Derived from the RPC's own id: a redelivery (its replica died before recording the reply)
    # finds the approval its first delivery opened instead of opening a second one.
    doc, announced = voting.recovery_approval(
        request_id=rpc.derived_id(request, "rcv_"),
        volume_id=params.volume_id, key_id=params.key_id, device_id=params.device_id, public_key=params.public_key,
        reason=params.reason, approvals_required=cv.RECOVERY_APPROVALS,
        expires_at=now + timedelta(seconds=settings.approval_expiry_seconds), now=now, fields=event_fields(request))
    if not await store.open_approval(request.tenant_id, doc, announced):
        opened = await store.approval_for_request(request.tenant_id, doc["request_id"])
        if opened is None:
            raise rpc.ProblemError(409, "Conflict", "a recovery request with this id exists; retry", "volume_id")
        await store.publish_staged("approvals", request.tenant_id,
                                   *await store.approval_staged(request.tenant_id, opened["approval_id"]))
        return approval_view(opened)
    await store.publish_staged("approvals", request.tenant_id, announced)
    log.info("recovery_approval_opened", approval_id=doc["approval_id"], volume_id=params.volume_id)
    return approval_view({**doc, "tenant_id": request.tenant_id})


async def recovery_approval(request: rpc.RpcRequest, params: cv.RecoveryApprovalRef, *,
                            store: PolicyStore) -> cv.RecoveryApproval:
    """A break-glass approval's state, for keysvc to decide whether to release (expired first if overdue)."""
    doc = await store.approval_for_request(request.tenant_id, params.request_id)
    if doc is None or not voting.is_recovery(doc) or doc.get("volume_id") != params.volume_id:
        raise rpc.NotFound("recovery request", "request_id")
    if voting.is_overdue(doc, datetime.now(UTC)):
        await expire_approval(doc, store=store)
        doc = await store.approval_for_request(request.tenant_id, params.request_id) or doc
    voters = [v["by"] for v in doc.get("votes", [])]
    return cv.RecoveryApproval(
        request_id=doc["request_id"], approval_id=doc["approval_id"], volume_id=doc["volume_id"],
        requested_by=doc["requested_by"], public_key=doc["ephemeral_public_key"], status=doc["status"],
        approvers=voters if doc["status"] == "approved" else [], approvals_required=doc["approvals_required"],
        approvals_received=len(voters), expires_at=doc["expires_at"])
