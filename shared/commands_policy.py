"""policysvc's request/reply contracts: each RPC method's params model and result model.

Params are what the gateway sends today (it validates HTTP bodies first); results serialize to
exactly the JSON policysvc has always answered, so the gateway and clients read them unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from .commands import PutPolicy
from .provenance import Provenance

DEFAULT_APPROVAL_EXPIRY_SECONDS = 3600
DEFAULT_HEARTBEAT_GRACE_SECONDS = 900


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Result(BaseModel):
    """A reply; keys named in ``omit_when_none`` are left out when None (absent today, not null)."""

    model_config = ConfigDict(frozen=True)
    omit_when_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _sparse(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if not (v is None and k in self.omit_when_none)}


class PolicySettings(BaseModel):
    """Per-tenant settings of the policy service (params and result of get/put_settings)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    approval_expiry_seconds: int = Field(DEFAULT_APPROVAL_EXPIRY_SECONDS, ge=1, le=30 * 86400)
    heartbeat_grace_seconds: int = Field(DEFAULT_HEARTBEAT_GRACE_SECONDS, ge=1, le=30 * 86400)


# --- params -------------------------------------------------------------------------------


class NoParams(Params):
    pass


class PutPolicyParams(Params):
    policy_id: str | None = None  # None creates a policy
    policy: PutPolicy


class PolicyRef(Params):
    policy_id: str = ""


class PolicyVersionRef(Params):
    policy_id: str = ""
    version: int


class PutGroupParams(Params):
    group_id: str | None = None  # None creates a group
    group: dict[str, Any] = Field(default_factory=dict)


class GroupRef(Params):
    group_id: str = ""


class ListGroups(Params):
    kind: str | None = None


class ListApprovals(Params):
    status: str | None = None
    limit: int | str | None = None  # a query string, checked by the handler


class ApprovalRef(Params):
    approval_id: str = ""


class Vote(Params):
    approval_id: str = ""
    verdict: Literal["approve", "deny"]
    comment: str | None = None


class RequestRef(Params):
    request_id: str = ""
    device_id: str = ""


class DecisionRef(Params):
    request_id: str = ""


class ListDecisions(Params):
    device_id: str | None = None
    key_id: str | None = None
    effect: str | None = None
    limit: int | str | None = None  # a query string, checked by the handler


class Simulate(Params):
    policy: PutPolicy
    policy_id: str | None = None  # the policy the candidate replaces; None adds it
    requests: list[Any] | None = None  # checked item by item, naming requests[i]
    recorded_days: int | None = Field(default=None, ge=1, le=90)


class Heartbeat(Params):
    device_id: str = ""
    facts: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Provenance] | None = None  # fact path -> provenance; None: only observed facts are observed


class DeviceRef(Params):
    device_id: str = ""


class ClearQuarantine(Params):
    device_id: str = ""
    reason: str | None = None


# --- results ------------------------------------------------------------------------------


class PolicyView(Result):
    policy_id: str
    version: int
    name: str
    updated_at: str
    updated_by: str | None
    document: dict[str, Any]


class RestoredPolicy(PolicyView):
    restored_from: int


class PolicyList(Result):
    items: list[PolicyView]


class PolicyDeleted(Result):
    policy_id: str
    deleted: bool


class PolicyVersionView(Result):
    omit_when_none = frozenset({"current"})
    policy_id: str
    version: int
    name: str
    updated_at: str
    updated_by: str | None
    restored_from: int | None
    document: dict[str, Any]
    current: bool | None = None  # in listings only


class PolicyVersionList(Result):
    items: list[PolicyVersionView]


class GroupView(Result):
    """A group: its id and version, its document's own keys, and who changed it when."""

    model_config = ConfigDict(frozen=True, extra="allow")
    group_id: str
    version: int
    updated_at: str
    updated_by: str | None


class GroupList(Result):
    items: list[GroupView]


class GroupDeleted(Result):
    group_id: str
    deleted: bool


class Ballot(Result):
    by: str
    at: datetime
    comment: str


class ApprovalView(Result):
    omit_when_none = frozenset({"kind", "volume_id"})
    approval_id: str
    request_id: str
    device_id: str
    key_id: str
    key_version: int | None
    status: str
    approvals_required: int
    remember_for_seconds: int | None
    expires_at: datetime
    requested_at: datetime | None
    reasons: list[str] | None
    decided_by: list[dict[str, Any]] | None
    decided_at: datetime | None
    comment: str | None
    votes: list[Ballot]
    approvals_received: int
    kind: str | None = None  # "volume_recovery" for a break-glass request; absent for a key request
    volume_id: str | None = None


class ApprovalList(Result):
    items: list[ApprovalView]


class RequestStatus(Result):
    omit_when_none = frozenset({"approvals_required", "approvals_received", "expires_at"})
    request_id: str
    status: str
    disclosed: dict[str, Any]
    approvals_required: int | None = None
    approvals_received: int | None = None
    expires_at: str | None = None


class DecisionSummary(Result):
    request_id: str
    device_id: str
    key_id: str
    effect: str
    decided_at: str
    reasons: list[str]
    decided_by: list[dict[str, Any]]


class DecisionList(Result):
    items: list[DecisionSummary]


class DecisionDetail(DecisionSummary):
    omit_when_none = frozenset({"trace_verified", "approval"})
    trace: list[dict[str, Any]]
    disclosed_to_agent: dict[str, Any]
    facts: dict[str, Any]
    provenance: dict[str, str] = Field(default_factory=dict)  # of the facts: fact path -> provenance (else claimed)
    trace_sha256: str | None
    trace_record: str | None
    trace_verified: bool | None = None  # only when the decision kept its trace record
    approval: ApprovalView | None = None  # only when the request needed approval


class KeyPair(Result):
    device_id: str
    key_id: str


class SimulatedRequest(Result):
    request_id: str
    device_id: str
    key_id: str
    current: str
    candidate: str
    changed: bool
    candidate_reasons: list[str]
    provenance: dict[str, str | None] = Field(default_factory=dict)  # each fact the candidate tested -> its provenance


class Simulation(Result):
    requests: int
    changed: int
    gained: list[KeyPair]
    lost: list[KeyPair]
    items: list[SimulatedRequest]


class HeartbeatAnswer(Result):
    device_id: str
    status: str
    next_heartbeat_within_seconds: int  # the grace period: silent longer than this, the device is quarantined
    heartbeat_interval_seconds: int  # how often the agent should beat (posture.heartbeat_interval)


class DeviceStatus(Result):
    device_id: str
    status: str


class PostureCounts(Result):
    """A tenant's devices by posture (policysvc's view): active, revoked, quarantined by cause
    (`policysvc.posture.QUARANTINE_REASONS`: failing facts, or heartbeats missed)."""

    active: int
    revoked: int
    quarantined_facts: int
    quarantined_heartbeat_missed: int


class Posture(Result):
    device_id: str | None
    status: str | None
    groups: list[str] | None
    quarantine_reason: str | None
    quarantine_cause: str | None
    last_heartbeat_at: datetime | None
    heartbeat_due: datetime | None
    released_keys: list[str] | None
    last_facts: dict[str, Any] | None = None  # as the last heartbeat brought them, evidence applied
    last_facts_provenance: dict[str, Provenance] | None = None  # every fact path in last_facts -> its provenance
