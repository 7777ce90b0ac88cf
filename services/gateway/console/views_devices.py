"""Devices: the tenant's devices (name, status active / quarantined / revoked, last heartbeat and
drift) and one device's page (the facts of its last heartbeat with their provenance, its posture
and quarantine state), and, with a reason, clearing a quarantine or revoking a device. The list and record come from the
gateway's store as the API's device views read them, posture from the policysvc RPC the API's
posture view calls, and revoking runs the API's own `views_devices.revoke`."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from shared.rpc import ProblemError

from .. import schemas, views_devices, views_policy
from ..state import GATEWAY, PRINCIPAL, _call
from .present import drift, fact_rows
from .web import render, see_other

_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


async def _posture(request: web.Request, device_id: str) -> dict[str, Any] | None:
    try:
        return await _call(request, "policysvc", "get_posture", {"device_id": device_id})
    except ProblemError as exc:
        if exc.problem.status == 404:  # policysvc has not heard of it yet
            return None
        raise


def _row(device: dict[str, Any], posture: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """A device as the console shows it: revoked wins, then policysvc's view (quarantined), else the record."""
    status = device["status"] if device.get("status") == "revoked" else (posture or {}).get("status") or device.get("status")
    return {**device, "status": status, "posture": posture, "drift": drift({**(posture or {}), "status": status}, now),
            "last_heartbeat_at": (posture or {}).get("last_heartbeat_at")}


async def index(request: web.Request) -> web.StreamResponse:
    docs = await request.app[GATEWAY].store.list_devices(request[PRINCIPAL].tenant_id)
    now = datetime.now(UTC)
    rows = [_row(views_devices.device_view(d), await _posture(request, d["device_id"]), now) for d in docs]
    return render("devices.html", request, {"devices": rows})


def _device_id(request: web.Request) -> str:
    device_id = request.match_info["device_id"]
    if not _DEVICE_ID.match(device_id):
        raise web.HTTPNotFound(text="no such device")
    return device_id


async def _page(request: web.Request, device_id: str, *, flash: str | None = None, error: str | None = None,
                status: int = 200) -> web.Response:
    doc = await request.app[GATEWAY].store.device(request[PRINCIPAL].tenant_id, device_id)
    if doc is None:
        return render("device.html", request, {"device": None, "error": "No such device.", "flash": None}, status=404)
    posture = await _posture(request, device_id)
    facts = fact_rows((posture or {}).get("last_facts") or {}, (posture or {}).get("last_facts_provenance") or {})
    return render("device.html", request, {
        "device": _row(views_devices.device_view(doc), posture, datetime.now(UTC)), "facts": facts,
        "flash": flash, "error": error}, status=status)


DONE = {
    "revoked": "The device is revoked: it can no longer sign in or receive keys.",
    "cleared": "The quarantine is cleared: the device may be released keys again.",
}


async def detail(request: web.Request) -> web.StreamResponse:
    return await _page(request, _device_id(request), flash=DONE.get(request.query.get("done", "")))


async def clear_quarantine(request: web.Request) -> web.StreamResponse:
    """Clears a quarantine with a reason, as the API's `POST /v1/devices/{id}/clear-quarantine`
    (policysvc refuses a device that is not quarantined)."""
    return await _with_reason(
        request, "cleared", lambda reason: views_policy.ClearQuarantineBody(reason=reason),
        lambda device_id, body: views_policy.clear_device_quarantine(request, device_id, body))


async def revoke(request: web.Request) -> web.StreamResponse:
    return await _with_reason(
        request, "revoked", lambda reason: schemas.RevokeDevice(reason=reason),
        lambda device_id, body: views_devices.revoke(request, device_id, body.reason))


async def _with_reason(request: web.Request, done: str, parse: Callable[[str], Any],
                       act: Callable[[str, Any], Awaitable[Any]]) -> web.StreamResponse:
    """A device action taking the form's reason: refused input or the service's refusal is shown on
    the device's page; success redirects to it (Post/Redirect/Get)."""
    device_id = _device_id(request)
    form = await request.post()
    try:
        body = parse(str(form.get("reason", "")))
    except ValidationError:
        return await _page(request, device_id, error="reason: give a reason (1 to 500 characters).", status=422)
    try:
        await act(device_id, body)
    except ProblemError as exc:
        return await _page(request, device_id, error=exc.problem.detail or exc.problem.title, status=exc.problem.status)
    return see_other(f"/console/devices/{device_id}?done={done}")
