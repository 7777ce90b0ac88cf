"""Manual approval and tenant policy settings: the rules of a vote, with no I/O.

An approval is satisfied by ``approvals_required`` approvals from different people (the person is
the acting principal's id); the requester never approves their own request; an expired or
decided approval takes no more votes. Pure functions over the stored approval document.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_APPROVAL_EXPIRY_SECONDS = 3600
DEFAULT_HEARTBEAT_GRACE_SECONDS = 900


class PolicySettings(BaseModel):
    """Per-tenant settings of the policy service."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    approval_expiry_seconds: int = Field(DEFAULT_APPROVAL_EXPIRY_SECONDS, ge=1, le=30 * 86400)
    heartbeat_grace_seconds: int = Field(DEFAULT_HEARTBEAT_GRACE_SECONDS, ge=1, le=30 * 86400)


class VoteRefused(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def expiry_seconds(rule_seconds: int, settings: PolicySettings) -> int:
    """The shorter of the rule's and the tenant's expiry: either may tighten, neither loosens."""
    return min(rule_seconds, settings.approval_expiry_seconds)


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
