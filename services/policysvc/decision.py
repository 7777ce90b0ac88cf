"""Deciding one key request, pure: from everything the request needs, loaded first, to its outcome.

A device's standing comes before any policy: a quarantined device is denied whatever the
policies say; an approval remembered for the device and key, still in force, stands in for
a new one. The same judgement serves real requests, simulations and heartbeats.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.commands_policy import PolicySettings
from shared.events import KeyDecided, KeyRequested

from . import approvals as voting
from . import policy as engine
from .groups import TenantGroups
from .rules import Approval, Policy

# A device document keeps, under this field, one entry per released key: the decision time and
# the (policy id, version) pairs of the newest decision that released it (None: its record named none).
RELEASERS = "releasers"


def releaser_id(key_id: str) -> str:
    """A key's name under RELEASERS (hex: key ids may hold dots)."""
    return key_id.encode().hex()


def releaser_field(key_id: str) -> str:
    """The device document's field holding one key's releaser."""
    return f"{RELEASERS}.{releaser_id(key_id)}"


def releaser(device: Mapping[str, Any], key_id: str) -> Mapping[str, Any] | None:
    """The releaser the device document keeps for this key; None for a key released before they were kept."""
    return (device.get(RELEASERS) or {}).get(releaser_id(key_id))


@dataclass(frozen=True, slots=True)
class DeviceState:
    enrolled_groups: frozenset[str]
    status: str  # active, revoked, quarantined, unknown
    quarantine_reason: str = ""
    released_keys: frozenset[str] = frozenset()
    released_by: Mapping[str, Any] = field(default_factory=dict)  # key id -> its releaser's policy versions


UNKNOWN_DEVICE = DeviceState(frozenset(), "unknown")


def device_state(doc: Mapping[str, Any] | None) -> DeviceState:
    if doc is None:
        return UNKNOWN_DEVICE
    released = frozenset(doc.get("released_keys", ()))
    return DeviceState(
        frozenset(doc.get("groups", ())), doc.get("status", "active"), doc.get("quarantine_reason", ""), released,
        {key_id: entry["policies"] for key_id in released if (entry := releaser(doc, key_id)) is not None},
    )


def applicable(
    policies: Iterable[Policy], device_id: str, key_id: str, facts: Mapping[str, Any], *, device: DeviceState,
    groups: TenantGroups, now: datetime, provenance: Mapping[str, str] | None = None,
) -> list[Policy]:
    """The policies that govern this device asking for this key."""
    device_groups = groups.device_groups(device_id, device.enrolled_groups, facts, now=now, provenance=provenance)
    key_groups = set(groups.key_groups(key_id))
    return [p for p in policies if engine.applies_to(p, device_id, device_groups, key_id, key_groups)]


@dataclass(frozen=True, slots=True)
class Judgement:
    """The effect for a device asking for a key. ``standing`` is the reason the device's standing
    overrode or completed the policies (quarantine, a remembered approval); ``decision`` is the
    policies' own, None when they were not consulted."""

    effect: str
    decision: engine.Decision | None
    standing: str | None


def judge(
    policies: Iterable[Policy], device_id: str, key_id: str, facts: Mapping[str, Any], *, device: DeviceState,
    groups: TenantGroups, remembered_until: datetime | None, at: datetime, now: datetime,
    provenance: Mapping[str, str] | None = None,
) -> Judgement:
    """Policies evaluated as of ``at``, over facts of this provenance; the device's standing as of ``now``."""
    if device.status == "quarantined":
        # SECURITY: a quarantined device gets nothing until cleared or its facts pass again.
        return Judgement("deny", None, f"device is quarantined: {device.quarantine_reason}")
    chosen = applicable(policies, device_id, key_id, facts, device=device, groups=groups, now=at, provenance=provenance)
    decision = engine.evaluate(chosen, facts, now=at, provenance=provenance)
    if decision.effect == "require_approval" and remembered_until is not None and remembered_until > now:
        return Judgement("allow", decision,
                         f"approved earlier and remembered for this device and key until {remembered_until.isoformat()}")
    return Judgement(decision.effect, decision, None)


@dataclass(frozen=True, slots=True)
class DecisionInputs:
    """All a key request's decision reads, gathered before deciding."""

    request: KeyRequested
    now: datetime
    device: DeviceState
    groups: TenantGroups
    policies: tuple[Policy, ...]
    remembered_until: datetime | None
    settings: PolicySettings


