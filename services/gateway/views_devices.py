"""Enrollment tokens and devices: operators create single-use enrollment tokens, list, show and
revoke the devices enrolled with them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from shared import events
from shared.crypto import tokens
from shared.rpc import NotFound

from . import schemas
from .state import _event_fields, _gw, _json, _now, _principal, body_as


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
    await gw.store.insert_enrollment(_principal(request).tenant_id, doc, event)
    return _json({"enrollment_id": enrollment_id, "token": token, "expires_at": expires_at.isoformat()}, 201)


def device_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("device_id", "name", "status", "groups", "enrolled_at", "revoked_at", "public_key")}


async def list_devices(request: web.Request) -> web.Response:
    docs = await _gw(request).store.list_devices(_principal(request).tenant_id)
    return _json({"items": [device_view(d) for d in docs]})


async def get_device(request: web.Request) -> web.Response:
    doc = await _gw(request).store.device(_principal(request).tenant_id, request.match_info["device_id"])
    if doc is None:
        raise NotFound("device", "device_id")
    return _json(device_view(doc))


async def revoke(request: web.Request, device_id: str, reason: str) -> dict[str, Any]:
    """Revoke an active device of the caller's tenant (the API's and the console's revoke): the
    event goes out through the outbox with the change, and the gateway forgets the cached device."""
    gw = _gw(request)
    tenant_id = _principal(request).tenant_id
    event = events.DeviceRevoked(**_event_fields(request), device_id=device_id, reason=reason)
    if not await gw.store.revoke_device(tenant_id, device_id, _now(), event):
        raise NotFound("active device", "device_id")
    gw.devices.forget(tenant_id, device_id)
    return {"device_id": device_id, "status": "revoked"}


async def revoke_device(request: web.Request) -> web.Response:
    body = await body_as(request, schemas.RevokeDevice)
    return _json(await revoke(request, request.match_info["device_id"], body.reason))
