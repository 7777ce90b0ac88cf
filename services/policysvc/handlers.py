"""policysvc's handlers: decide key requests, and the operators' policy operations.

Policies are cached per tenant as compiled objects and refreshed by `policy.*` events, so
a decision costs one evaluation and one write (the recorded decision, which also makes a
redelivered request idempotent).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from shared import commands, events, rpc
from shared import outbox as outbox_entry
from shared.events import Event, KeyDecided, KeyRequested
from shared.outbox import Outbox
from shared.store import DuplicateKeyError

from . import approvals as voting
from . import policy as engine
from .cache import DeviceState, TargetCache
from .rules import Approval, Policy, PolicyError, parse_policy
from .store import PolicyStore

log = structlog.get_logger("strongroom.policysvc")
Publish = Callable[[Event], Awaitable[None]]
MAX_CACHED_VERSIONS = 10_000


class PolicyCache:
    """Compiled policies per tenant; a tenant's entry is dropped whenever one of its policies changes."""

    def __init__(self, store: PolicyStore):
        self._store = store
        self._tenants: dict[str, list[Policy]] = {}
        self._versions: dict[tuple[str, str, int], Policy] = {}

    async def for_tenant(self, tenant_id: str) -> list[Policy]:
        cached = self._tenants.get(tenant_id)
        if cached is None:
            heads = await self._store.active_policies(tenant_id)
            cached = [parse_policy(h["document"], policy_id=h["policy_id"], version=h["version"]) for h in heads]
            self._tenants[tenant_id] = cached
        return cached

    def drop(self, tenant_id: str) -> None:
        self._tenants.pop(tenant_id, None)

    async def version(self, tenant_id: str, policy_id: str, version: int) -> Policy | None:
        """One compiled policy version, current or not (versions never change, so they stay cached)."""
        entry = (tenant_id, policy_id, version)
        cached = self._versions.get(entry)
        if cached is None:
            doc = await self._store.versions.find_one(tenant_id, {"policy_id": policy_id, "version": version})
            if doc is None:
                return None
            cached = self._versions[entry] = parse_policy(doc["document"], policy_id=policy_id, version=version)
            if len(self._versions) > MAX_CACHED_VERSIONS:
                self._versions.pop(next(iter(self._versions)))
        return cached


async def applicable(
    tenant_id: str, device_id: str, key_id: str, facts: dict[str, Any], *, device: DeviceState,
    policies: list[Policy], targets: TargetCache, now: datetime,
) -> list[Policy]:
    """The policies that govern this device asking for this key, groups computed from the cache."""
    groups = await targets.groups(tenant_id)
    device_groups = groups.device_groups(device_id, device.enrolled_groups, facts, now=now)
    key_groups = set(groups.key_groups(key_id))
    return [p for p in policies if engine.applies_to(p, device_id, device_groups, key_id, key_groups)]


async def dispatch(
    event: Event, *, store: PolicyStore, cache: PolicyCache, targets: TargetCache, outbox: Outbox,
    publish: Publish, wake: Callable[[], None],
) -> None:
    """policysvc's work queue: key requests to decide, device events to project."""
    if isinstance(event, KeyRequested):
        await decide(event, store=store, cache=cache, targets=targets, outbox=outbox, publish=publish, wake=wake)
    elif isinstance(event, (events.DeviceEnrolled, events.DeviceRevoked)):
        await project_device(event, store=store)


async def decide(
    event: Event, *, store: PolicyStore, cache: PolicyCache, targets: TargetCache, outbox: Outbox,
    publish: Publish, wake: Callable[[], None] = lambda: None,
) -> None:
    """Evaluate, record, publish. The record is keyed by request id: on a redelivery the insert
    fails and the recorded decision is re-published (same event id), so no request is decided twice."""
    if not isinstance(event, KeyRequested):
        return
    now = datetime.now(UTC)
    device = await targets.device(event.tenant_id, event.device_id)
    approval_terms = None
    record = None
    common = dict(
        request_id=event.request_id, device_id=event.device_id, key_id=event.key_id, key_version=event.key_version,
        ephemeral_public_key=event.ephemeral_public_key,
    )
    if device.status == "quarantined":
        # SECURITY: a quarantined device gets nothing until cleared or its facts pass again.
        reason = f"device is quarantined: {device.quarantine_reason}"
        outcome = event.caused(
            KeyDecided, effect="deny", reasons=(reason,), disclosed={"effect": "deny", "reasons": ["device is quarantined"]},
            **common,
        )
    else:
        policies = await applicable(
            event.tenant_id, event.device_id, event.key_id, event.facts, device=device,
            policies=await cache.for_tenant(event.tenant_id), targets=targets, now=now,
        )
        decision = engine.evaluate(policies, event.facts, now=now)
        effect, reasons = decision.effect, decision.reasons
        # An allowed agent gets its key, not an explanation: render the disclosure only when it is read.
        disclosed = {"effect": "allow"} if effect == "allow" else decision.disclosed()
        if effect == "require_approval":
            until = (await targets.remembered(event.tenant_id)).get((event.device_id, event.key_id))
            effect, remembered = standing(effect, device=device, remembered_until=until, now=now)
            if remembered is not None:
                reasons = (*reasons, remembered)
                disclosed = {**disclosed, "effect": "allow", "reasons": [*disclosed.get("reasons", []), remembered]}
            else:
                assert decision.approval is not None
                settings = await targets.settings(event.tenant_id)
                expires_at = now + timedelta(seconds=voting.expiry_seconds(decision.approval.expires_in_seconds, settings))
                disclosed = {**disclosed, "approval_id": "apr_" + event.request_id.removeprefix("req_"),
                             "expires_at": expires_at.isoformat()}
        # The full trace stays here, in the decision record; the event carries the compact trace
        # and the record's digest, so the audit log commits to every value without storing it.
        record = decision.record(now)
        outcome = event.caused(
            KeyDecided, effect=effect, reasons=reasons, disclosed=disclosed, trace=decision.compact_trace,
            trace_sha256=engine.record_digest(record),
            decided_by=tuple(ref._asdict() for ref in decision.decided_by), **common,
        )
        approval_terms = decision.approval
    doc = {
        "request_id": event.request_id,
        "device_id": event.device_id,
        "key_id": event.key_id,
        "facts": event.facts,
        "effect": outcome.effect,
        "decided_at": now,
        "outcome": outcome.model_dump_json(),
        # Decision.record(), the full trace as digested, deflated: ~7 KB of JSON for 50 rules
        # becomes ~1.4 KB, which is most of what a decision costs the store.
        "trace_record": zlib.compress(record.encode(), 1) if record is not None else None,
    }
    if not await store.record_decision(event.tenant_id, doc):
        recorded = await store.find_decision(event.tenant_id, event.request_id)
        assert recorded is not None
        outcome = events.decode_event(recorded["outcome"].encode())
    if outcome.effect == "require_approval":
        # Opened before the agent hears 202, so operators can act on it as soon as anyone knows.
        await _open_approval(event, outcome, approval_terms, store=store, outbox=outbox)
        wake()
    await publish(outcome)
    if outcome.effect == "allow" and event.key_id not in device.released_keys:
        await note_release(event.tenant_id, event.device_id, event.key_id, store=store, targets=targets)
    log.info("key_request_decided", effect=outcome.effect, key_id=event.key_id, device_id=event.device_id)


