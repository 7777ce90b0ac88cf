"""policysvc's approvals: listing them, votes that approve or deny, and expiry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from shared import commands_policy as c
from shared import events, rpc

from . import approvals as voting
from .cache import TargetCache
from .handling import event_fields, page_limit
from .store import PolicyStore

log = structlog.get_logger("strongroom.policysvc")
STATUSES = ("pending", "approved", "denied", "expired")


def approval_view(doc: dict[str, Any]) -> c.ApprovalView:
    keys = ("approval_id", "request_id", "device_id", "key_id", "key_version", "status", "approvals_required",
            "remember_for_seconds", "expires_at", "requested_at", "reasons", "decided_by", "decided_at", "comment")
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
    """Approve or deny a pending approval. Approvals count once per person; m of them release."""
    tenant_id, approval_id, now = request.tenant_id, params.approval_id, datetime.now(UTC)
    doc = await store.approval(tenant_id, approval_id)
    if doc is None:
        raise rpc.NotFound("approval", "approval_id")
    if voting.is_overdue(doc, now):
        await expire_approval(doc, store=store)
        doc = await store.approval(tenant_id, approval_id) or doc
    comment = (params.comment or "")[:1000]
    try:
        cast = voting.cast_vote(doc, person=request.actor.id, verdict=params.verdict, comment=comment, now=now,
                                fields=event_fields(request))
    except voting.VoteRefused as exc:
        raise rpc.ProblemError(exc.status, exc.title, exc.detail, "approval_id") from None
    if cast.kind == "voted":
        if not await store.add_vote(tenant_id, approval_id, seen=doc.get("votes", []), ballot=cast.ballot,
                                    event=cast.events[0]):
            raise rpc.ProblemError(409, "Conflict", "the approval changed concurrently; retry", "approval_id")
        await store.publish_staged("approvals", tenant_id, *cast.events)
        return approval_view({**doc, "votes": cast.votes})
    if cast.kind == "granted" and not await store.add_vote(tenant_id, approval_id, seen=doc.get("votes", []),
                                                           ballot=cast.ballot, event=None):
        raise rpc.ProblemError(409, "Conflict", "the approval changed concurrently; retry", "approval_id")
    settled = "approved" if cast.kind == "granted" else "denied"
    if not await store.settle_approval(tenant_id, approval_id, status=settled, now=now, comment=comment, events=cast.events):
        raise rpc.ProblemError(409, "Conflict", "the approval was decided concurrently", "approval_id")
    if cast.kind == "denied":
        await store.publish_staged("approvals", tenant_id, *cast.events)
        return approval_view(await store.approval(tenant_id, approval_id) or doc)
    await _release(doc, cast, store=store, targets=targets)
    return approval_view({**doc, "votes": cast.votes, "status": "approved", "decided_at": now, "comment": comment})


async def _release(doc: dict[str, Any], cast: voting.VoteOutcome, *, store: PolicyStore, targets: TargetCache) -> None:
    """A granted approval: remember it if asked, note the key as released, then announce it."""
    tenant_id = doc["tenant_id"]
    if cast.remember_until is not None:
        await store.remember_grant(tenant_id, doc["device_id"], doc["key_id"], until=cast.remember_until,
                                   approval_id=doc["approval_id"])
        targets.drop_remembered(tenant_id)
    await store.note_release(tenant_id, doc["device_id"], doc["key_id"])
    targets.drop_device(tenant_id, doc["device_id"])
    await store.publish_staged("approvals", tenant_id, *cast.events)
    log.info("approval_granted", approval_id=doc["approval_id"], approvers=len(cast.votes))


async def expire_approval(doc: dict[str, Any], *, store: PolicyStore) -> bool:
    """Pending past its deadline: the request is denied; its one-time key is never used again."""
    staged = voting.expiry(doc, correlation_id=events.new_id())
    matched = await store.settle_approval(doc["tenant_id"], doc["approval_id"], status="expired", now=datetime.now(UTC),
                                          comment=None, events=staged)
    if matched:
        await store.publish_staged("approvals", doc["tenant_id"], *staged)
        log.info("approval_expired", approval_id=doc["approval_id"])
    return matched
