"""Device posture, pure: which released keys fresh facts no longer earn, quarantine and clearing.

A device is quarantined when its facts fail the policies that released its keys or its heartbeats
stop, and released from quarantine when its facts pass again (or an operator clears it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from shared import events
from shared.events import Event

from . import policy as engine
from .decision import DeviceState, applicable
from .groups import TenantGroups
from .rules import Policy

QUARANTINE_REASONS = {"facts": "posture check failed", "heartbeat_missed": "heartbeats stopped"}


def failing_keys(
    device_id: str, facts: Mapping[str, Any], *, device: DeviceState, groups: TenantGroups,
    releasing: Mapping[str, Sequence[Policy]], now: datetime, provenance: Mapping[str, str] | None = None,
) -> dict[str, tuple[str, ...]]:
    """Key id -> the deny reasons, for each released key the facts no longer earn under the
    policies that released it (a policy tightened since governs new releases, not keys given)."""
    failing: dict[str, tuple[str, ...]] = {}
    for key_id in sorted(releasing):
        chosen = applicable(releasing[key_id], device_id, key_id, facts, device=device, groups=groups, now=now,
                            provenance=provenance)
        decision = engine.evaluate(chosen, facts, now=now, provenance=provenance)
        if decision.effect == "deny":
            failing[key_id] = decision.reasons
    return failing


def heartbeat_verdict(status: str, failing: Mapping[str, Any]) -> Literal["quarantine", "clear"] | None:
    """Failing facts quarantine a device not yet quarantined; passing facts clear a quarantined one."""
    if failing and status != "quarantined":
        return "quarantine"
    if not failing and status == "quarantined":
        return "clear"
    return None


def heartbeat_interval(grace_seconds: int) -> int:
    """How often an agent should send heartbeats: twice per grace period, so that one lost beat
    (a gateway restart, a network blip) does not quarantine the device."""
    return max(1, grace_seconds // 2)


def failure_reasons(failing: Mapping[str, Iterable[str]]) -> tuple[str, ...]:
    return tuple(f"{key}: {reason}" for key, reasons in failing.items() for reason in reasons)


def silence_reasons(last_heartbeat_at: datetime) -> tuple[str, ...]:
    return (f"no heartbeat since {last_heartbeat_at.isoformat()}",)


def quarantine_events(
    tenant_id: str, device_id: str, *, cause: str, key_ids: tuple[str, ...], reasons: tuple[str, ...],
    correlation_id: str, source_ip: str | None,
) -> tuple[str, tuple[Event, Event]]:
    """The quarantine's reason as stored, and its two events: the failed check and the quarantine."""
    reason = QUARANTINE_REASONS["facts" if cause == "facts" else "heartbeat_missed"]
    failed = events.DevicePostureFailed(
        tenant_id=tenant_id, correlation_id=correlation_id, source_ip=source_ip, device_id=device_id, cause=cause,
        key_ids=key_ids, reasons=reasons,
    )
    return reason, (failed, failed.caused(events.DeviceQuarantined, device_id=device_id, reason=reason))