def standing(
    effect: str, *, device: DeviceState, remembered_until: datetime | None, now: datetime
) -> tuple[str, str | None]:
    """The policy's effect once the device's standing is applied, and the reason if it changed it:
    a quarantined device is denied whatever the policy says; an approval remembered for this
    device and key, still in force, stands in for a new one."""
    if device.status == "quarantined":
        return "deny", f"device is quarantined: {device.quarantine_reason}"
    if effect == "require_approval" and remembered_until is not None and remembered_until > now:
        return "allow", f"approved earlier and remembered for this device and key until {remembered_until.isoformat()}"
    return effect, None


async def note_release(tenant_id: str, device_id: str, key_id: str, *, store: PolicyStore, targets: TargetCache) -> None:
    """Remembers which keys a device holds, once per key, so heartbeats know what to re-check."""
    await store.devices.update_one(tenant_id, {"device_id": device_id}, {"$addToSet": {"released_keys": key_id}}, upsert=True)
    targets.drop_device(tenant_id, device_id)


async def _open_approval(
    requested: KeyRequested, outcome: Any, terms: Any, *, store: PolicyStore, outbox: Outbox
) -> None:
    """The pending approval, created once per request (a redelivery finds it and does nothing)."""
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
    try:
        await store.approvals.insert(requested.tenant_id, outbox_entry.staged(doc, announced))
    except DuplicateKeyError:
        return  # already opened; the outbox relay re-sends its event if it was never confirmed
    await outbox.publish(store.approvals.raw, requested.tenant_id, announced)


async def project_device(event: Event, *, store: PolicyStore) -> None:
    """policysvc's own copy of the devices it decides for (never the gateway's database)."""
    if isinstance(event, events.DeviceEnrolled):
        await store.devices.update_one(
            event.tenant_id, {"device_id": event.device_id},
            {"$set": {"name": event.name, "groups": list(event.groups), "enrolled_at": event.occurred_at},
             "$setOnInsert": {"status": "active"}},
            upsert=True,
        )
    elif isinstance(event, events.DeviceRevoked):
        await store.devices.update_one(
            event.tenant_id, {"device_id": event.device_id},
            {"$set": {"status": "revoked", "revoked_at": event.occurred_at}}, upsert=True,
        )


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


# --- operator operations -------------------------------------------------------------


def _view(head: dict[str, Any]) -> dict[str, Any]:
    return {
        "policy_id": head["policy_id"],
        "version": head["version"],
        "name": head["name"],
        "updated_at": head["updated_at"].isoformat(),
        "updated_by": head.get("updated_by"),
        "document": head["document"],
    }


async def put_policy(
    request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore, cache: PolicyCache, outbox: Outbox
) -> dict[str, Any]:
    """Creates a policy (no policy_id) or a new version of one; validates before storing anything."""
    try:
        cmd = commands.PutPolicy.model_validate(params.get("policy", {}))
    except Exception as exc:
        err = exc.errors()[0]  # type: ignore[attr-defined]
        field = ".".join(str(p) for p in err["loc"])
        raise rpc.ProblemError(422, "Unprocessable Content", f"{field}: {err['msg']}", field) from None
    document = cmd.model_dump()
    policy_id = params.get("policy_id") or events.new_id("pol_")
    current = await store.head(request.tenant_id, policy_id) if params.get("policy_id") else None
    if params.get("policy_id") and current is None:
        raise rpc.NotFound("policy", "policy_id")
    version = (current["version"] if current else 0) + 1
    try:
        parse_policy(document, policy_id=policy_id, version=version)
    except PolicyError as exc:
        raise rpc.ProblemError(422, "Unprocessable Content", f"{exc.path}: {exc.message}", exc.path or None) from None
    head = {
        "policy_id": policy_id,
        "version": version,
        "name": cmd.name,
        "document": document,
        "updated_at": datetime.now(UTC),
        "updated_by": request.actor.id,
        "deleted": False,
    }
    event = events.PolicyUpdated(
        tenant_id=request.tenant_id, correlation_id=request.correlation_id, actor=request.actor,
        source_ip=request.source_ip, policy_id=policy_id, policy_version=version, name=cmd.name, document=document,
    )
    try:
        saved = await store.put_version(request.tenant_id, head, version - 1, event)
    except DuplicateKeyError:
        raise rpc.ProblemError(409, "Conflict", f"a policy named {cmd.name!r} exists", "name") from None
    if not saved:
        raise rpc.ProblemError(409, "Conflict", "the policy changed concurrently; retry")
    cache.drop(request.tenant_id)
    await outbox.publish(store.policies.raw, request.tenant_id, event)
    return _view(head)


