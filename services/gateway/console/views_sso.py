"""Console single sign-on: "Sign in with <provider>" for a tenant whose OpenID Connect or SAML
identity provider is configured, finishing into the same kind of session cookie as the password
form. The flows, checks and accounts are the API's own (`accounts.views_sso`: PKCE, nonce, single
use state, signed assertions, replay refusal, groups mapped to roles within separation of duties).

What the console adds is the browser binding (a login-CSRF guard): the start sets a random value
in an HttpOnly cookie and keeps only its digest with the single-use state, and the finish refuses a
state whose digest the returning browser's cookie does not match, so an attacker's own state or
assertion cannot sign someone else's browser in. The cookie is SameSite=Lax, path /console/sso,
ten minutes: a provider's redirect back (a top-level GET) carries it. A SAML IdP posts across
sites, which carries no cookie, so the assertion consumer only hands the form over to a same-site
page that posts it on to the finish (`data-autosubmit` in console.js; a Continue button without
script), and that post carries it. States the console makes are tagged `oidc-console` and
`saml-console`: the API's callbacks refuse them, and the console refuses the API's."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from shared.rpc import ProblemError

from ..accounts import views_sso
from ..accounts.common import ACCOUNTS, account_store
from ..auth import RateLimited, Unauthorized
from ..guard import throttle
from ..state import GATEWAY
from .views_signin import HOME, form_page, sign_in_tenant
from .web import COOKIE, PRE_COOKIE, render, secure, set_cookie, with_headers

BIND_COOKIE = "sr_console_sso"
BIND_PATH = "/console/sso"
BIND_SECONDS = int(views_sso.SSO_STATE_TTL.total_seconds())
OIDC_CALLBACK = "/console/sso/oidc/callback"
SAML_ACS = "/console/sso/saml/acs"


def _digest(binding: str) -> str:
    return hashlib.sha256(binding.encode()).hexdigest()


def _refused(request: web.Request, error: str, status: int, tenant: str = "") -> web.StreamResponse:
    response = form_page(request, error=error, status=status, values={"tenant": tenant})
    response.del_cookie(BIND_COOKIE, path=BIND_PATH)
    return with_headers(response)


async def start(request: web.Request) -> web.StreamResponse:
    """Redirects to the tenant's provider with a new single-use state bound to this browser."""
    tenant = request.query.get("tenant", "").strip()[:100]
    try:
        tenant_id = await sign_in_tenant(request, tenant)
    except ProblemError as exc:  # a name two tenants bear
        return _refused(request, exc.problem.detail or exc.problem.title, exc.problem.status, tenant)
    doc = await account_store(request.app[GATEWAY]).tenant(tenant_id) if tenant_id else None
    config = ((doc or {}).get("settings") or {}).get("sso") or {}
    binding = secrets.token_urlsafe(32)
    base = views_sso.base_url(request.app[GATEWAY], request)
    extra = {"browser": _digest(binding)}
    try:
        if config.get("protocol") == "saml":
            url = await views_sso.begin_saml(request, tenant_id or "", protocol="saml-console",
                                             acs_url=base + SAML_ACS, extra=extra)
        else:
            url = await views_sso.begin_oidc(request, tenant_id or "", protocol="oidc-console",
                                             redirect_uri=base + OIDC_CALLBACK, extra=extra)
    except RateLimited:
        return _refused(request, "Too many attempts; wait a little and try again.", 429, tenant)
    except ProblemError:  # no such tenant, or no single sign-on for it
        return _refused(request, "tenant: no single sign-on is set up for that tenant.", 404, tenant)
    response = web.Response(status=302, headers={"Location": url})
    response.set_cookie(BIND_COOKIE, binding, max_age=BIND_SECONDS, path=BIND_PATH, httponly=True, samesite="Lax",
                        secure=secure(request))
    return with_headers(response)


async def _taken(request: web.Request, value: str, protocol: str) -> dict[str, Any]:
    """The single-use state, taken, if this browser started it (else Unauthorized)."""
    state = await views_sso.take_state(request.app[GATEWAY], value, protocol)
    binding = request.cookies.get(BIND_COOKIE, "")
    # SECURITY: a state started in another browser (an attacker's own) is refused: login CSRF.
    if not binding or not hmac.compare_digest(_digest(binding), str(state.get("browser", ""))):
        raise Unauthorized("single sign-on finished in another browser than it started in")
    return state


Finish = Callable[[web.Request, dict[str, Any], str], Awaitable[dict[str, Any]]]


async def _finish(request: web.Request, protocol: str, value: str, finish: Finish, proof: str) -> web.StreamResponse:
    """Takes this browser's state, lets the API's flow finish (`finish` with the code or the
    SAMLResponse), and signs the browser in; a refusal is the sign-in page saying so."""
    try:
        throttle(request.app[ACCOUNTS].login_by_address, f"ip:{request.remote}")
        state = await _taken(request, value, f"{protocol}-console")
        session = await finish(request, state, proof)
    except RateLimited:
        return _refused(request, "Too many attempts; wait a little and try again.", 429)
    except Unauthorized:
        return _refused(request, "Single sign-on failed; start again from this page.", 401)
    except ProblemError as exc:
        return _refused(request, f"Single sign-on refused: {exc.problem.detail or exc.problem.title}",
                        exc.problem.status)
    # A page that moves on by itself rather than a redirect: the provider began this navigation from
    # another site, and a browser may withhold a SameSite=Strict cookie along such a redirect chain.
    response = render("signed_in.html", request, {"home": HOME, "provider": protocol.upper()})
    set_cookie(request, response, COOKIE, session["session_token"], request.app[GATEWAY].settings.session_absolute_seconds)
    response.del_cookie(BIND_COOKIE, path=BIND_PATH)
    response.del_cookie(PRE_COOKIE, path="/console")
    return with_headers(response)


async def oidc_callback(request: web.Request) -> web.StreamResponse:
    """The OpenID provider sent the browser back with a code and the state."""
    state, code = request.query.get("state", ""), request.query.get("code", "")
    if not (0 < len(state) <= 1024 and 0 < len(code) <= 1024):
        return _refused(request, "Single sign-on failed: the provider's answer lacks its state or code.", 400)
    return await _finish(request, "oidc", state, views_sso.finish_oidc, code)


async def saml_acs(request: web.Request) -> web.StreamResponse:
    """The IdP posted its Response from its own site (no cookie comes with it): hand the same two
    fields over to a page of ours that posts them to the finish, same-site."""
    try:
        saml_response, relay_state = await views_sso.saml_form(request)
    except ProblemError as exc:
        return _refused(request, f"Single sign-on failed: {exc.problem.detail}", 400)
    if len(saml_response) > views_sso.sso_saml.MAX_RESPONSE_CHARS or len(relay_state) > 200:
        return _refused(request, "Single sign-on failed: the identity provider's answer is too large.", 400)
    return with_headers(render("sso_continue.html", request, {"saml_response": saml_response,
                                                              "relay_state": relay_state}))


async def saml_finish(request: web.Request) -> web.StreamResponse:
    """The hand-over page posted the IdP's Response back, now with this browser's binding cookie."""
    try:
        saml_response, relay_state = await views_sso.saml_form(request)
    except ProblemError as exc:
        return _refused(request, f"Single sign-on failed: {exc.problem.detail}", 400)
    return await _finish(request, "saml", relay_state, views_sso.finish_saml, saml_response)
