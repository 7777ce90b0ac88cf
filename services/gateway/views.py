"""The gateway's views: parse and validate, then answer locally or turn the request into a
message. Authentication and the permission check have already run (see `routes.py`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared import commands, events, rpc
from shared.bus import Bus
from shared.crypto import tokens
from shared.outbox import Outbox
from shared.rpc import NotFound, ProblemError

from . import schemas
from .auth import DeviceAuthenticator, Principal, TokenAuthenticator
from .problems import ExtraProblem, validation_problem
from .releases import ReleaseWaiters
from .settings import GatewaySettings
from .store import GatewayStore

log = structlog.get_logger("strongroom.gateway")
M = TypeVar("M", bound=BaseModel)


@dataclass
class Gateway:
    """Everything the views need, bound once in `app.py`."""

    settings: GatewaySettings
    bus: Bus
    store: GatewayStore
    outbox: Outbox
    operators: TokenAuthenticator
    devices: DeviceAuthenticator
    waiters: ReleaseWaiters


GATEWAY = web.AppKey("gateway", Gateway)
PRINCIPAL = web.RequestKey("principal", Principal)
CORRELATION_ID = web.RequestKey("correlation_id", str)
RAW_BODY = web.RequestKey("raw_body", bytes)


def _gw(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def _principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 naming `body`."""
    raw = request.get(RAW_BODY)
    if raw is None:
        raw = await request.read()
    if not raw:
        raise ProblemError(400, "Bad Request", "a JSON body is required", "body")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProblemError(400, "Bad Request", "body is not valid JSON", "body") from None
    if not isinstance(data, dict):
        raise ProblemError(400, "Bad Request", "body must be a JSON object", "body")
    return data


async def body_as(request: web.Request, model: type[M]) -> M:
    data = await json_object(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problem = validation_problem(exc)
        raise ProblemError(problem.status, problem.title, problem.detail, problem.field) from None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _now() -> datetime:
    return datetime.now(UTC)


async def _call(request: web.Request, service: str, method: str, **params: Any) -> Any:
    gw = _gw(request)
    principal = _principal(request)
    reply = await gw.bus.call(
        service,
        rpc.RpcRequest(
            method=method, tenant_id=principal.tenant_id, actor=principal.actor,
            correlation_id=request[CORRELATION_ID], source_ip=request.remote, params=params,
        ),
        timeout=gw.settings.rpc_timeout_seconds,
    )
    if reply.problem is not None:
        raise ProblemError(reply.problem.status, reply.problem.title, reply.problem.detail, reply.problem.field)
    return reply.result


def _event_fields(request: web.Request) -> dict[str, Any]:
    principal = _principal(request)
    return {
        "tenant_id": principal.tenant_id,
        "actor": principal.actor,
        "correlation_id": request[CORRELATION_ID],
        "source_ip": request.remote,
    }


# --- health and tenants ------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok", "time": _now().isoformat()})


# Tenants, users, sign-in and API tokens: see `views_accounts.py`.


def _outbox_entry(event: events.Event) -> dict[str, Any]:
    from shared.outbox import entry

    return entry(event)


# --- devices -----------------------------------------------------------------------------


async def create_enrollment(request: web.Request) -> web.Response:
    gw = _gw(request)
    body = await body_as(request, schemas.CreateEnrollment)
    token = tokens.new_token("sr_enr")
    enrollment_id = events.new_id("enr_")
    expires_at = _now() + timedelta(seconds=body.ttl_seconds)
    event = events.EnrollmentTokenCreated(**_event_fields(request), enrollment_id=enrollment_id, expires_at=expires_at)
    doc = {
        "enrollment_id": enrollment_id, "name": body.name, "groups": body.groups, "digest": tokens.digest(token),
        "expires_at": expires_at, "used": False, "created_at": _now(),
    }
    await gw.store.insert_with_event(gw.store.enrollments, _principal(request).tenant_id, doc, event)
    await gw.outbox.publish(gw.store.enrollments.raw, _principal(request).tenant_id, event)
    return _json({"enrollment_id": enrollment_id, "token": token, "expires_at": expires_at.isoformat()}, 201)


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
    await gw.store.insert_with_event(gw.store.devices, tenant_id, doc, event)
    await gw.outbox.publish(gw.store.devices.raw, tenant_id, event)
    return _json({"device_id": device_id, "tenant_id": tenant_id, "key_id": f"{tenant_id}/{device_id}"}, 201)


def _device_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("device_id", "name", "status", "groups", "enrolled_at", "revoked_at", "public_key")}


