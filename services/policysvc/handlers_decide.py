"""policysvc's release path: decide each key request, and keep the inputs of decisions fresh.

A decision loads everything it reads first (from caches kept fresh by events), decides in one
pure call, then records, publishes and notes the release. The record is keyed by request id:
on a redelivery the insert fails and the recorded decision is re-published (same event id),
so no request is decided twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from shared import events
from shared.events import Event, KeyDecided, KeyRequested

from . import approvals as voting
from .cache import PolicyCache, TargetCache
from .decision import DecisionInputs, DeviceState, decide, decision_document, released_by, trace_record
from .store import PolicyStore

log = structlog.get_logger("strongroom.policysvc")
Publish = Callable[[Event], Awaitable[None]]


async def dispatch(
    event: Event, *, store: PolicyStore, cache: PolicyCache, targets: TargetCache, publish: Publish,
    wake: Callable[[], None],
) -> None:
    """policysvc's work queue: key requests to decide, device events to project."""
    if isinstance(event, KeyRequested):
        await decide_request(event, store=store, cache=cache, targets=targets, publish=publish, wake=wake)
    elif isinstance(event, (events.DeviceEnrolled, events.DeviceRevoked)):
        await project_device(event, store=store)


async def gather(event: KeyRequested, *, cache: PolicyCache, targets: TargetCache, now: datetime) -> DecisionInputs:
    """Everything deciding this request reads, loaded before deciding."""
    tenant_id = event.tenant_id
    return DecisionInputs(
        request=event, now=now, device=await targets.device(tenant_id, event.device_id),
        groups=await targets.groups(tenant_id), policies=tuple(await cache.for_tenant(tenant_id)),
        remembered_until=(await targets.remembered(tenant_id)).get((event.device_id, event.key_id)),
        settings=await targets.settings(tenant_id),
    )


async def decide_request(
    event: KeyRequested, *, store: PolicyStore, cache: PolicyCache, targets: TargetCache, publish: Publish,
    wake: Callable[[], None] = lambda: None,
) -> None:
    """Load, decide, record, publish."""
    inputs = await gather(event, cache=cache, targets=targets, now=datetime.now(UTC))
    decided = decide(inputs)
    outcome = decided.outcome
    decided_at, record = inputs.now, decided.record
    if not await store.record_decision(event.tenant_id, decision_document(event, decided, inputs.now)):
        recorded = await store.find_decision(event.tenant_id, event.request_id)
        assert recorded is not None
        outcome = events.decode_event(recorded["outcome"].encode())
        assert isinstance(outcome, KeyDecided)
        decided_at, record = recorded["decided_at"], trace_record(recorded)
    if outcome.effect == "require_approval":
        # Opened before the agent hears 202, so operators can act on it as soon as anyone knows.
        doc, announced = voting.pending_approval(event, outcome, decided.approval)
        # A redelivery finds it opened; the outbox relay re-sends its event if never confirmed.
        if await store.open_approval(event.tenant_id, doc, announced):
            await store.publish_staged("approvals", event.tenant_id, announced)
        wake()
    releasers = released_by(record)
    if outcome.effect == "allow" and (event.key_id not in inputs.device.released_keys
                                      or inputs.device.released_by.get(event.key_id) != releasers):
        # Which keys a device holds and the policy versions that released each, what heartbeats
        # re-check: written when they change (an approval granted late checks for newer releases).
        await store.note_release(event.tenant_id, event.device_id, event.key_id, decided_at=decided_at,
                                 policies=releasers)
        targets.drop_device(event.tenant_id, event.device_id)
    await publish(outcome)
    log.info("key_request_decided", effect=outcome.effect, key_id=event.key_id, device_id=event.device_id)


async def project_device(event: Event, *, store: PolicyStore) -> None:
    """policysvc's own copy of the devices it decides for (never the gateway's database)."""
    if isinstance(event, events.DeviceEnrolled):
        await store.project_enrolled(event.tenant_id, event.device_id, name=event.name, groups=list(event.groups),
                                     at=event.occurred_at)
    elif isinstance(event, events.DeviceRevoked):
        await store.project_revoked(event.tenant_id, event.device_id, at=event.occurred_at)


async def refresh_targets(event: Event, *, targets: TargetCache) -> None:
    """Any instance's change to groups, devices, grants or settings: update or drop our copy."""
    if isinstance(event, events.DeviceEnrolled):
        targets.set_device(event.tenant_id, event.device_id, DeviceState(frozenset(event.groups), "active"))
    elif event.type.startswith("device."):
        targets.drop_device(event.tenant_id, getattr(event, "device_id", ""))
    elif event.type.startswith("group."):
        targets.drop_groups(event.tenant_id)
    elif isinstance(event, events.ApprovalGranted):
        targets.drop_remembered(event.tenant_id)
        targets.drop_device(event.tenant_id, event.device_id)
    elif isinstance(event, events.PolicySettingsUpdated):
        targets.drop_settings(event.tenant_id)


async def forget_tenant_policies(event: Event, *, cache: PolicyCache) -> None:
    cache.drop(event.tenant_id)
