"""What every console page shares: the session cookie, its CSRF token, the security headers, and
the guard that signs a request in (by cookie) and checks the route's permission with the same
table as the API (`permissions.py` through `Principal.may`).

The cookie holds an ordinary session token (`/v1/auth/login` issues the same kind), so a console
session is an API session: the same idle and absolute limits, the same logout and revocation."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from ..auth import SESSION_PREFIX, Principal, Unauthorized
from ..state import GATEWAY, PRINCIPAL

COOKIE = "sr_console"
PRE_COOKIE = "sr_console_pre"  # the sign-in form's own CSRF token, before there is a session
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
# No inline script or style anywhere: scripts and styles come only from /console/static.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOGIN_PATH = "/console/login"

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


def csrf_token(session_token: str) -> str:
    """The session's CSRF token: an HMAC keyed by the session token itself, which only the HttpOnly
    cookie holds; any gateway instance derives the same one, and it ends with the session."""
    return hmac.new(session_token.encode(), b"strongroom-console-csrf", hashlib.sha256).hexdigest()


def secure(request: web.Request) -> bool:
    """Cookies are Secure when the console is reached over TLS (directly or as the public URL says)."""
    public_url = request.app[GATEWAY].settings.public_url or ""
    return request.secure or public_url.startswith("https://")


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/console", httponly=True, samesite="Strict",
                        secure=secure(request))


def with_headers(response: web.StreamResponse) -> web.StreamResponse:
    if not response.prepared:  # a stream sent its headers when it opened
        response.headers.update(SECURITY_HEADERS)
    return response


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def render(template: str, request: web.Request, context: dict[str, Any], status: int = 200) -> web.Response:
    """A page or fragment; every page sees who is signed in, their CSRF token and what they may do."""
    principal: Principal | None = request.get(PRINCIPAL)
    base = {"principal": principal, "csrf": request.get(CSRF_KEY, ""),
            "may": (lambda permission: principal is not None and principal.may(permission))}
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)


CSRF_KEY = web.RequestKey("console_csrf", str)


async def signed_in(request: web.Request) -> tuple[Principal, str] | None:
    """The principal of the request's console cookie and that session token, or None."""
    token = request.cookies.get(COOKIE, "")
    if not token.startswith(SESSION_PREFIX) or len(token) > 200:
        return None
    try:
        return await request.app[GATEWAY].operators.resolve(token), token
    except Unauthorized:
        return None


def same_csrf(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), given.encode())  # type: ignore[union-attr]


async def _csrf_given(request: web.Request) -> str | None:
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        given = (await request.post()).get(CSRF_FIELD)  # type: ignore[assignment]
    return given if isinstance(given, str) else None


def page(view: View, permission: str) -> View:
    """Wraps a console view: security headers always; a signed-in session (else the sign-in page,
    or 401 for a change); every change carries the session's CSRF token (else 403); the route's
    permission (else 403), deny by default."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return with_headers(await _guarded(view, permission, request))
        except web.HTTPForbidden as exc:
            if request.method == "GET" and request.get(PRINCIPAL) is not None and not request.headers.get("HX-Request"):
                return with_headers(render("forbidden.html", request, {"reason": exc.text}, status=403))
            with_headers(exc)
            raise
        except web.HTTPException as exc:
            with_headers(exc)
            raise

    handler.__name__ = getattr(view, "__name__", "view")
    return handler


async def _guarded(view: View, permission: str, request: web.Request) -> web.StreamResponse:
    found = await signed_in(request)
    if found is None:
        if request.method == "GET" and not request.headers.get("HX-Request"):
            raise web.HTTPSeeOther(LOGIN_PATH)
        raise web.HTTPUnauthorized(text="sign in at /console/login")
    principal, token = found
    request[CSRF_KEY] = csrf_token(token)
    if request.method not in ("GET", "HEAD") and not same_csrf(request[CSRF_KEY], await _csrf_given(request)):
        raise web.HTTPForbidden(text="missing or wrong CSRF token")
    request[PRINCIPAL] = principal
    if not principal.may(permission):
        raise web.HTTPForbidden(text=f"requires permission {permission}")
    return await view(request)


def new_pre_token() -> str:
    return secrets.token_urlsafe(32)