async def list_devices(request: web.Request) -> web.Response:
    docs = await _gw(request).store.devices.find(_principal(request).tenant_id, {}, sort=[("enrolled_at", 1)])
    return _json({"items": [_device_view(d) for d in docs]})


async def get_device(request: web.Request) -> web.Response:
    doc = await _gw(request).store.devices.find_one(_principal(request).tenant_id, {"device_id": request.match_info["device_id"]})
    if doc is None:
        raise NotFound("device", "device_id")
    return _json(_device_view(doc))


async def revoke_device(request: web.Request) -> web.Response:
    gw = _gw(request)
    body = await body_as(request, schemas.RevokeDevice)
    tenant_id = _principal(request).tenant_id
    device_id = request.match_info["device_id"]
    event = events.DeviceRevoked(**_event_fields(request), device_id=device_id, reason=body.reason)
    matched = await gw.store.devices.update_one(
        tenant_id, {"device_id": device_id, "status": "active"},
        {"$set": {"status": "revoked", "revoked_at": _now()}, "$push": {"_outbox": _outbox_entry(event)}},
    )
    if not matched:
        raise NotFound("active device", "device_id")
    gw.devices.forget(tenant_id, device_id)
    await gw.outbox.publish(gw.store.devices.raw, tenant_id, event)
    return _json({"device_id": device_id, "status": "revoked"})


# --- key release (agents) ----------------------------------------------------------------


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


# --- keys, policies, audit: forwarded to their services ----------------------------------


async def create_key(request: web.Request) -> web.Response:
    body = await body_as(request, commands.CreateKey)
    return _json(await _call(request, "keysvc", "create_key", **body.model_dump()), 201)


async def list_keys(request: web.Request) -> web.Response:
    query = _query(request, commands.ListQuery)
    return _json(await _call(request, "keysvc", "list_keys", **query.model_dump()))


async def get_key(request: web.Request) -> web.Response:
    return _json(await _call(request, "keysvc", "get_key", key_id=request.match_info["key_id"]))


async def rotate_key(request: web.Request) -> web.Response:
    body = await body_as(request, commands.RotateKey) if request.can_read_body else commands.RotateKey()
    return _json(await _call(request, "keysvc", "rotate_key", key_id=request.match_info["key_id"], rotate=body.model_dump()))


async def change_key_state(request: web.Request) -> web.Response:
    body = await body_as(request, commands.ChangeKeyState)
    return _json(await _call(request, "keysvc", "change_key_state", key_id=request.match_info["key_id"], change=body.model_dump()))


async def create_policy(request: web.Request) -> web.Response:
    body = await body_as(request, commands.PutPolicy)
    return _json(await _call(request, "policysvc", "put_policy", policy=body.model_dump()), 201)


async def update_policy(request: web.Request) -> web.Response:
    body = await body_as(request, commands.PutPolicy)
    return _json(await _call(request, "policysvc", "put_policy", policy_id=request.match_info["policy_id"], policy=body.model_dump()))


async def list_policies(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "list_policies"))


async def get_policy(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_policy", policy_id=request.match_info["policy_id"]))


async def delete_policy(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "delete_policy", policy_id=request.match_info["policy_id"]))


async def list_audit(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "list_records", **dict(request.query)))


def _query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        problem = validation_problem(exc, status=400)
        raise ProblemError(400, "Bad Request", problem.detail, problem.field) from None
