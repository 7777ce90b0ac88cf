"""policysvc's recorded decisions: an agent's request status, explained decisions, and simulation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared import commands_policy as c
from shared import events, rpc
from shared.events import KeyDecided

from . import policy as engine
from . import simulation
from .cache import PolicyCache, TargetCache
from .decision import record_policies, trace_record
from .handlers_approvals import approval_view
from .handling import page_limit, policy_problem
from .rules import PolicyError, parse_policy
from .store import PolicyStore

# Once an approval is settled, the agent hears that, not the pending decision's disclosure.
SETTLED_DISCLOSURE = {"denied": {"effect": "deny", "reasons": ["approval denied"]},
                      "expired": {"effect": "deny", "reasons": ["approval expired"]}}


def _outcome(doc: dict[str, Any]) -> KeyDecided:
    outcome = events.decode_event(doc["outcome"].encode())
    assert isinstance(outcome, KeyDecided)
    return outcome


async def request_status(request: rpc.RpcRequest, params: c.RequestRef, *, store: PolicyStore) -> c.RequestStatus:
    """An agent polls its own request: pending, approved/allowed (keysvc has the sealed key), denied, expired."""
    decision = await store.device_decision(request.tenant_id, params.request_id, params.device_id)
    if decision is None:
        raise rpc.NotFound("key request", "request_id")
    outcome = _outcome(decision)
    status = {"allow": "allowed", "deny": "denied"}.get(outcome.effect, "pending")
    approval = None
    if outcome.effect == "require_approval":
        approval = await store.approval_for_request(request.tenant_id, outcome.request_id)
    if approval is None:
        return c.RequestStatus(request_id=outcome.request_id, status=status, disclosed=outcome.disclosed)
    return c.RequestStatus(
        request_id=outcome.request_id, status=approval["status"],
        disclosed=SETTLED_DISCLOSURE.get(approval["status"], outcome.disclosed),
        approvals_required=approval["approvals_required"], approvals_received=len(approval.get("votes", [])),
        expires_at=approval["expires_at"].isoformat(),
    )


def _summary(doc: dict[str, Any], outcome: KeyDecided) -> dict[str, Any]:
    return {
        "request_id": doc["request_id"], "device_id": doc["device_id"], "key_id": doc["key_id"],
        "effect": doc["effect"], "decided_at": doc["decided_at"].isoformat(), "reasons": list(outcome.reasons),
        "decided_by": [dict(r) for r in outcome.decided_by],
    }


async def _full_trace(tenant_id: str, record: str, *, store: PolicyStore) -> list[dict[str, Any]]:
    """Every rule evaluated, each with the fact tests it ran: rebuilt from the decision's canonical
    record and the policy versions it names (versions are never rewritten)."""
    policies = []
    for policy_id, number in record_policies(record):
        version = await store.policy_version(tenant_id, policy_id, number)
        if version is None:
            raise rpc.ProblemError(500, "Internal Server Error", f"policy version {policy_id} v{number} is gone")
        policies.append(parse_policy(version["document"], policy_id=policy_id, version=number))
    return engine.Decision.from_record(record, policies).disclosed("full")["trace"]


async def get_decision(request: rpc.RpcRequest, params: c.DecisionRef, *, store: PolicyStore) -> c.DecisionDetail:
    doc = await store.find_decision(request.tenant_id, params.request_id)
    if doc is None:
        raise rpc.NotFound("decision", "request_id")
    outcome = _outcome(doc)
    record = trace_record(doc)
    trace = [dict(t) for t in outcome.trace]
    verified = None
    if record:
        trace = await _full_trace(request.tenant_id, record, store=store)
        # Anyone holding the audit record can check it: sha256(trace_record) == its trace_sha256.
        verified = engine.record_digest(record) == outcome.trace_sha256
    approval = await store.approval_for_request(request.tenant_id, doc["request_id"])
    return c.DecisionDetail(
        **_summary(doc, outcome), trace=trace, disclosed_to_agent=outcome.disclosed, facts=doc["facts"],
        provenance=doc.get("provenance") or {},
        trace_sha256=outcome.trace_sha256, trace_record=record, trace_verified=verified,
        approval=approval_view(approval) if approval is not None else None,
    )


async def list_decisions(request: rpc.RpcRequest, params: c.ListDecisions, *, store: PolicyStore) -> c.DecisionList:
    match = {k: v for k in ("device_id", "key_id", "effect") if (v := getattr(params, k))}
    docs = await store.list_decisions(request.tenant_id, match=match, limit=page_limit(params.limit))
    return c.DecisionList(items=[c.DecisionSummary(**_summary(d, _outcome(d))) for d in docs])


async def simulate(
    request: rpc.RpcRequest, params: c.Simulate, *, store: PolicyStore, cache: PolicyCache, targets: TargetCache
) -> c.Simulation:
    """Each request decided under the current policies and under the candidate; nothing is released,
    recorded or published. The candidate replaces the policy named by ``policy_id`` or is added.
    Both decisions take the device's standing as it is now, as a real request would: a quarantined
    device is denied, and an approve-and-remember grant in force allows what needs approval."""
    tenant_id, replaces = request.tenant_id, params.policy_id
    current = await cache.for_tenant(tenant_id)
    if replaces and not any(p.id == replaces for p in current):
        raise rpc.NotFound("policy", "policy_id")
    try:
        candidate = parse_policy(params.policy.model_dump(), policy_id=replaces or "candidate", version=0)
    except PolicyError as exc:
        raise policy_problem(exc, "policy") from None
    now = datetime.now(UTC)
    if params.recorded_days is not None:
        recorded = await store.decisions_since(tenant_id, now - timedelta(days=params.recorded_days),
                                               limit=simulation.MAX_SIMULATED_REQUESTS)
        cases = simulation.recorded_cases(recorded)
    else:
        try:
            cases = simulation.given_cases(params.requests, now=now)
        except simulation.CaseError as exc:
            raise rpc.ProblemError(422, "Unprocessable Content", exc.message, exc.field) from None
    devices = {case.device_id: await targets.device(tenant_id, case.device_id) for case in cases}
    return simulation.simulate(
        cases, current, [p for p in current if p.id != replaces] + [candidate], devices=devices,
        groups=await targets.groups(tenant_id), remembered=await targets.remembered(tenant_id), now=now,
    )
