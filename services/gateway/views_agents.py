"""What agents call: enrol with a single-use token, request a key under policy (signed) and wait
for the decision and, if allowed, the sealed key; poll a request; send heartbeats with fresh facts.

Everything an agent reports in ``facts`` is claimed. Facts proved by its ``evidence`` (verified
here, ``evidence/``) are ``cloud`` or ``attested``, and what the gateway sees itself is
``observed``; the provenance of each travels with the facts to policysvc.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web
from pydantic import Field

from shared import events
from shared.commands import Strict
from shared.crypto import tokens
from shared.rpc import ProblemError

from . import schemas, views_volumes
from .backlog import Overloaded
from .evidence.base import EvidenceContext, Merged, Verified, merge, with_observed
from .problems import ExtraProblem
from .state import CORRELATION_ID, _call, _gw, _json, _now, _principal, body_as
from .views_evidence import FirstUseRefused, verify

MAX_WAIT_SECONDS = 60.0
log = structlog.get_logger("strongroom.gateway")


class HeartbeatBody(Strict):
    facts: schemas.Facts = Field(default_factory=dict)
    evidence: schemas.Evidence | None = None
    challenge: schemas.Challenge | None = None


async def enroll(request: web.Request) -> web.Response:
    """Agent: trade a single-use enrollment token for a device identity bound to its public key."""
    gw = _gw(request)
    body = await body_as(request, schemas.Enroll)
    enrollment = await gw.store.take_enrollment(tokens.digest(body.enrollment_token), _now())
    if enrollment is None:
        raise ProblemError(401, "Unauthorized", "missing or invalid credentials")
    tenant_id = enrollment["tenant_id"]
    device_id = events.new_id("dev_")
    summary, verified = None, None
    if body.evidence is not None:
        context = EvidenceContext(tenant_id=tenant_id, now=_now(), device_id=device_id, public_key=body.public_key,
                                  challenge=body.challenge)
        try:
            verified, summary = await verify(request, body.evidence, context, holder=enrollment["enrollment_id"])
        except FirstUseRefused:
            raise ProblemError(403, "Forbidden", "the instance this evidence names is already enrolled",
                               "evidence") from None
    return await register_device(request, tenant_id, device_id, body.name, body.public_key, enrollment, summary,
                                 auth="enrollment_token", verified=verified)


def _proved_identity(verified: Verified | None) -> dict[str, Any] | None:
    """The instance and image the enrolment evidence proved, with its provenance (volumes bind to them)."""
    if verified is None:
        return None
    identity = verified.facts.get("identity") or {}
    kept = {k: identity[k] for k in ("instance_id", "image_id") if isinstance(identity.get(k), str)}
    return {**kept, "provenance": verified.provenance} if kept else None


async def register_device(request: web.Request, tenant_id: str, device_id: str, name: str, public_key: str,
                          enrollment: dict[str, Any], summary: events.EvidenceSummary | None, *, auth: str,
                          verified: Verified | None = None) -> web.Response:
    """The new device, enrolled by `enrollment` (a token's, or a zero-touch rule's) with what its evidence proved."""
    # Trust on first use: the instance this enrolment proved is bound to this device from now on.
    subject = summary.subject if summary is not None and summary.verified else None
    event = events.DeviceEnrolled(
        tenant_id=tenant_id, correlation_id=request[CORRELATION_ID], source_ip=request.remote,
        actor=events.Actor(kind="device", id=device_id, auth=auth),
        device_id=device_id, enrollment_id=enrollment["enrollment_id"], name=name,
        public_key=public_key, groups=tuple(enrollment.get("groups", [])), subject=subject, evidence=summary,
    )
    doc = {
        "device_id": device_id, "name": name, "public_key": public_key, "status": "active",
        "groups": list(enrollment.get("groups", [])), "enrolled_at": _now(), "enrollment_id": enrollment["enrollment_id"],
        "subject": subject, "identity": _proved_identity(verified) if subject else None,
    }
    await _gw(request).store.insert_device(tenant_id, doc, event)
    return _json({"device_id": device_id, "tenant_id": tenant_id, "key_id": f"{tenant_id}/{device_id}"}, 201)


async def key_request(request: web.Request) -> web.Response:
    """Agent: ask for a key under policy; wait for the decision and, if allowed, the sealed key."""
    gw = _gw(request)
    if gw.backlog.over_limit() is not None:  # shed load before anything is queued or stored
        raise Overloaded(gw.settings.queue_depth_retry_after_seconds)
    principal = _principal(request)
    body = await body_as(request, schemas.KeyRequestBody)
    request_id = events.new_id("req_")
    facts, summary = await _facts_of(request, body.facts, body.evidence, body.challenge, body.ephemeral_public_key)
    volume = await views_volumes.volume_context(request, body.volume, body.key_id)
    facts = views_volumes.with_volume(facts, volume)
    requested = events.KeyRequested(
        tenant_id=principal.tenant_id, actor=principal.actor, correlation_id=request[CORRELATION_ID],
        source_ip=request.remote, request_id=request_id, device_id=principal.id, key_id=body.key_id,
        key_version=body.key_version, facts=facts.facts, ephemeral_public_key=body.ephemeral_public_key,
        provenance=facts.provenance, contradicted=facts.contradicted, evidence=summary,
    )
    waiter = gw.waiters.expect(request_id)
    try:
        # Audit first: a request the audit queue cannot take is refused (503) before anyone acts on it.
        await gw.bus.publish_audited(requested)
        outcome = await asyncio.wait_for(waiter, gw.settings.release_timeout_seconds)
    except TimeoutError:
        raise ExtraProblem(504, "Gateway Timeout", "no decision in time; the request may still complete",
                           request_id=request_id) from None
    finally:
        gw.waiters.cancel(request_id)
    await views_volumes.record_attachment(request, volume, request_id=request_id, key_id=body.key_id, outcome=outcome)
    return _release_response(outcome)


async def _facts_of(
    request: web.Request, claimed: dict[str, Any], evidence: dict[str, Any] | None, challenge: str | None = None,
    one_time_key: str | None = None,
) -> tuple[Merged, events.EvidenceSummary | None]:
    """The agent's claimed facts, what its evidence proves written over them, and what the gateway
    observed itself; with what became of the evidence."""
    principal = _principal(request)
    verified, summary = None, None
    if evidence is not None:
        device = await _gw(request).devices.device(principal.tenant_id, principal.id)
        context = EvidenceContext(tenant_id=principal.tenant_id, now=_now(), device_id=principal.id,
                                  public_key=device.get("public_key") if device else None, challenge=challenge,
                                  request_public_key=one_time_key)
        try:
            verified, summary = await verify(request, evidence, context, holder=principal.id)
        except FirstUseRefused:
            raise ProblemError(403, "Forbidden", "the instance this evidence names is enrolled as another device",
                               "evidence") from None
    observed = {"source_ip": request.remote, "request_time": _now().isoformat(), "device_id": principal.id}
    return with_observed(merge(claimed, verified), observed, principal.id), summary


def _release_response(outcome: events.Event) -> web.Response:
    if isinstance(outcome, events.KeyReleased):
        return _json({
            "request_id": outcome.request_id, "key_id": outcome.key_id, "key_version": outcome.key_version,
            "algorithm": outcome.algorithm, "sealed_key": outcome.sealed_key, "hpke_suite": outcome.hpke_suite,
            # A newer version exists when latest_version > key_version: re-encrypt under it.
            "latest_version": outcome.latest_version,
        })
    if isinstance(outcome, events.KeyDecided):
        if outcome.effect == "require_approval":
            return _json({"request_id": outcome.request_id, "status": "pending", **outcome.disclosed}, 202)
        raise ExtraProblem(403, "Forbidden", "the tenant's policy denied this request",
                           request_id=outcome.request_id, **{k: v for k, v in outcome.disclosed.items() if k != "effect"})
    assert isinstance(outcome, events.KeyReleaseRefused)
    status = {"not_found": 404, "not_active": 409, "sealed": 503, "audit_unavailable": 503}.get(outcome.status, 500)
    title = {404: "Not Found", 409: "Conflict", 503: "Service Unavailable"}.get(status, "Internal Server Error")
    raise ExtraProblem(status, title, outcome.reason, request_id=outcome.request_id)


async def key_request_status(request: web.Request) -> web.Response:
    """Agent: the state of its own key request; `?wait=N` long-polls up to N seconds for an outcome."""
    gw = _gw(request)
    request_id = request.match_info["request_id"]
    try:
        wait = min(float(request.query.get("wait", "0")), MAX_WAIT_SECONDS)
    except ValueError:
        raise ProblemError(400, "Bad Request", "wait must be a number of seconds", "wait") from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    try:
        while True:
            # The waiter is registered before each look, so an outcome in between is not missed; an
            # event that settles nothing (a re-published pending decision) just starts another wait.
            waiter = gw.waiters.expect(request_id) if wait > 0 else None
            final, pending = await _request_state(request, request_id)
            left = deadline - loop.time()
            if final is not None or waiter is None or left <= 0:
                break
            try:
                await asyncio.wait_for(waiter, left)
            except TimeoutError:
                final, pending = await _request_state(request, request_id)
                break
    finally:
        if wait > 0:
            gw.waiters.cancel(request_id)
    return final or _json(pending, 202)


async def _request_state(request: web.Request, request_id: str) -> tuple[web.Response | None, dict[str, Any]]:
    """The final answer for this request, or None and the pending state to answer 202 with."""
    device_id = _principal(request).id
    state = await _call(request, "policysvc", "request_status", {"request_id": request_id, "device_id": device_id})
    status = state["status"]
    if status in ("allowed", "approved"):
        found = await _call(request, "keysvc", "get_release", {"request_id": request_id, "device_id": device_id})
        if found is not None:
            return _release_response(events.decode_event(found["outcome"].encode())), {}
    if status in ("denied", "expired"):
        disclosed = {k: v for k, v in (state.get("disclosed") or {}).items() if k not in ("effect", "status")}
        raise ExtraProblem(403, "Forbidden", f"the key request was {status}", request_id=request_id, request_status=status,
                           **disclosed)
    keys = ("request_id", "status", "approvals_required", "approvals_received", "expires_at")
    return None, {k: state[k] for k in keys if state.get(k) is not None}


async def heartbeat(request: web.Request) -> web.Response:
    """Agent: fresh facts; policysvc re-checks them and may quarantine (or release) the device."""
    principal = _principal(request)
    body = await body_as(request, HeartbeatBody)
    facts, _ = await _facts_of(request, body.facts, body.evidence, body.challenge)
    facts = views_volumes.with_volume(facts, None)  # `volume.*` is the gateway's, set only on key requests
    return _json(await _call(request, "policysvc", "heartbeat", {
        "device_id": principal.id, "facts": facts.facts, "provenance": facts.provenance}))
