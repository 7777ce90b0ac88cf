"""Console sign-in and sign-out: the API's own sign-in (`accounts.views_signin.sign_in`: password,
then TOTP or a recovery code; lockout, audit) behind a form, its session token kept in an HttpOnly
SameSite=Strict cookie; sign-out is the API's logout of that session."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from shared.rpc import ProblemError

from ..accounts import schemas as S
from ..accounts import views_signin
from ..accounts.common import account_store
from ..auth import RateLimited, Unauthorized
from ..state import GATEWAY, THROTTLES
from .web import COOKIE, PRE_COOKIE, new_pre_token, render, same_csrf, see_other, set_cookie, with_headers

HOME = "/console/overview"
_PRE_MAX_AGE = 3600


async def sign_in_tenant(request: web.Request, tenant: str) -> str | None:
    """The tenant a console sign-in names, as the API resolves it (`accounts.views_signin`), or
    None; a name two tenants bear raises its 422 problem."""
    gw = request.app[GATEWAY]
    if not tenant and gw.settings.deployment != "enterprise":
        return None
    return await views_signin.sign_in_tenant(gw, tenant[:100] or None)


def provider_label(config: dict[str, Any]) -> str:
    """How the sign-in button names the provider: the host of its issuer or sign-on URL."""
    url = config.get("issuer") if config.get("protocol") == "oidc" else config.get("idp_sso_url")
    host = urllib.parse.urlsplit(str(url or "")).hostname
    return f"{host} ({config['protocol'].upper()})" if host else config["protocol"].upper()


async def offer(request: web.Request, tenant: str) -> dict[str, str] | None:
    """What the sign-in page offers for `tenant`: its provider's label and the start link, or None
    (no such active tenant, or no single sign-on)."""
    tenant_id = await sign_in_tenant(request, tenant)
    doc = await account_store(request.app[GATEWAY]).tenant(tenant_id) if tenant_id else None
    config = ((doc or {}).get("settings") or {}).get("sso")
    if doc is None or doc.get("status") != "active" or not config:
        return None
    return {"label": provider_label(config), "href": "/console/sso/start?" + urllib.parse.urlencode({"tenant": tenant})}


async def login_form(request: web.Request) -> web.StreamResponse:
    """The sign-in form; with `?tenant=` (or in an enterprise deployment) it also offers that
    tenant's single sign-on, when it has one."""
    tenant = request.query.get("tenant", "").strip()[:100]
    try:
        sso = await offer(request, tenant) if tenant or request.app[GATEWAY].settings.deployment == "enterprise" else None
    except ProblemError as exc:  # a name two tenants bear
        return with_headers(form_page(request, error=_problem_text(exc), status=exc.problem.status,
                                      values={"tenant": tenant}))
    error = None if sso or not tenant else "No single sign-on is set up for that tenant; sign in with your password."
    return with_headers(form_page(request, error=error, values={"tenant": tenant}, sso=sso))


def _problem_text(exc: ProblemError) -> str:
    detail = exc.problem.detail or exc.problem.title
    return detail[:1].upper() + detail[1:] + "."


def form_page(request: web.Request, *, error: str | None, status: int = 200, values: dict | None = None,
              sso: dict[str, str] | None = None) -> web.Response:
    """The sign-in form with a fresh pre-session CSRF token (a login-CSRF guard: a page on another
    site cannot sign a browser in to someone else's account)."""
    pre = new_pre_token()
    gw = request.app[GATEWAY]
    response = render("login.html", request, {
        "error": error, "pre": pre, "values": values or {}, "sso": sso,
        "tenant_field": gw.settings.deployment != "enterprise",
    }, status=status)
    set_cookie(request, response, PRE_COOKIE, pre, _PRE_MAX_AGE)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if not same_csrf(request.cookies.get(PRE_COOKIE, ""), form.get("csrf_token")):  # type: ignore[arg-type]
        return with_headers(form_page(request, error="The form expired; please sign in again.", status=403))
    fields = {k: str(form.get(k, "")).strip() for k in ("tenant", "username", "password", "totp", "recovery_code")}
    fields["password"] = str(form.get("password", ""))  # passwords are taken as typed
    values = {k: fields[k] for k in ("tenant", "username")}
    try:
        body = S.Login.model_validate({k: v for k, v in fields.items() if v})
    except ValidationError as exc:
        names = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})
        return with_headers(form_page(request, error=f"Please check: {', '.join(names)}.", status=422, values=values))
    try:
        session = await views_signin.sign_in(request, body)
    except RateLimited:
        return with_headers(form_page(request, error="Too many attempts; wait a little and try again.", status=429,
                                  values=values))
    except ProblemError as exc:  # the API's refusal naming a field (a name two tenants bear)
        return with_headers(form_page(request, error=_problem_text(exc), status=exc.problem.status, values=values))
    except Unauthorized:
        # Counted like an API refusal (the sign-in itself was audited and counted toward lockout).
        request.app[THROTTLES].auth_failures.take(f"ip:{request.remote}", time.monotonic())
        return with_headers(form_page(request, error="Sign-in failed: check your name, password and code.", status=401,
                                  values=values))
    response = see_other(HOME + ("?mfa=required" if session["mfa_enrolment_required"] else ""))
    set_cookie(request, response, COOKIE, session["session_token"], request.app[GATEWAY].settings.session_absolute_seconds)
    response.del_cookie(PRE_COOKIE, path="/console")
    return with_headers(response)


async def logout(request: web.Request) -> web.StreamResponse:
    """Ends the session as the API's logout does (audited, every instance forgets it)."""
    await views_signin.logout(request)
    response = see_other("/console/login")
    response.del_cookie(COOKIE, path="/console")
    return response
