"""policysvc's device posture: heartbeats that re-check released keys, quarantine and clearing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from shared import commands_policy as c
from shared import events, rpc
from shared.provenance import labelled

from . import decision, posture
from .cache import PolicyCache, TargetCache
from .decision import released_by, trace_record
from .handling import event_fields
from .rules import Policy
from .store import PolicyStore

log = structlog.get_logger("strongroom.policysvc")
LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)  # a scanned history with no releasing decision: any later one wins


async def quarantine(
    tenant_id: str, device_id: str, *, cause: str, key_ids: tuple[str, ...], reasons: tuple[str, ...],
    correlation_id: str, source_ip: str | None, store: PolicyStore, targets: TargetCache,
    heartbeat_due: datetime | None = None,
) -> bool:
    """Quarantines the device (see PolicyStore.quarantine_device for ``heartbeat_due``) and says so."""
    reason, staged = posture.quarantine_events(tenant_id, device_id, cause=cause, key_ids=key_ids, reasons=reasons,
                                               correlation_id=correlation_id, source_ip=source_ip)
    matched = await store.quarantine_device(tenant_id, device_id, reason=reason, cause=cause, now=datetime.now(UTC),
                                            events=staged, heartbeat_due=heartbeat_due)
    if matched:
        targets.drop_device(tenant_id, device_id)
        await store.publish_staged("devices", tenant_id, *staged)
        log.info("device_quarantined", device_id=device_id, cause=cause)
    return matched


async def _clear(
    request: rpc.RpcRequest, device_id: str, reason: str, *, grace: int, store: PolicyStore, targets: TargetCache
) -> bool:
    cleared = events.DeviceQuarantineCleared(**event_fields(request), device_id=device_id, reason=reason)
    due = datetime.now(UTC) + timedelta(seconds=grace)
    matched = await store.clear_quarantine(request.tenant_id, device_id, heartbeat_due=due, event=cleared)
    if matched:
        targets.drop_device(request.tenant_id, device_id)
        await store.publish_staged("devices", request.tenant_id, cleared)
    return matched


async def releasing_policies(
    tenant_id: str, device: Mapping[str, Any], key_id: str, *, store: PolicyStore, cache: PolicyCache
) -> list[Policy] | None:
    """The policy versions that last released this key to this device: those its newest allowing
    decision evaluated (an approval counts once approved), as the device document keeps them. None
    when no record names them."""
    entry = decision.releaser(device, key_id)
    refs = entry["policies"] if entry is not None else await _scan_releaser(tenant_id, device["device_id"], key_id,
                                                                            store=store)
    if refs is None:
        return None
    policies = []
    for policy_id, version in refs:
        policy = await cache.version(tenant_id, policy_id, version)
        if policy is None:
            return None
        policies.append(policy)
    return policies


async def _scan_releaser(tenant_id: str, device_id: str, key_id: str, *, store: PolicyStore) -> list[list[Any]] | None:
    """A key released before devices kept their releasers: its newest allowing decision, found in
    the device's history once, then kept like any other."""
    decided_at, refs = LONG_AGO, None
    for doc in await store.releasing_decisions(tenant_id, device_id, key_id, limit=20):
        if doc["effect"] == "require_approval":
            approval = await store.approval_for_request(tenant_id, doc["request_id"])
            if approval is None or approval["status"] != "approved":
                continue
        decided_at, refs = doc["decided_at"], released_by(trace_record(doc))
        break
    await store.note_release(tenant_id, device_id, key_id, decided_at=decided_at, policies=refs)
    return refs


async def heartbeat(
    request: rpc.RpcRequest, params: c.Heartbeat, *, store: PolicyStore, cache: PolicyCache, targets: TargetCache,
    wake: Callable[[datetime], None],
) -> c.HeartbeatAnswer:
    """A device's fresh facts: re-check them, for every key it was released, against the policy
    versions that released that key; quarantine the device if they no longer pass, release it
    from quarantine if they pass again."""
    tenant_id, device_id, facts = request.tenant_id, params.device_id, params.facts
    doc = await store.device(tenant_id, device_id)
    if doc is None or doc.get("status") == "revoked":
        raise rpc.NotFound("device", "device_id")
    now = datetime.now(UTC)
    settings = await targets.settings(tenant_id)
    releasing = {}
    for key_id in sorted(doc.get("released_keys", [])):
        policies = await releasing_policies(tenant_id, doc, key_id, store=store, cache=cache)
        # None: released before decisions recorded their policy versions; the current ones govern.
        releasing[key_id] = policies if policies is not None else await cache.for_tenant(tenant_id)
    failing = posture.failing_keys(device_id, facts, device=await targets.device(tenant_id, device_id),
                                   groups=await targets.groups(tenant_id), releasing=releasing, now=now,
                                   provenance=params.provenance)
    grace = settings.heartbeat_grace_seconds
    due = now + timedelta(seconds=grace)
    await store.record_heartbeat(tenant_id, device_id, at=now, due=due, facts=facts, provenance=params.provenance or {})
    wake(due)
    status = doc.get("status", "active")
    verdict = posture.heartbeat_verdict(status, failing)
    if verdict == "quarantine" and await quarantine(
        tenant_id, device_id, cause="facts", key_ids=tuple(failing), reasons=posture.failure_reasons(failing),
        correlation_id=request.correlation_id, source_ip=request.source_ip, store=store, targets=targets,
    ):
        status = "quarantined"
    elif verdict == "clear" and await _clear(request, device_id, "fresh facts satisfy the policy again", grace=grace,
                                             store=store, targets=targets):
        status = "active"
    return c.HeartbeatAnswer(device_id=device_id, status=status, next_heartbeat_within_seconds=grace,
                             heartbeat_interval_seconds=posture.heartbeat_interval(grace))


async def clear_quarantine(
    request: rpc.RpcRequest, params: c.ClearQuarantine, *, store: PolicyStore, targets: TargetCache
) -> c.DeviceStatus:
    reason = (params.reason or "cleared by an operator")[:500]
    settings = await targets.settings(request.tenant_id)
    if not await _clear(request, params.device_id, reason, grace=settings.heartbeat_grace_seconds, store=store,
                        targets=targets):
        raise rpc.NotFound("quarantined device", "device_id")
    return c.DeviceStatus(device_id=params.device_id, status="active")


async def posture_counts(request: rpc.RpcRequest, params: c.NoParams, *, store: PolicyStore) -> c.PostureCounts:
    return c.PostureCounts(**await store.posture_counts(request.tenant_id))


async def get_posture(request: rpc.RpcRequest, params: c.DeviceRef, *, store: PolicyStore) -> c.Posture:
    doc = await store.device(request.tenant_id, params.device_id)
    if doc is None:
        raise rpc.NotFound("device", "device_id")
    keys = ("device_id", "status", "groups", "quarantine_reason", "quarantine_cause", "last_heartbeat_at",
            "heartbeat_due", "released_keys", "last_facts")
    facts = doc.get("last_facts")
    labels = labelled(facts, dict(doc.get("last_provenance") or [])) if facts is not None else None
    return c.Posture(**{k: doc.get(k) for k in keys}, last_facts_provenance=labels)
