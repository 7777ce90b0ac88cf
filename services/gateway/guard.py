"""The guard around every route: rate limits, authentication, the permission check (deny by
default), co-signing by change id for small-team users (`views_changes.py`), and admission of
signed device requests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from shared.problem_types import MFA_REQUIRED

from .accounts import rules
from .auth import Principal, RateLimited, refused
from .problems import ExtraProblem
from .ratelimit import RateLimiter
from .state import GATEWAY, PRINCIPAL, RAW_BODY, THROTTLES, _query
from .views_changes import cosigned

if TYPE_CHECKING:
    from .routes import Route

def throttle(limiter: RateLimiter, key: str) -> None:
    wait = limiter.take(key, time.monotonic())
    if wait is not None:
        raise RateLimited(wait)


def guarded(route: Route):
    """Wraps a route's view with its authentication and permission check (deny by default)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        gw = request.app[GATEWAY]
        if route.path.startswith("/v1/agent/"):
            throttle(request.app[THROTTLES].agent_by_address, f"ip:{request.remote}")
        if route.auth == "operator":
            principal = await gw.operators.authenticate(request)
            # Roles, narrowed by the credential's scopes (deny by default).
            if route.permission is None or not principal.may(route.permission):
                if route.permission is not None and principal.may_once_mfa(route.permission):
                    raise ExtraProblem(403, "Forbidden", f"requires permission {route.permission}, which your roles "
                                       "give only on a sign-in with MFA: enrol MFA first (strongroom mfa enrol), "
                                       "or sign in again with a TOTP code", type=MFA_REQUIRED)
                raise web.HTTPForbidden(text=f"requires permission {route.permission}")
            if principal.second_person and rules.needs_cosign(route.permission):
                principal = await cosigned(request, principal, route.permission)  # by change id
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
    throttle(request.app[THROTTLES].agent_by_device, f"{principal.tenant_id}/{principal.id}")
    tenant = await request.app[GATEWAY].operators.tenant(principal.tenant_id)
    if tenant is None or tenant.get("status", "active") != "active":
        raise refused("tenant not active", principal.tenant_id, "device", principal.id)