async def get_policy(request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore) -> dict[str, Any]:
    head = await store.head(request.tenant_id, str(params.get("policy_id", "")))
    if head is None:
        raise rpc.NotFound("policy", "policy_id")
    return _view(head)


async def list_policies(request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore) -> dict[str, Any]:
    return {"items": [_view(h) for h in await store.active_policies(request.tenant_id)]}


async def delete_policy(
    request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore, cache: PolicyCache, outbox: Outbox
) -> dict[str, Any]:
    policy_id = str(params.get("policy_id", ""))
    event = events.PolicyDeleted(
        tenant_id=request.tenant_id, correlation_id=request.correlation_id, actor=request.actor,
        source_ip=request.source_ip, policy_id=policy_id,
    )
    matched = await store.policies.update_one(
        request.tenant_id, {"policy_id": policy_id, "deleted": False},
        {"$set": {"deleted": True, "updated_at": datetime.now(UTC)}, **outbox_entry.push(event)},
    )
    if not matched:
        raise rpc.NotFound("policy", "policy_id")
    cache.drop(request.tenant_id)
    await outbox.publish(store.policies.raw, request.tenant_id, event)
    return {"policy_id": policy_id, "deleted": True}


def _problem_from_policy_error(exc: PolicyError, prefix: str = "") -> rpc.ProblemError:
    path = f"{prefix}.{exc.path}" if prefix and exc.path and not exc.path.startswith("[") else prefix + exc.path
    return rpc.ProblemError(422, "Unprocessable Content", f"{path or '<document>'}: {exc.message}", path or None)


def _event_fields(request: rpc.RpcRequest) -> dict[str, Any]:
    return {"tenant_id": request.tenant_id, "correlation_id": request.correlation_id, "actor": request.actor,
            "source_ip": request.source_ip}


# --- policy versions -----------------------------------------------------------------


def _version_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "policy_id": doc["policy_id"], "version": doc["version"], "name": doc["name"],
        "updated_at": doc["updated_at"].isoformat(), "updated_by": doc.get("updated_by"),
        "restored_from": doc.get("restored_from"), "document": doc["document"],
    }


async def list_policy_versions(request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore) -> dict[str, Any]:
    policy_id = str(params.get("policy_id", ""))
    docs = await store.versions.find(request.tenant_id, {"policy_id": policy_id}, sort=[("version", -1)])
    if not docs:
        raise rpc.NotFound("policy", "policy_id")
    head = await store.policies.find_one(request.tenant_id, {"policy_id": policy_id})
    current = head["version"] if head and not head.get("deleted") else None
    return {"items": [{**_version_view(d), "current": d["version"] == current} for d in docs]}


async def get_policy_version(request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore) -> dict[str, Any]:
    doc = await store.versions.find_one(
        request.tenant_id, {"policy_id": str(params.get("policy_id", "")), "version": params.get("version")}
    )
    if doc is None:
        raise rpc.NotFound("policy version", "version")
    return _version_view(doc)


async def restore_policy_version(
    request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore, cache: PolicyCache, outbox: Outbox
) -> dict[str, Any]:
    """Makes an older version's document the policy's newest version (history is never rewritten)."""
    old = await get_policy_version(request, params, store=store)
    restored = await put_policy(
        request, {"policy_id": old["policy_id"], "policy": old["document"]}, store=store, cache=cache, outbox=outbox
    )
    await store.versions.update_one(
        request.tenant_id, {"policy_id": old["policy_id"], "version": restored["version"]},
        {"$set": {"restored_from": old["version"]}},
    )
    return {**restored, "restored_from": old["version"]}


# --- groups ----------------------------------------------------------------------------


def _group_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {"group_id": doc["group_id"], "version": doc["version"], **doc["document"],
            "updated_at": doc["updated_at"].isoformat(), "updated_by": doc.get("updated_by")}


async def put_group(
    request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore, targets: TargetCache, outbox: Outbox
) -> dict[str, Any]:
    """Creates a group (no group_id) or replaces one; validated in full before anything is stored."""
    from .groups import parse_group

    document = params.get("group")
    group_id = params.get("group_id") or events.new_id("grp_")
    try:
        group = parse_group(document if isinstance(document, dict) else {}, group_id=group_id)
    except PolicyError as exc:
        raise _problem_from_policy_error(exc) from None
    current = None
    if params.get("group_id"):
        current = await store.groups.find_one(request.tenant_id, {"group_id": group_id, "deleted": False})
        if current is None:
            raise rpc.NotFound("group", "group_id")
        if current["document"]["kind"] != group.kind:
            raise rpc.ProblemError(422, "Unprocessable Content", "kind: a group's kind cannot change", "kind")
    version = (current["version"] if current else 0) + 1
    event = events.GroupUpdated(**_event_fields(request), group_id=group_id, kind=group.kind, name=group.name,
                                group_version=version, document=document)
    doc = {"group_id": group_id, "name": group.name, "version": version, "document": document,
           "updated_at": datetime.now(UTC), "updated_by": request.actor.id, "deleted": False}
    try:
        if current is None:
            await store.groups.insert(request.tenant_id, outbox_entry.staged(doc, event))
            saved = True
        else:
            saved = bool(await store.groups.update_one(
                request.tenant_id, {"group_id": group_id, "version": current["version"]},
                {"$set": doc, **outbox_entry.push(event)},
            ))
    except DuplicateKeyError:
        raise rpc.ProblemError(409, "Conflict", f"a group named {group.name!r} exists", "name") from None
    if not saved:
        raise rpc.ProblemError(409, "Conflict", "the group changed concurrently; retry")
    targets.drop_groups(request.tenant_id)
    await outbox.publish(store.groups.raw, request.tenant_id, event)
    return _group_view(doc)


