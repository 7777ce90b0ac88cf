"""Manual approval: the rules of a vote and what each vote, denial or expiry decides, with no I/O.

An approval is satisfied by ``approvals_required`` approvals from different people (the person is
the acting principal's id); the requester never approves their own request; an expired or
decided approval takes no more votes. Pure functions over the stored approval document.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from shared import events
from shared.commands_policy import PolicySettings
from shared.events import Event, KeyDecided, KeyRequested

from .rules import Approval


class VoteRefused(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def expiry_seconds(rule_seconds: int, settings: PolicySettings) -> int:
    """The shorter of the rule's and the tenant's expiry: either may tighten, neither loosens."""
    return min(rule_seconds, settings.approval_expiry_seconds)


def is_overdue(approval: Mapping[str, Any], now: datetime) -> bool:
    """Still pending past its deadline: it must be expired before anything else happens to it."""
    return approval["status"] == "pending" and approval["expires_at"] <= now


def check_vote(approval: Mapping[str, Any], person: str, *, now: datetime) -> None:
    """Raises VoteRefused unless ``person`` may approve or deny this approval now."""
    status = approval["status"]
    if status != "pending":
        raise VoteRefused(409, "Conflict", f"the approval is already {status}")
    if approval["expires_at"] <= now:
        raise VoteRefused(409, "Conflict", "the approval has expired")
    if person == approval.get("requested_by"):
        raise VoteRefused(403, "Forbidden", "the requester cannot approve their own request")
    if any(vote["by"] == person for vote in approval.get("votes", [])):
        raise VoteRefused(
            409, "Conflict", "you already approved this request; approvals must come from different people"
        )


def is_satisfied(approval: Mapping[str, Any]) -> bool:
    voters = {vote["by"] for vote in approval.get("votes", [])}
    return len(voters) >= approval["approvals_required"]


def pending_approval(requested: KeyRequested, outcome: KeyDecided, terms: Approval | None) -> tuple[dict[str, Any], Event]:
    """The approval a require_approval outcome opens, and the event announcing it."""
    terms = terms or Approval()
    approval_id = outcome.disclosed["approval_id"]
    expires_at = datetime.fromisoformat(outcome.disclosed["expires_at"])
    announced = outcome.caused(
        events.ApprovalRequested, approval_id=approval_id, request_id=requested.request_id,
        device_id=requested.device_id, key_id=requested.key_id, approvals_required=terms.approvals_required,
        expires_at=expires_at, reasons=outcome.reasons,
    )
    doc = {
        "approval_id": approval_id, "request_id": requested.request_id, "device_id": requested.device_id,
        "key_id": requested.key_id, "key_version": requested.key_version,
        # Public X25519 key of this one request; it is used once, for this approval, never after expiry.
        "ephemeral_public_key": requested.ephemeral_public_key,
        "approvals_required": terms.approvals_required, "remember_for_seconds": terms.remember_for_seconds,
        "expires_at": expires_at, "status": "pending", "votes": [], "requested_at": outcome.occurred_at,
        "requested_by": requested.actor.id, "reasons": list(outcome.reasons),
        "decided_by": [dict(r) for r in outcome.decided_by], "correlation_id": requested.correlation_id,
        "requested_event": outcome.model_dump_json(),
    }
    return doc, announced


def final_decision(approval: Mapping[str, Any], cause: Event, effect: str, reason: str) -> KeyDecided:
    """The original request's outcome, for its original request id and one-time public key."""
    requested = events.decode_event(approval["requested_event"].encode())
    assert isinstance(requested, KeyDecided)
    disclosed = {"effect": effect, "reasons": [reason]} if effect != "allow" else {"effect": "allow"}
    return cause.caused(
        KeyDecided, request_id=approval["request_id"], device_id=approval["device_id"], key_id=approval["key_id"],
        key_version=approval.get("key_version"), effect=effect, reasons=(*requested.reasons, reason),
        disclosed=disclosed, trace=requested.trace, trace_sha256=requested.trace_sha256,
        decided_by=requested.decided_by, ephemeral_public_key=approval["ephemeral_public_key"],
    )


RECOVERY = "volume_recovery"  # an approval's kind when it guards a volume's recovery passphrase


def is_recovery(approval: Mapping[str, Any]) -> bool:
    return approval.get("kind") == RECOVERY


def _settles(approval: Mapping[str, Any], cause: Event, effect: str, reason: str) -> tuple[Event, ...]:
    """The key request's final decision; a recovery approval has none (keysvc asks for its state)."""
    return () if is_recovery(approval) else (final_decision(approval, cause, effect, reason),)


def recovery_approval(*, request_id: str, volume_id: str, key_id: str, device_id: str, public_key: str, reason: str,
                      approvals_required: int, expires_at: datetime, now: datetime,
                      fields: dict[str, Any]) -> tuple[dict[str, Any], Event]:
    """A break-glass approval for a volume's recovery passphrase, and the event announcing it;
    `request_id` ("rcv_..."), which the approval's id is made from, is the caller's.

    The requester is the acting person: they can never approve it themselves (``check_vote``)."""
    approval_id = "apr_" + request_id.removeprefix("rcv_")
    why = f"break-glass recovery of volume {volume_id}: {reason}"
    announced = events.ApprovalRequested(
        **fields, approval_id=approval_id, request_id=request_id, device_id=device_id, key_id=key_id,
        approvals_required=approvals_required, expires_at=expires_at, reasons=(why,),
    )
    doc = {
        "approval_id": approval_id, "request_id": request_id, "kind": RECOVERY, "volume_id": volume_id,
        "device_id": device_id, "key_id": key_id, "key_version": None,
        # Public X25519 key the passphrase will be sealed to: the requester's, for this request only.
        "ephemeral_public_key": public_key, "approvals_required": approvals_required, "remember_for_seconds": None,
        "expires_at": expires_at, "status": "pending", "votes": [], "requested_at": now,
        "requested_by": fields["actor"].id, "reasons": [why], "decided_by": [],
        "correlation_id": fields["correlation_id"],
    }
    return doc, announced


