"""The guard around every route: rate limits, authentication, the permission check (deny by
default), co-signing for small-team users, and admission of signed device requests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from shared.rpc import ProblemError

from .accounts import rules
from .accounts.common import ACCOUNTS
from .auth import Principal, RateLimited, Unauthorized
from .ratelimit import RateLimiter
from .state import GATEWAY, PRINCIPAL, RAW_BODY, _query

if TYPE_CHECKING:
    from .routes import Route

COSIGN_HEADER = "X-Strongroom-Cosign"


def throttle(limiter: RateLimiter, key: str) -> None:
    wait = limiter.take(key, time.monotonic())
    if wait is not None:
        raise RateLimited(wait)


def guarded(route: Route):
    """Wraps a route's view with its authentication and permission check (deny by default)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        gw = request.app[GATEWAY]
        if route.path.startswith("/v1/agent/"):
            throttle(request.app[ACCOUNTS].agent_by_address, f"ip:{request.remote}")
        if route.auth == "operator":
            principal = await gw.operators.authenticate(request)
            # Roles, narrowed by the credential's scopes (deny by default).
            if route.permission is None or not principal.may(route.permission):
                raise web.HTTPForbidden(text=f"requires permission {route.permission}")
            if principal.second_person and rules.needs_cosign(route.permission):
                principal = await cosigned(request, principal, route.permission)
            request[PRINCIPAL] = principal
        elif route.auth == "device":
            request[RAW_BODY] = await request.read()
            request[PRINCIPAL] = await gw.devices.authenticate(request, request[RAW_BODY])
            await admit_device(request, request[PRINCIPAL])
        if route.query is not None:  # a bad query is a 400 naming the parameter, before the view
            _query(request, route.query)
        return await route.view(request)  # type: ignore[operator]

    handler.__name__ = getattr(route.view, "__name__", "view")
    return handler


async def admit_device(request: web.Request, principal: Principal) -> None:
    """After a device's signature checked out: its own rate limit, and its tenant must be active."""
    throttle(request.app[ACCOUNTS].agent_by_device, f"{principal.tenant_id}/{principal.id}")
    tenant = await request.app[GATEWAY].operators.tenant(principal.tenant_id)
    if tenant is None or tenant.get("status", "active") != "active":
        raise Unauthorized("tenant not active")


async def cosigned(request: web.Request, principal: Principal, permission: str) -> Principal:
    """Small-team mode: a user holding conflicting roles acts only with a second person, who
    presents their own credential in the co-sign header and must hold the same permission."""
    gw = request.app[GATEWAY]
    header = request.headers.get(COSIGN_HEADER, "")
    refusal = ProblemError(403, "Forbidden", f"a second person must co-sign this change ({COSIGN_HEADER})", COSIGN_HEADER)
    if not header or len(header) > 512:
        raise refusal
    try:
        other = await gw.operators.resolve(header.strip())
    except Unauthorized:
        raise refusal from None
    if other.tenant_id != principal.tenant_id or other.id == principal.id or not other.may(permission):
        raise refusal
    return Principal(principal.kind, principal.id, principal.tenant_id, principal.roles,
                     f"{principal.auth}+cosigned:{other.id}", credential_id=principal.credential_id,
                     scopes=principal.scopes, second_person=True)