async def get_group(request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore) -> dict[str, Any]:
    doc = await store.groups.find_one(request.tenant_id, {"group_id": str(params.get("group_id", "")), "deleted": False})
    if doc is None:
        raise rpc.NotFound("group", "group_id")
    return _group_view(doc)


async def list_groups(request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore) -> dict[str, Any]:
    query: dict[str, Any] = {"deleted": False}
    if params.get("kind") in ("device", "key"):
        query["document.kind"] = params["kind"]
    return {"items": [_group_view(d) for d in await store.groups.find(request.tenant_id, query, sort=[("name", 1)])]}


async def delete_group(
    request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore, targets: TargetCache, outbox: Outbox
) -> dict[str, Any]:
    group_id = str(params.get("group_id", ""))
    doc = await store.groups.find_one(request.tenant_id, {"group_id": group_id, "deleted": False})
    if doc is None:
        raise rpc.NotFound("group", "group_id")
    event = events.GroupDeleted(**_event_fields(request), group_id=group_id, kind=doc["document"]["kind"], name=doc["name"])
    # The name is freed for reuse: a deleted group keeps its id, not its unique name.
    matched = await store.groups.update_one(
        request.tenant_id, {"group_id": group_id, "deleted": False},
        {"$set": {"deleted": True, "name": f"{doc['name']}#deleted#{group_id}", "updated_at": datetime.now(UTC)},
         **outbox_entry.push(event)},
    )
    if not matched:
        raise rpc.NotFound("group", "group_id")
    targets.drop_groups(request.tenant_id)
    await outbox.publish(store.groups.raw, request.tenant_id, event)
    return {"group_id": group_id, "deleted": True}


# --- tenant settings -------------------------------------------------------------------


async def get_settings(request: rpc.RpcRequest, params: dict[str, Any], *, targets: TargetCache) -> dict[str, Any]:
    return (await targets.settings(request.tenant_id)).model_dump()


async def put_settings(
    request: rpc.RpcRequest, settings: voting.PolicySettings, *, store: PolicyStore, targets: TargetCache, outbox: Outbox
) -> dict[str, Any]:
    event = events.PolicySettingsUpdated(**_event_fields(request), settings=settings.model_dump())
    await store.settings.update_one(
        request.tenant_id, {}, {"$set": {"settings": settings.model_dump(), "updated_by": request.actor.id},
                                **outbox_entry.push(event)}, upsert=True,
    )
    targets.drop_settings(request.tenant_id)
    await outbox.publish(store.settings.raw, request.tenant_id, event)
    return settings.model_dump()


# --- approvals -------------------------------------------------------------------------


def _approval_view(doc: dict[str, Any]) -> dict[str, Any]:
    keys = ("approval_id", "request_id", "device_id", "key_id", "key_version", "status", "approvals_required",
            "remember_for_seconds", "expires_at", "requested_at", "reasons", "decided_by", "decided_at", "comment")
    view = {k: doc.get(k) for k in keys}
    view["votes"] = [{"by": v["by"], "at": v["at"], "comment": v.get("comment", "")} for v in doc.get("votes", [])]
    view["approvals_received"] = len(view["votes"])
    return view


async def list_approvals(request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore) -> dict[str, Any]:
    query: dict[str, Any] = {}
    status = params.get("status")
    if status is not None:
        if status not in ("pending", "approved", "denied", "expired"):
            raise rpc.ProblemError(400, "Bad Request", "status must be pending, approved, denied or expired", "status")
        query["status"] = status
    limit = min(max(int(params.get("limit") or 100), 1), 1000)
    docs = await store.approvals.find(request.tenant_id, query, sort=[("requested_at", -1)], limit=limit)
    return {"items": [_approval_view(d) for d in docs]}


async def get_approval(request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore) -> dict[str, Any]:
    doc = await store.approvals.find_one(request.tenant_id, {"approval_id": str(params.get("approval_id", ""))})
    if doc is None:
        raise rpc.NotFound("approval", "approval_id")
    return _approval_view(doc)


def _final_decision(doc: dict[str, Any], cause: Event, effect: str, reason: str) -> KeyDecided:
    """The original request's outcome, for its original request id and one-time public key."""
    requested = events.decode_event(doc["requested_event"].encode())
    assert isinstance(requested, KeyDecided)
    disclosed = {"effect": effect, "reasons": [reason]} if effect != "allow" else {"effect": "allow"}
    return cause.caused(
        KeyDecided, request_id=doc["request_id"], device_id=doc["device_id"], key_id=doc["key_id"],
        key_version=doc.get("key_version"), effect=effect, reasons=(*requested.reasons, reason),
        disclosed=disclosed, trace=requested.trace, trace_sha256=requested.trace_sha256, decided_by=requested.decided_by,
        ephemeral_public_key=doc["ephemeral_public_key"],
    )