@dataclass(frozen=True, slots=True)
class Decided:
    outcome: KeyDecided
    record: str | None  # the full canonical trace the outcome's trace_sha256 commits to
    approval: Approval | None  # the terms of the approval the outcome asks for


def decide(inputs: DecisionInputs) -> Decided:
    """The outcome of one key request."""
    event, now = inputs.request, inputs.now
    common = dict(
        request_id=event.request_id, device_id=event.device_id, key_id=event.key_id, key_version=event.key_version,
        ephemeral_public_key=event.ephemeral_public_key,
    )
    judged = judge(inputs.policies, event.device_id, event.key_id, event.facts, device=inputs.device,
                   groups=inputs.groups, remembered_until=inputs.remembered_until, at=now, now=now,
                   provenance=event.provenance)
    decision = judged.decision
    if decision is None:
        disclosed = {"effect": "deny", "reasons": ["device is quarantined"]}
        return Decided(event.caused(KeyDecided, effect="deny", reasons=(judged.standing,), disclosed=disclosed,
                                    **common), None, None)
    reasons = (*decision.reasons, *evidence_reasons(event))
    # An allowed agent gets its key, not an explanation: render the disclosure only when it is read.
    disclosed = {"effect": "allow"} if decision.effect == "allow" else decision.disclosed()
    if "reasons" in disclosed and evidence_reasons(event):
        disclosed = {**disclosed, "reasons": [*disclosed["reasons"], *evidence_reasons(event)]}
    if judged.standing is not None:
        reasons = (*reasons, judged.standing)
        disclosed = {**disclosed, "effect": "allow", "reasons": [*disclosed.get("reasons", []), judged.standing]}
    elif judged.effect == "require_approval":
        assert decision.approval is not None
        expires_at = now + timedelta(seconds=voting.expiry_seconds(decision.approval.expires_in_seconds, inputs.settings))
        disclosed = {**disclosed, "approval_id": "apr_" + event.request_id.removeprefix("req_"),
                     "expires_at": expires_at.isoformat()}
    # The full trace stays in the decision record; the event carries the compact trace and the
    # record's digest, so the audit log commits to every value without storing it.
    record = decision.record(now)
    outcome = event.caused(
        KeyDecided, effect=judged.effect, reasons=reasons, disclosed=disclosed, trace=decision.compact_trace,
        trace_sha256=engine.record_digest(record), decided_by=tuple(ref._asdict() for ref in decision.decided_by),
        **common,
    )
    return Decided(outcome, record, decision.approval)


def evidence_reasons(request: KeyRequested) -> tuple[str, ...]:
    """What the request's evidence adds to the reasons: a refused proof, claims that contradicted one."""
    reasons = []
    if request.evidence is not None and not request.evidence.verified:
        reasons.append(f"{request.evidence.kind} evidence was refused ({request.evidence.reason}): "
                       "the request's facts are claimed only")
    # A claim contradicting verified evidence is worth saying, whatever the policies decided.
    reasons.extend(f"{path}: the claimed value contradicted verified evidence; the verified value was used"
                   for path in request.contradicted)
    return tuple(reasons)


def decision_document(request: KeyRequested, decided: Decided, now: datetime) -> dict[str, Any]:
    """The stored decision: the request's facts, the outcome, and the full trace record."""
    return {
        "request_id": request.request_id,
        "device_id": request.device_id,
        "key_id": request.key_id,
        "facts": request.facts,
        "provenance": request.provenance,
        "effect": decided.outcome.effect,
        "decided_at": now,
        "outcome": decided.outcome.model_dump_json(),
        # Decision.record(), the full trace as digested, deflated: ~7 KB of JSON for 50 rules
        # becomes ~1.4 KB, which is most of what a decision costs the store.
        "trace_record": zlib.compress(decided.record.encode(), 1) if decided.record is not None else None,
    }


def trace_record(doc: Mapping[str, Any]) -> str | None:
    """A decision's full trace record as text (stored deflated; older decisions kept it as text)."""
    stored = doc.get("trace_record")
    if isinstance(stored, bytes):
        return zlib.decompress(stored).decode()
    return stored or None


def record_policies(record: str) -> list[tuple[str, int]]:
    """(policy id, version) of every policy a decision's trace record evaluated."""
    return [(ref["policy"], ref["version"]) for ref in json.loads(record)["policies"]]


def released_by(record: str | None) -> list[list[Any]] | None:
    """What a device keeps of a releasing decision: [policy id, version] of each policy its trace
    record evaluated; None for a decision recorded without them (the current policies govern)."""
    return [[policy_id, version] for policy_id, version in record_policies(record)] if record else None
