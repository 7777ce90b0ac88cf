"""What agents call: enrol with a single-use token, and request a key under policy (signed),
waiting for the decision and, if allowed, the sealed key. Polling and heartbeats: `views_policy.py`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from shared import events
from shared.crypto import tokens
from shared.rpc import ProblemError

from . import schemas
from .problems import ExtraProblem
from .state import CORRELATION_ID, _gw, _json, _now, _principal, body_as


async def enroll(request: web.Request) -> web.Response:
    """Agent: trade a single-use enrollment token for a device identity bound to its public key."""
    gw = _gw(request)
    body = await body_as(request, schemas.Enroll)
    enrollment = await gw.store.take_enrollment(tokens.digest(body.enrollment_token), _now())
    if enrollment is None:
        raise ProblemError(401, "Unauthorized", "missing or invalid credentials")
    tenant_id = enrollment["tenant_id"]
    device_id = events.new_id("dev_")
    event = events.DeviceEnrolled(
        tenant_id=tenant_id, correlation_id=request[CORRELATION_ID], source_ip=request.remote,
        actor=events.Actor(kind="device", id=device_id, auth="enrollment_token"),
        device_id=device_id, enrollment_id=enrollment["enrollment_id"], name=body.name,
        public_key=body.public_key, groups=tuple(enrollment.get("groups", [])),
    )
    doc = {
        "device_id": device_id, "name": body.name, "public_key": body.public_key, "status": "active",
        "groups": enrollment.get("groups", []), "enrolled_at": _now(), "enrollment_id": enrollment["enrollment_id"],
    }
    await gw.store.insert_device(tenant_id, doc, event)
    return _json({"device_id": device_id, "tenant_id": tenant_id, "key_id": f"{tenant_id}/{device_id}"}, 201)


async def key_request(request: web.Request) -> web.Response:
    """Agent: ask for a key under policy; wait for the decision and, if allowed, the sealed key."""
    gw = _gw(request)
    principal = _principal(request)
    body = await body_as(request, schemas.KeyRequestBody)
    request_id = events.new_id("req_")
    facts = dict(body.facts)
    # Observed facts come from the gateway itself and replace anything the agent claimed.
    facts["observed"] = {
        "source_ip": request.remote,
        "request_time": _now().isoformat(),
        "device_id": principal.id,
    }
    identity = facts.get("identity")
    if isinstance(identity, dict):
        facts["identity"] = {**identity, "device_id": principal.id}
    requested = events.KeyRequested(
        tenant_id=principal.tenant_id, actor=principal.actor, correlation_id=request[CORRELATION_ID],
        source_ip=request.remote, request_id=request_id, device_id=principal.id, key_id=body.key_id,
        key_version=body.key_version, facts=facts, ephemeral_public_key=body.ephemeral_public_key,
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
    return _release_response(outcome)


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