async def vote(
    request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore, targets: TargetCache, outbox: Outbox
) -> dict[str, Any]:
    """Approve or deny a pending approval. Approvals count once per person; m of them release."""
    approval_id = str(params.get("approval_id", ""))
    verdict = params.get("verdict")
    comment = str(params.get("comment") or "")[:1000]
    now = datetime.now(UTC)
    doc = await store.approvals.find_one(request.tenant_id, {"approval_id": approval_id})
    if doc is None:
        raise rpc.NotFound("approval", "approval_id")
    if doc["status"] == "pending" and doc["expires_at"] <= now:
        await expire_approval(doc, store=store, outbox=outbox)
        doc = await store.approvals.find_one(request.tenant_id, {"approval_id": approval_id}) or doc
    person = request.actor.id
    try:
        voting.check_vote(doc, person, now=now) if verdict == "approve" else voting.check_vote(
            {**doc, "votes": [], "requested_by": None}, person, now=now)
    except voting.VoteRefused as exc:
        raise rpc.ProblemError(exc.status, exc.title, exc.detail, "approval_id") from None
    fields = {**_event_fields(request), "correlation_id": doc.get("correlation_id") or request.correlation_id}
    common = {"approval_id": approval_id, "request_id": doc["request_id"]}
    if verdict == "deny":
        denied = events.ApprovalDenied(**fields, **common, device_id=doc["device_id"], key_id=doc["key_id"], comment=comment)
        final = _final_decision(doc, denied, "deny", f"approval denied by {person}" + (f": {comment}" if comment else ""))
        matched = await store.approvals.update_one(
            request.tenant_id, {"approval_id": approval_id, "status": "pending"},
            {"$set": {"status": "denied", "decided_at": now, "comment": comment},
             "$push": {outbox_entry.FIELD: {"$each": [outbox_entry.entry(denied), outbox_entry.entry(final)]}}},
        )
        if not matched:
            raise rpc.ProblemError(409, "Conflict", "the approval was decided concurrently", "approval_id")
        await outbox.publish(store.approvals.raw, request.tenant_id, denied)
        await outbox.publish(store.approvals.raw, request.tenant_id, final)
        return _approval_view(await store.approvals.find_one(request.tenant_id, {"approval_id": approval_id}) or doc)

    ballot = {"by": person, "at": now, "comment": comment}
    votes = [*doc.get("votes", []), ballot]
    satisfied = voting.is_satisfied({**doc, "votes": votes})
    update: dict[str, Any] = {"$push": {"votes": ballot}}
    voted = None
    if not satisfied:
        voted = events.ApprovalVoted(**fields, **common, approvals_received=len(votes),
                                     approvals_required=doc["approvals_required"], comment=comment)
        update["$push"][outbox_entry.FIELD] = outbox_entry.entry(voted)
    # Compare-and-swap on the votes seen: a concurrent vote makes this one retry, never double-count.
    matched = await store.approvals.update_one(
        request.tenant_id, {"approval_id": approval_id, "status": "pending", "votes": doc.get("votes", [])}, update
    )
    if not matched:
        raise rpc.ProblemError(409, "Conflict", "the approval changed concurrently; retry", "approval_id")
    if voted is not None:
        await outbox.publish(store.approvals.raw, request.tenant_id, voted)
        return _approval_view({**doc, "votes": votes})

    remember_until = now + timedelta(seconds=doc["remember_for_seconds"]) if doc.get("remember_for_seconds") else None
    approvers = tuple(v["by"] for v in votes)
    granted = events.ApprovalGranted(
        **fields, **common, device_id=doc["device_id"], key_id=doc["key_id"], approvers=approvers, comment=comment,
        remember_until=remember_until,
    )
    final = _final_decision(doc, granted, "allow", f"approved by {', '.join(approvers)}")
    matched = await store.approvals.update_one(
        request.tenant_id, {"approval_id": approval_id, "status": "pending"},
        {"$set": {"status": "approved", "decided_at": now, "comment": comment},
         "$push": {outbox_entry.FIELD: {"$each": [outbox_entry.entry(granted), outbox_entry.entry(final)]}}},
    )
    if not matched:
        raise rpc.ProblemError(409, "Conflict", "the approval was decided concurrently", "approval_id")
    if remember_until is not None:
        await store.remembered.update_one(
            request.tenant_id, {"device_id": doc["device_id"], "key_id": doc["key_id"]},
            {"$set": {"until": remember_until, "approval_id": approval_id}}, upsert=True,
        )
        targets.drop_remembered(request.tenant_id)
    await store.devices.update_one(
        request.tenant_id, {"device_id": doc["device_id"]}, {"$addToSet": {"released_keys": doc["key_id"]}}, upsert=True
    )
    targets.drop_device(request.tenant_id, doc["device_id"])
    await outbox.publish(store.approvals.raw, request.tenant_id, granted)
    await outbox.publish(store.approvals.raw, request.tenant_id, final)
    log.info("approval_granted", approval_id=approval_id, approvers=len(approvers))
    return _approval_view({**doc, "votes": votes, "status": "approved", "decided_at": now, "comment": comment})


async def expire_approval(doc: dict[str, Any], *, store: PolicyStore, outbox: Outbox) -> bool:
    """Pending past its deadline: the request is denied; its one-time key is never used again."""
    tenant_id = doc["tenant_id"]
    expired = events.ApprovalExpired(
        tenant_id=tenant_id, correlation_id=doc.get("correlation_id") or events.new_id(),
        approval_id=doc["approval_id"], request_id=doc["request_id"], device_id=doc["device_id"], key_id=doc["key_id"],
    )
    final = _final_decision(doc, expired, "deny", "approval expired before enough approvals")
    matched = await store.approvals.update_one(
        tenant_id, {"approval_id": doc["approval_id"], "status": "pending"},
        {"$set": {"status": "expired", "decided_at": datetime.now(UTC)},
         "$push": {outbox_entry.FIELD: {"$each": [outbox_entry.entry(expired), outbox_entry.entry(final)]}}},
    )
    if matched:
        await outbox.publish(store.approvals.raw, tenant_id, expired)
        await outbox.publish(store.approvals.raw, tenant_id, final)
        log.info("approval_expired", approval_id=doc["approval_id"])
    return bool(matched)


async def request_status(request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore) -> dict[str, Any]:
    """An agent polls its own request: pending, approved/allowed (keysvc has the sealed key), denied, expired."""
    decision = await store.decisions.find_one(
        request.tenant_id, {"request_id": str(params.get("request_id", "")), "device_id": str(params.get("device_id", ""))}
    )
    if decision is None:
        raise rpc.NotFound("key request", "request_id")
    outcome = events.decode_event(decision["outcome"].encode())
    assert isinstance(outcome, KeyDecided)
    status = {"allow": "allowed", "deny": "denied"}.get(outcome.effect, "pending")
    answer: dict[str, Any] = {"request_id": outcome.request_id, "status": status, "disclosed": outcome.disclosed}
    if outcome.effect == "require_approval":
        approval = await store.approvals.find_one(request.tenant_id, {"request_id": outcome.request_id})
        if approval is not None:
            answer["status"] = approval["status"]
            answer["approvals_required"] = approval["approvals_required"]
            answer["approvals_received"] = len(approval.get("votes", []))
            answer["expires_at"] = approval["expires_at"].isoformat()
            if approval["status"] == "denied":
                answer["disclosed"] = {"effect": "deny", "reasons": ["approval denied"]}
            elif approval["status"] == "expired":
                answer["disclosed"] = {"effect": "deny", "reasons": ["approval expired"]}
    return answer


