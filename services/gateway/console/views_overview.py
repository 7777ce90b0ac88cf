"""Overview: one tile per area the signed-in roles may read (`Principal.may`, the API's table):
approvals waiting, recent decisions by effect, keys by lifecycle state, devices by posture (active,
quarantined for drifted facts or missed heartbeats, revoked), and the audit chain's health. Each
tile reads what the matching API view reads (keysvc, policysvc and auditsvc RPCs, the gateway's
device store)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from shared import commands

from .. import views
from ..state import GATEWAY, PRINCIPAL, _call
from .present import DECISION_WINDOW_MINUTES, decision_counts, key_state_counts
from .views_keys import PAGE as KEYS_PAGE
from .web import render


async def overview(request: web.Request) -> web.StreamResponse:
    principal = request[PRINCIPAL]
    tiles: dict[str, Any] = {}
    if principal.may("approvals.read"):
        pending = await _call(request, "policysvc", "list_approvals", {"status": "pending", "limit": None})
        tiles["approvals"] = len(pending["items"])
    if principal.may("decisions.read"):
        recent = await _call(request, "policysvc", "list_decisions", {"limit": "200"})
        tiles["decisions"] = decision_counts(recent["items"], datetime.now(UTC))
    if principal.may("keys.read"):
        listed = await views.keys(request, commands.ListQuery(limit=KEYS_PAGE))
        tiles["keys"] = {"states": key_state_counts(listed["items"]), "total": len(listed["items"]),
                         "more": len(listed["items"]) >= KEYS_PAGE}
    if principal.may("devices.read"):
        devices = await request.app[GATEWAY].store.list_devices(principal.tenant_id)
        tiles["devices"] = {"total": len(devices), **await _call(request, "policysvc", "posture_counts", {})}
    if principal.may("audit.read"):
        tiles["audit"] = await _call(request, "auditsvc", "status")
    return render("overview.html", request, {"tiles": tiles, "window": DECISION_WINDOW_MINUTES,
                                             "mfa_required": request.query.get("mfa") == "required"})
