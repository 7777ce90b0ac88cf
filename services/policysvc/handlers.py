"""policysvc's handlers: decide key requests, and the operators' policy operations.

Policies are cached per tenant as compiled objects and refreshed by `policy.*` events, so
a decision costs one evaluation and one write (the recorded decision, which also makes a
redelivered request idempotent).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from shared import commands, events, rpc
from shared.events import Event, KeyDecided, KeyRequested
from shared import outbox as outbox_entry
from shared.outbox import Outbox
from shared.store import DuplicateKeyError

from . import policy as engine
from .rules import Policy, PolicyError, parse_policy
from .store import PolicyStore

log = structlog.get_logger("strongroom.policysvc")
Publish = Callable[[Event], Awaitable[None]]


class PolicyCache:
    """Compiled policies per tenant; a tenant's entry is dropped whenever one of its policies changes."""

    def __init__(self, store: PolicyStore):
        self._store = store
        self._tenants: dict[str, list[Policy]] = {}

    async def for_tenant(self, tenant_id: str) -> list[Policy]:
        cached = self._tenants.get(tenant_id)
        if cached is None:
            heads = await self._store.active_policies(tenant_id)
            cached = [parse_policy(h["document"], policy_id=h["policy_id"], version=h["version"]) for h in heads]
            self._tenants[tenant_id] = cached
        return cached

    def drop(self, tenant_id: str) -> None:
        self._tenants.pop(tenant_id, None)


async def decide(event: Event, *, store: PolicyStore, cache: PolicyCache, publish: Publish) -> None:
    """Evaluate, record, publish. The record is keyed by request id: on a redelivery the insert
    fails and the recorded decision is re-published (same event id), so no request is decided twice."""
    if not isinstance(event, KeyRequested):
        return
    policies = [
        p for p in await cache.for_tenant(event.tenant_id) if engine.applies_to(p, event.device_id, set(), event.key_id, set())
    ]
    now = datetime.now(UTC)
    decision = engine.evaluate(policies, event.facts, now=now)
    outcome = event.caused(
        KeyDecided,
        request_id=event.request_id,
        device_id=event.device_id,
        key_id=event.key_id,
        key_version=event.key_version,
        effect=decision.effect,
        reasons=decision.reasons,
        disclosed=decision.disclosed(),
        trace=tuple(decision.disclosed("full").get("trace", ())),
        decided_by=tuple(ref._asdict() for ref in decision.decided_by),
        ephemeral_public_key=event.ephemeral_public_key,
    )
    doc = {
        "request_id": event.request_id,
        "device_id": event.device_id,
        "key_id": event.key_id,
        "facts": event.facts,
        "effect": decision.effect,
        "decided_at": now,
        "outcome": outcome.model_dump_json(),
    }
    if not await store.record_decision(event.tenant_id, doc):
        recorded = await store.find_decision(event.tenant_id, event.request_id)
        assert recorded is not None
        outcome = events.decode_event(recorded["outcome"].encode())
    await publish(outcome)
    log.info("key_request_decided", effect=decision.effect, key_id=event.key_id, device_id=event.device_id)


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