# --- explained decisions -----------------------------------------------------------------


def _decision_view(doc: dict[str, Any], *, full: bool) -> dict[str, Any]:
    outcome = events.decode_event(doc["outcome"].encode())
    assert isinstance(outcome, KeyDecided)
    view = {
        "request_id": doc["request_id"], "device_id": doc["device_id"], "key_id": doc["key_id"],
        "effect": doc["effect"], "decided_at": doc["decided_at"].isoformat(), "reasons": list(outcome.reasons),
        "decided_by": [dict(r) for r in outcome.decided_by],
    }
    if full:
        view |= {"trace": [dict(t) for t in outcome.trace], "disclosed_to_agent": outcome.disclosed, "facts": doc["facts"],
                 "trace_sha256": outcome.trace_sha256, "trace_record": trace_record(doc)}
    return view


def trace_record(doc: dict[str, Any]) -> str | None:
    """A decision's full trace record as text (stored deflated; older decisions kept it as text)."""
    stored = doc.get("trace_record")
    if isinstance(stored, bytes):
        return zlib.decompress(stored).decode()
    return stored or None


async def _full_trace(tenant_id: str, record: str, *, store: PolicyStore) -> list[dict[str, Any]]:
    """Every rule evaluated, each with the fact tests it ran: rebuilt from the decision's canonical
    record and the policy versions it names (versions are never rewritten)."""
    policies = []
    for ref in json.loads(record)["policies"]:
        version = await store.versions.find_one(tenant_id, {"policy_id": ref["policy"], "version": ref["version"]})
        if version is None:
            raise rpc.ProblemError(500, "Internal Server Error", f"policy version {ref['policy']} v{ref['version']} is gone")
        policies.append(parse_policy(version["document"], policy_id=ref["policy"], version=ref["version"]))
    return engine.Decision.from_record(record, policies).disclosed("full")["trace"]


async def get_decision(request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore) -> dict[str, Any]:
    doc = await store.find_decision(request.tenant_id, str(params.get("request_id", "")))
    if doc is None:
        raise rpc.NotFound("decision", "request_id")
    view = _decision_view(doc, full=True)
    if record := view["trace_record"]:
        view["trace"] = await _full_trace(request.tenant_id, record, store=store)
        # Anyone holding the audit record can check it: sha256(trace_record) == its trace_sha256.
        view["trace_verified"] = engine.record_digest(record) == view["trace_sha256"]
    approval = await store.approvals.find_one(request.tenant_id, {"request_id": doc["request_id"]})
    if approval is not None:
        view["approval"] = _approval_view(approval)
    return view


async def list_decisions(request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore) -> dict[str, Any]:
    query = {k: str(params[k]) for k in ("device_id", "key_id", "effect") if params.get(k)}
    try:
        limit = min(max(int(params.get("limit") or 100), 1), 1000)
    except ValueError:
        raise rpc.ProblemError(400, "Bad Request", "limit must be an integer", "limit") from None
    docs = await store.decisions.find(request.tenant_id, query, projection={"trace_record": 0, "facts": 0},
                                      sort=[("decided_at", -1)], limit=limit)
    return {"items": [_decision_view(d, full=False) for d in docs]}


# --- dry-run and replay ------------------------------------------------------------------

MAX_SIMULATED_REQUESTS = 5000


