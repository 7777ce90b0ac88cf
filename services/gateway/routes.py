"""Every route, one line each: method, path, view, who may call it, and its body schema.

This table drives the router, the authentication and permission checks, and the OpenAPI
document, so they cannot disagree. `auth` is "none", "operator" or "device".
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from shared import commands

from . import schemas, views
from . import views_audit
from .auth import Unauthorized
from .permissions import allowed


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    view: object
    auth: str
    permission: str | None
    summary: str
    body: type[BaseModel] | None = None
    success: int = 200


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/health", views.health, "none", None, "Liveness of the gateway"),
    Route("POST", "/v1/tenants", views.create_tenant, "operator", "tenants.create", "Create a tenant and its first admin token", schemas.CreateTenant, 201),
    Route("POST", "/v1/tokens", views.create_token, "operator", "tokens.manage", "Create an API token (shown once)", schemas.CreateToken, 201),
    Route("GET", "/v1/tokens", views.list_tokens, "operator", "tokens.manage", "List the tenant's API tokens"),
    Route("DELETE", "/v1/tokens/{token_id}", views.revoke_token, "operator", "tokens.manage", "Revoke an API token", None, 204),
    Route("POST", "/v1/enrollment-tokens", views.create_enrollment, "operator", "devices.enroll", "Create a single-use, expiring enrollment token", schemas.CreateEnrollment, 201),
    Route("GET", "/v1/devices", views.list_devices, "operator", "devices.read", "List devices"),
    Route("GET", "/v1/devices/{device_id}", views.get_device, "operator", "devices.read", "Show a device"),
    Route("POST", "/v1/devices/{device_id}/revoke", views.revoke_device, "operator", "devices.manage", "Revoke a device", schemas.RevokeDevice),
    Route("POST", "/v1/keys", views.create_key, "operator", "keys.manage", "Create a volume key", commands.CreateKey, 201),
    Route("GET", "/v1/keys", views.list_keys, "operator", "keys.read", "List keys (metadata only)"),
    Route("GET", "/v1/keys/{key_id}", views.get_key, "operator", "keys.read", "Show a key (metadata only)"),
    Route("POST", "/v1/keys/{key_id}/rotate", views.rotate_key, "operator", "keys.manage", "Rotate a key to a new version", commands.RotateKey),
    Route("POST", "/v1/keys/{key_id}/state", views.change_key_state, "operator", "keys.manage", "Change a key's lifecycle state", commands.ChangeKeyState),
    Route("POST", "/v1/policies", views.create_policy, "operator", "policies.manage", "Create a policy", commands.PutPolicy, 201),
    Route("GET", "/v1/policies", views.list_policies, "operator", "policies.read", "List policies"),
    Route("GET", "/v1/policies/{policy_id}", views.get_policy, "operator", "policies.read", "Show a policy"),
    Route("PUT", "/v1/policies/{policy_id}", views.update_policy, "operator", "policies.manage", "Replace a policy (new version)", commands.PutPolicy),
    Route("DELETE", "/v1/policies/{policy_id}", views.delete_policy, "operator", "policies.manage", "Delete a policy"),
    Route("GET", "/v1/audit", views.list_audit, "operator", "audit.read", "List audit records (filters, cursor)"),
    # --- accounts and sign-in ---
    # --- policies, device groups, approvals, notifications ---
    # --- key custody ---
    # --- audit exports, forwarders, reports ---
    Route("GET", "/v1/audit/checkpoints", views_audit.list_checkpoints, "operator", "audit.read", "List signed checkpoints of the audit chain"),
    Route("GET", "/v1/audit/signing-key", views_audit.signing_key, "operator", "audit.read", "Public keys that sign audit checkpoints"),
    Route("GET", "/v1/audit/status", views_audit.audit_status, "operator", "audit.read", "Audit chain head, checkpoint, ingestion lag and queue depth"),
    Route("POST", "/v1/agent/enroll", views.enroll, "none", None, "Agent: enrol with an enrollment token", schemas.Enroll, 201),
    Route("POST", "/v1/agent/key-requests", views.key_request, "device", None, "Agent: request a key (RFC 9421-signed)", schemas.KeyRequestBody),
)


def _guarded(route: Route):
    """Wraps a view with its route's authentication and permission check (deny by default)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        gw = request.app[views.GATEWAY]
        if route.auth == "operator":
            principal = await gw.operators.authenticate(request)
            if route.permission is None or not allowed(route.permission, principal.roles):
                raise web.HTTPForbidden(text=f"requires permission {route.permission}")
            request[views.PRINCIPAL] = principal
        elif route.auth == "device":
            request[views.RAW_BODY] = await request.read()
            request[views.PRINCIPAL] = await gw.devices.authenticate(request, request[views.RAW_BODY])
        return await route.view(request)  # type: ignore[operator]

    handler.__name__ = getattr(route.view, "__name__", "view")
    return handler


def setup(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _guarded(route))


__all__ = ["ROUTES", "Route", "Unauthorized", "setup"]
