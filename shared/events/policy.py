"""Events of policies, device groups, approvals, notifications and posture."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from .base import Event

# --- policies, device groups, approvals, notifications: event models ---------------


class GroupUpdated(Event):
    """A device or key group's new version; the document travels so caches refresh without a read."""

    type: Literal["group.updated"] = "group.updated"
    group_id: str
    kind: Literal["device", "key"]
    name: str
    group_version: int
    document: dict[str, Any]


class GroupDeleted(Event):
    type: Literal["group.deleted"] = "group.deleted"
    group_id: str
    kind: Literal["device", "key"]
    name: str


class PolicySettingsUpdated(Event):
    """A tenant's policy settings (approval expiry, heartbeat grace) changed."""

    type: Literal["tenant.policy_settings_updated"] = "tenant.policy_settings_updated"
    settings: dict[str, Any]


class ApprovalRequested(Event):
    """A require_approval decision: a request waits for operators until `expires_at`."""

    type: Literal["approval.requested"] = "approval.requested"
    approval_id: str
    request_id: str
    device_id: str
    key_id: str
    approvals_required: int
    expires_at: datetime
    reasons: tuple[str, ...] = ()
    outcome: Literal["pending"] = "pending"  # the audit record's outcome: a request now waiting


class ApprovalVoted(Event):
    """One operator approved; more approvals are still needed."""

    type: Literal["approval.voted"] = "approval.voted"
    approval_id: str
    request_id: str
    approvals_received: int
    approvals_required: int
    comment: str = ""


class ApprovalGranted(Event):
    type: Literal["approval.granted"] = "approval.granted"
    approval_id: str
    request_id: str
    device_id: str
    key_id: str
    approvers: tuple[str, ...]
    comment: str = ""
    remember_until: datetime | None = None


class ApprovalDenied(Event):
    type: Literal["approval.denied"] = "approval.denied"
    approval_id: str
    request_id: str
    device_id: str
    key_id: str
    comment: str = ""


class ApprovalExpired(Event):
    type: Literal["approval.expired"] = "approval.expired"
    approval_id: str
    request_id: str
    device_id: str
    key_id: str


class DevicePostureFailed(Event):
    """A device's fresh facts no longer satisfy the policy that released its keys, or it went silent."""

    type: Literal["device.posture_failed"] = "device.posture_failed"
    device_id: str
    cause: Literal["facts", "heartbeat_missed"]
    key_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


class DeviceQuarantined(Event):
    type: Literal["device.quarantined"] = "device.quarantined"
    device_id: str
    reason: str


class DeviceQuarantineCleared(Event):
    type: Literal["device.quarantine_cleared"] = "device.quarantine_cleared"
    device_id: str
    reason: str