async def simulate(
    request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore, cache: PolicyCache, targets: TargetCache
) -> dict[str, Any]:
    """Each request decided under the current policies and under the candidate; nothing is released,
    recorded or published. The candidate replaces the policy named by ``policy_id`` or is added.
    Both decisions take the device's standing as it is now, as a real request would: a quarantined
    device is denied, and an approve-and-remember grant in force allows what needs approval."""
    try:
        cmd = commands.PutPolicy.model_validate(params.get("policy") or {})
    except Exception as exc:
        err = exc.errors()[0]  # type: ignore[attr-defined]
        field = "policy." + ".".join(str(p) for p in err["loc"])
        raise rpc.ProblemError(422, "Unprocessable Content", f"{field}: {err['msg']}", field) from None
    replaces = params.get("policy_id")
    current = await cache.for_tenant(request.tenant_id)
    if replaces and not any(p.id == replaces for p in current):
        raise rpc.NotFound("policy", "policy_id")
    try:
        candidate = parse_policy(cmd.model_dump(), policy_id=replaces or "candidate", version=0)
    except PolicyError as exc:
        raise _problem_from_policy_error(exc, "policy") from None
    candidates = [p for p in current if p.id != replaces] + [candidate]

    now = datetime.now(UTC)
    if params.get("recorded_days") is not None:
        days = params["recorded_days"]
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 90:
            raise rpc.ProblemError(422, "Unprocessable Content", "recorded_days must be 1 to 90", "recorded_days")
        recorded = await store.decisions.find(
            request.tenant_id, {"decided_at": {"$gte": now - timedelta(days=days)}},
            projection={"request_id": 1, "device_id": 1, "key_id": 1, "facts": 1, "decided_at": 1},
            sort=[("decided_at", -1)], limit=MAX_SIMULATED_REQUESTS,
        )
        cases = [(d["request_id"], d["device_id"], d["key_id"], d["facts"], d["decided_at"]) for d in recorded]
    else:
        given = params.get("requests")
        if not isinstance(given, list) or not 1 <= len(given) <= MAX_SIMULATED_REQUESTS:
            raise rpc.ProblemError(
                422, "Unprocessable Content",
                f"give requests (1 to {MAX_SIMULATED_REQUESTS}) or recorded_days", "requests")
        cases = []
        for i, item in enumerate(given):
            if not isinstance(item, dict):
                raise rpc.ProblemError(422, "Unprocessable Content", f"requests[{i}]: must be an object", f"requests[{i}]")
            for name in ("device_id", "key_id"):
                if not isinstance(item.get(name), str) or not item[name]:
                    raise rpc.ProblemError(422, "Unprocessable Content", f"requests[{i}].{name}: required string",
                                           f"requests[{i}].{name}")
            facts = item.get("facts", {})
            if not isinstance(facts, dict):
                raise rpc.ProblemError(422, "Unprocessable Content", f"requests[{i}].facts: must be an object",
                                       f"requests[{i}].facts")
            cases.append((f"sim_{i}", item["device_id"], item["key_id"], facts, now))

    remembered = await targets.remembered(request.tenant_id)
    items: list[dict[str, Any]] = []
    latest: dict[tuple[str, str], tuple[str, str]] = {}  # (device, key) -> (current, candidate), newest request
    for request_id, device_id, key_id, facts, at in cases:
        device = await targets.device(request.tenant_id, device_id)
        outcomes = []
        for policy_set in (current, candidates):
            chosen = await applicable(request.tenant_id, device_id, key_id, facts, device=device,
                                      policies=policy_set, targets=targets, now=at)
            decision = engine.evaluate(chosen, facts, now=at)
            effect, because = standing(decision.effect, device=device, remembered_until=remembered.get((device_id, key_id)),
                                       now=now)
            outcomes.append((effect, (because,) if because else decision.reasons))
        (before, _), (after, after_reasons) = outcomes
        items.append({
            "request_id": request_id, "device_id": device_id, "key_id": key_id, "current": before,
            "candidate": after, "changed": before != after,
            "candidate_reasons": list(after_reasons) if before != after else [],
        })
        latest.setdefault((device_id, key_id), (before, after))
    gained = [{"device_id": d, "key_id": k} for (d, k), (b, a) in latest.items() if b != "allow" and a == "allow"]
    lost = [{"device_id": d, "key_id": k} for (d, k), (b, a) in latest.items() if b == "allow" and a != "allow"]
    return {
        "requests": len(items), "changed": sum(1 for i in items if i["changed"]),
        "gained": gained, "lost": lost, "items": items,
    }


# --- posture: heartbeats, drift, quarantine -------------------------------------------------


async def _quarantine(
    tenant_id: str, device_id: str, *, cause: str, key_ids: tuple[str, ...], reasons: tuple[str, ...],
    correlation_id: str, source_ip: str | None, store: PolicyStore, targets: TargetCache, outbox: Outbox,
    expect: dict[str, Any],
) -> bool:
    reason = "posture check failed" if cause == "facts" else "heartbeats stopped"
    fields = {"tenant_id": tenant_id, "correlation_id": correlation_id, "source_ip": source_ip}
    failed = events.DevicePostureFailed(**fields, device_id=device_id, cause=cause, key_ids=key_ids, reasons=reasons)
    quarantined = failed.caused(events.DeviceQuarantined, device_id=device_id, reason=reason)
    matched = await store.devices.update_one(
        tenant_id, {"device_id": device_id, **expect},
        {"$set": {"status": "quarantined", "quarantine_reason": reason, "quarantine_cause": cause,
                  "quarantined_at": datetime.now(UTC)},
         "$push": {outbox_entry.FIELD: {"$each": [outbox_entry.entry(failed), outbox_entry.entry(quarantined)]}}},
    )
    if matched:
        targets.drop_device(tenant_id, device_id)
        await outbox.publish(store.devices.raw, tenant_id, failed)
        await outbox.publish(store.devices.raw, tenant_id, quarantined)
        log.info("device_quarantined", device_id=device_id, cause=cause)
    return bool(matched)


async def _clear(
    request: rpc.RpcRequest, device_id: str, reason: str, *, grace: int, store: PolicyStore, targets: TargetCache,
    outbox: Outbox,
) -> bool:
    cleared = events.DeviceQuarantineCleared(**_event_fields(request), device_id=device_id, reason=reason)
    now = datetime.now(UTC)
    matched = await store.devices.update_one(
        request.tenant_id, {"device_id": device_id, "status": "quarantined"},
        {"$set": {"status": "active", "quarantine_reason": "", "heartbeat_due": now + timedelta(seconds=grace)},
         **outbox_entry.push(cleared)},
    )
    if matched:
        targets.drop_device(request.tenant_id, device_id)
        await outbox.publish(store.devices.raw, request.tenant_id, cleared)
    return bool(matched)


async def releasing_policies(
    tenant_id: str, device_id: str, key_id: str, *, store: PolicyStore, cache: PolicyCache
) -> list[Policy] | None:
    """The policy versions that last released this key to this device: those its newest allowing
    decision evaluated (an approval counts once approved). None when no such record names them."""
    recent = await store.decisions.find(
        tenant_id, {"device_id": device_id, "key_id": key_id, "effect": {"$in": ["allow", "require_approval"]}},
        projection={"request_id": 1, "effect": 1, "trace_record": 1}, sort=[("decided_at", -1)], limit=20,
    )
    for doc in recent:
        if doc["effect"] == "require_approval":
            approval = await store.approvals.find_one(tenant_id, {"request_id": doc["request_id"]})
            if approval is None or approval["status"] != "approved":
                continue
        if not (record := trace_record(doc)):
            return None
        policies = []
        for ref in json.loads(record)["policies"]:
            policy = await cache.version(tenant_id, ref["policy"], ref["version"])
            if policy is None:
                return None
            policies.append(policy)
        return policies
    return None