def expiry(approval: Mapping[str, Any], *, correlation_id: str) -> tuple[Event, ...]:
    """Pending past its deadline: the request is denied; its one-time key is never used again."""
    expired = events.ApprovalExpired(
        tenant_id=approval["tenant_id"], correlation_id=approval.get("correlation_id") or correlation_id,
        approval_id=approval["approval_id"], request_id=approval["request_id"], device_id=approval["device_id"],
        key_id=approval["key_id"],
    )
    return expired, *_settles(approval, expired, "deny", "approval expired before enough approvals")


@dataclass(frozen=True, slots=True)
class VoteOutcome:
    """What one vote decides: ``voted`` counts an approval and waits for more; ``granted`` and
    ``denied`` settle the approval and carry the request's final decision among ``events``."""

    kind: Literal["voted", "granted", "denied"]
    votes: list[dict[str, Any]]  # every approving vote, this one included
    ballot: dict[str, Any]
    events: tuple[Event, ...]
    remember_until: datetime | None = None


# The rpc request id a change records in its own write (a ballot; the settling of an approval),
# so a redelivered vote finds what its first delivery did before its replica died.
CAST_BY, SETTLED_BY = "cast_by_request", "settled_by_request"


def cast_vote(
    approval: Mapping[str, Any], *, person: str, verdict: str, comment: str, now: datetime, fields: dict[str, Any],
    request_id: str,
) -> VoteOutcome:
    """Approve or deny: raises VoteRefused when ``person`` may not. Anyone but a stranger to the
    rules may deny; approvals count once per person and never from the requester."""
    if verdict == "deny":
        check_vote({**approval, "votes": [], "requested_by": None}, person, now=now)
    else:
        check_vote(approval, person, now=now)
    fields = {**fields, "correlation_id": approval.get("correlation_id") or fields["correlation_id"]}
    common = {"approval_id": approval["approval_id"], "request_id": approval["request_id"]}
    ballot = {"by": person, "at": now, "comment": comment, CAST_BY: request_id}
    if verdict == "deny":
        denied = events.ApprovalDenied(**fields, **common, device_id=approval["device_id"], key_id=approval["key_id"],
                                       comment=comment)
        reason = f"approval denied by {person}" + (f": {comment}" if comment else "")
        return VoteOutcome("denied", list(approval.get("votes", [])), ballot,
                           (denied, *_settles(approval, denied, "deny", reason)))
    votes = [*approval.get("votes", []), ballot]
    if not is_satisfied({**approval, "votes": votes}):
        voted = events.ApprovalVoted(**fields, **common, approvals_received=len(votes),
                                     approvals_required=approval["approvals_required"], comment=comment)
        return VoteOutcome("voted", votes, ballot, (voted,))
    return _granted(approval, votes, ballot, now=now, fields=fields)


def _granted(approval: Mapping[str, Any], votes: list[dict[str, Any]], ballot: dict[str, Any], *, now: datetime,
             fields: dict[str, Any]) -> VoteOutcome:
    """The grant that ``votes`` (a quorum, ``ballot`` the one completing it) settle at ``now``."""
    approvers = tuple(v["by"] for v in votes)
    remember_until = remembered_until({**approval, "decided_at": now})
    granted = events.ApprovalGranted(
        **fields, approval_id=approval["approval_id"], request_id=approval["request_id"],
        device_id=approval["device_id"], key_id=approval["key_id"], approvers=approvers,
        comment=ballot["comment"], remember_until=remember_until,
    )
    final = _settles(approval, granted, "allow", f"approved by {', '.join(approvers)}")
    return VoteOutcome("granted", votes, ballot, (granted, *final), remember_until)


def remembered_until(approval: Mapping[str, Any]) -> datetime | None:
    """Until when a granted approval stands in for new ones (None: it is not remembered)."""
    remember = approval.get("remember_for_seconds")
    return approval["decided_at"] + timedelta(seconds=remember) if remember else None


def earlier_delivery(approval: Mapping[str, Any], request_id: str) -> Literal["settled", "voted"] | None:
    """What the vote request ``request_id`` already did to the approval, in a delivery whose replica
    died before recording its reply: ``settled`` it, counted its ballot (``voted``), or nothing."""
    if approval.get(SETTLED_BY) == request_id:
        return "settled"
    if any(v.get(CAST_BY) == request_id for v in approval.get("votes", [])):
        return "voted"
    return None


def resumed_grant(approval: Mapping[str, Any], *, request_id: str, now: datetime,
                  fields: dict[str, Any]) -> VoteOutcome | None:
    """A redelivered vote whose ballot was counted while the approval is still pending: the grant it
    settles now if the votes make a quorum (its first delivery died before settling), else None."""
    votes = list(approval.get("votes", []))
    ballot = next((v for v in votes if v.get(CAST_BY) == request_id), None)
    if ballot is None or approval["status"] != "pending" or not is_satisfied(approval):
        return None
    fields = {**fields, "correlation_id": approval.get("correlation_id") or fields["correlation_id"]}
    return _granted(approval, votes, ballot, now=now, fields=fields)