async def heartbeat(
    request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore, cache: PolicyCache, targets: TargetCache,
    outbox: Outbox, wake: Callable[[], None],
) -> dict[str, Any]:
    """A device's fresh facts: re-check them, for every key it was released, against the policy
    versions that released that key (not the current ones: a policy tightened since governs new
    releases, not keys already given); quarantine the device if they no longer pass, release it
    from quarantine if they pass again."""
    device_id = str(params.get("device_id", ""))
    facts = params.get("facts") if isinstance(params.get("facts"), dict) else {}
    doc = await store.devices.find_one(request.tenant_id, {"device_id": device_id})
    if doc is None or doc.get("status") == "revoked":
        raise rpc.NotFound("device", "device_id")
    now = datetime.now(UTC)
    settings = await targets.settings(request.tenant_id)
    device = await targets.device(request.tenant_id, device_id)
    failing: dict[str, tuple[str, ...]] = {}
    for key_id in sorted(doc.get("released_keys", [])):
        policies = await releasing_policies(request.tenant_id, device_id, key_id, store=store, cache=cache)
        if policies is None:  # released before decisions recorded their policy versions
            policies = await cache.for_tenant(request.tenant_id)
        chosen = await applicable(request.tenant_id, device_id, key_id, facts, device=device, policies=policies,
                                  targets=targets, now=now)
        decision = engine.evaluate(chosen, facts, now=now)
        if decision.effect == "deny":
            failing[key_id] = decision.reasons
    await store.devices.update_one(
        request.tenant_id, {"device_id": device_id},
        {"$set": {"last_heartbeat_at": now, "heartbeat_due": now + timedelta(seconds=settings.heartbeat_grace_seconds),
                  "last_facts": facts}},
    )
    wake()
    status = doc.get("status", "active")
    if failing and status != "quarantined":
        reasons = tuple(f"{key}: {r}" for key, rs in failing.items() for r in rs)
        if await _quarantine(request.tenant_id, device_id, cause="facts", key_ids=tuple(failing), reasons=reasons,
                             correlation_id=request.correlation_id, source_ip=request.source_ip, store=store,
                             targets=targets, outbox=outbox, expect={"status": {"$ne": "quarantined"}}):
            status = "quarantined"
    elif not failing and status == "quarantined":
        if await _clear(request, device_id, "fresh facts satisfy the policy again", grace=settings.heartbeat_grace_seconds,
                        store=store, targets=targets, outbox=outbox):
            status = "active"
    return {"device_id": device_id, "status": status, "next_heartbeat_within_seconds": settings.heartbeat_grace_seconds}


async def clear_quarantine(
    request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore, targets: TargetCache, outbox: Outbox
) -> dict[str, Any]:
    device_id = str(params.get("device_id", ""))
    reason = str(params.get("reason") or "cleared by an operator")[:500]
    settings = await targets.settings(request.tenant_id)
    if not await _clear(request, device_id, reason, grace=settings.heartbeat_grace_seconds, store=store,
                        targets=targets, outbox=outbox):
        raise rpc.NotFound("quarantined device", "device_id")
    return {"device_id": device_id, "status": "active"}


async def get_posture(request: rpc.RpcRequest, params: dict[str, Any], *, store: PolicyStore) -> dict[str, Any]:
    doc = await store.devices.find_one(request.tenant_id, {"device_id": str(params.get("device_id", ""))})
    if doc is None:
        raise rpc.NotFound("device", "device_id")
    keys = ("device_id", "status", "groups", "quarantine_reason", "quarantine_cause", "last_heartbeat_at",
            "heartbeat_due", "released_keys")
    return {k: doc.get(k) for k in keys}


# --- the scheduler: approval expiry and missed heartbeats ---------------------------------


async def sweep(*, store: PolicyStore, targets: TargetCache, outbox: Outbox, now: datetime) -> datetime | None:
    """Expires overdue approvals and quarantines silent devices; returns when the next one falls due.
    State lives in the store, so a restarted service picks up exactly where the last one stopped."""
    # These scans span tenants on purpose (a system job); each write below is scoped to its tenant.
    async for doc in store.approvals.raw.find({"status": "pending", "expires_at": {"$lte": now}}):
        await expire_approval(doc, store=store, outbox=outbox)
    async for doc in store.devices.raw.find({"status": "active", "heartbeat_due": {"$lte": now}}):
        await _quarantine(
            doc["tenant_id"], doc["device_id"], cause="heartbeat_missed", key_ids=tuple(doc.get("released_keys", [])),
            reasons=(f"no heartbeat since {doc['last_heartbeat_at'].isoformat()}",),
            correlation_id=events.new_id(), source_ip=None, store=store, targets=targets, outbox=outbox,
            expect={"status": "active", "heartbeat_due": doc["heartbeat_due"]},
        )
    due = [
        d[field]
        for collection, query, field in (
            (store.approvals.raw, {"status": "pending"}, "expires_at"),
            (store.devices.raw, {"status": "active", "heartbeat_due": {"$ne": None}}, "heartbeat_due"),
        )
        for d in await collection.find(query, {field: 1}, sort=[(field, 1)], limit=1).to_list(None)
        if d.get(field) is not None
    ]
    return min(due) if due else None


class Scheduler:
    """Sleeps until the next deadline (or a wake-up when a new one is created), then sweeps."""

    def __init__(self, sweep_once: Callable[[datetime], Awaitable[datetime | None]], *, max_sleep: float = 30.0):
        self._sweep = sweep_once
        self._max_sleep = max_sleep
        self._wake = None

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        import asyncio

        self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            try:
                due = await self._sweep(datetime.now(UTC))
            except Exception:
                log.exception("sweep_failed")
                due = None
            delay = self._max_sleep if due is None else max(0.0, min(self._max_sleep, (due - datetime.now(UTC)).total_seconds()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay + 0.01)
            except TimeoutError:
                pass
