"""Single sign-on: OpenID Connect (authorization code with PKCE) and SAML 2.0 (HTTP-POST
binding). The identity provider's groups map to roles at every sign-in, within separation of
duties; an SSO identity is never linked to a local account by name alone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web

from shared import events
from shared.rpc import NotFound, ProblemError

from ..auth import Unauthorized
from ..guard import throttle
from ..state import Gateway, _json, _now
from . import rules, sso_oidc, sso_saml
from .common import ACCOUNTS, account_store, context, event_fields, new_user, sign_in_failed, start_session, tenant_kind
from .invitations import notify_admins

SSO_STATE_TTL = timedelta(minutes=10)


async def _sso_config(gw: Gateway, tenant_id: str, protocol: str) -> dict[str, Any]:
    tenant = await account_store(gw).tenant(tenant_id) if tenant_id else None
    config = ((tenant or {}).get("settings") or {}).get("sso")
    if tenant is None or tenant.get("status") != "active" or not config or config.get("protocol") != protocol:
        raise NotFound(f"{protocol} sign-in for this tenant", "tenant")
    return config


def base_url(gw: Gateway, request: web.Request) -> str:
    """Where browsers reach this gateway: the public URL, else the request's own scheme and host."""
    return gw.settings.public_url or f"{request.scheme}://{request.host}"


def _redirect_uri(gw: Gateway, request: web.Request, config: dict[str, Any]) -> str:
    return config.get("redirect_uri") or f"{base_url(gw, request)}/v1/auth/oidc/callback"


async def begin_oidc(request: web.Request, tenant_id: str, *, protocol: str = "oidc", redirect_uri: str | None = None,
                     extra: dict[str, Any] | None = None) -> str:
    """The provider's authorization URL for a new single-use state (kept with `extra`, tagged
    `protocol` so only the callback that made it may take it)."""
    gw, acc = context(request)
    throttle(acc.login_by_address, f"ip:{request.remote}")
    config = await _sso_config(gw, tenant_id, "oidc")
    redirect_uri = redirect_uri or _redirect_uri(gw, request, config)
    auth = sso_oidc.authorization_request(config, redirect_uri)
    await account_store(gw).insert_sso_state(tenant_id, {
        "state": auth.state, "protocol": protocol, "nonce": auth.nonce, "code_verifier": auth.code_verifier,
        "redirect_uri": redirect_uri, "expires_at": _now() + SSO_STATE_TTL, **(extra or {})})
    return auth.url


async def take_state(gw: Gateway, value: str, protocol: str) -> dict[str, Any]:
    """Takes (deletes) a single-use SSO state made by `protocol`'s start; refused when unknown,
    expired or made for another flow."""
    # SECURITY: taken before anything else, so each state is answered once, whatever follows.
    state = await account_store(gw).take_sso_state(value[:200])
    if state is None or state["expires_at"] <= _now() or state.get("protocol", "oidc") != protocol:
        raise Unauthorized(f"unknown or expired {protocol} state")
    return state


async def oidc_start(request: web.Request) -> web.Response:
    """Redirects to the tenant's OpenID provider (authorization code flow with PKCE)."""
    raise web.HTTPFound(await begin_oidc(request, request.query.get("tenant", "")[:100]))


async def oidc_callback(request: web.Request) -> web.Response:
    """The provider sent the browser back with a code: exchange it, check the ID token, map the
    groups to roles and start a session (auth "oidc")."""
    gw, acc = context(request)
    throttle(acc.login_by_address, f"ip:{request.remote}")
    for name in ("state", "code"):
        if not 0 < len(request.query.get(name, "")) <= 1024:
            raise ProblemError(400, "Bad Request", f"{name} is required", name)
    state = await take_state(gw, request.query["state"], "oidc")
    session = await finish_oidc(request, state, request.query["code"])
    return _json({**session, "mfa_enrolment_required": False}, 201)


async def finish_oidc(request: web.Request, state: dict[str, Any], code: str) -> dict[str, Any]:
    """For a state already taken: exchange the code, check the ID token, map the groups to roles
    and start a session (auth "oidc"); the session as `start_session` answers it."""
    gw, acc = context(request)
    tenant_id = state["tenant_id"]
    config = await _sso_config(gw, tenant_id, "oidc")
    if config.get("client_secret"):
        config = {**config, "client_secret": acc.sealer.open(
            config["client_secret"], purpose="oidc_client_secret", tenant_id=tenant_id, owner="sso")}
    form = sso_oidc.token_request(config, code=code, redirect_uri=state["redirect_uri"],
                                  code_verifier=state["code_verifier"])
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.post(config["token_endpoint"], data=form) as resp:
                tokens_doc = await resp.json(content_type=None) if resp.status == 200 else {}
            async with http.get(config["jwks_uri"]) as resp:
                jwks = await resp.json(content_type=None)
        claims = sso_oidc.validate_id_token(str(tokens_doc.get("id_token", "")), jwks, issuer=config["issuer"],
                                            client_id=config["client_id"], nonce=state["nonce"])
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        reason = str(exc) if isinstance(exc, sso_oidc.InvalidIdToken) else "identity provider unreachable"
        await sign_in_failed(request, gw, tenant_id, "(oidc)", None, "oidc", reason, count=False)
        raise Unauthorized(reason) from None
    username = str(claims.get("preferred_username") or claims.get("email") or claims["sub"]).lower()[:64]
    groups = claims.get(config.get("groups_claim") or "groups") or []
    mfa_done = bool(set(claims.get("amr") or []) & {"mfa", "otp", "hwk", "swk"})
    user = await sso_user(request, gw, tenant_id, source="oidc", external_id=str(claims["sub"]), username=username,
                          groups=[str(g) for g in groups] if isinstance(groups, list) else [], config=config)
    return await start_session(request, gw, user, method="oidc", mfa=mfa_done)


async def sso_user(request: web.Request, gw: Gateway, tenant_id: str, *, source: str, external_id: str,
                   username: str, groups: list[str], config: dict[str, Any]) -> dict[str, Any]:
    """The user an identity provider vouched for, created on first sign-in; roles follow the
    tenant's group mapping at every sign-in, within separation of duties."""
    roles = rules.roles_from_groups(groups, config.get("group_roles") or {})
    _, small_team = await tenant_kind(gw, tenant_id)
    decision = rules.check_role_set(roles, small_team=small_team)
    if not decision.allowed:
        await sign_in_failed(request, gw, tenant_id, username, None, source, decision.reason, count=False)
        raise ProblemError(403, "Forbidden", decision.reason, "groups")
    actor = events.Actor(kind="user", id="unknown", auth=source)
    user = await account_store(gw).user_by_external_id(tenant_id, source, external_id)
    if user is None:
        if await account_store(gw).user_by_username(tenant_id, username) is not None:
            # SECURITY: never link an SSO identity to a local account by name alone.
            await sign_in_failed(request, gw, tenant_id, username, None, source, "username taken by another account", count=False)
            raise Unauthorized("sso username collides")
        user = new_user(username=username, roles=sorted(roles), source=source, external_id=external_id)
        # Roles from the IdP's groups take effect at sign-in (its mapping was confirmed by a second admin).
        user.update(rules.confirmed_admin_since(frozenset(), roles, user["created_at"]))
        fields = event_fields(request, tenant_id, events.Actor(kind="user", id=user["user_id"], auth=source))
        await account_store(gw).insert_user(tenant_id, user, events.UserCreated(
            **fields, user_id=user["user_id"], username=username, roles=tuple(sorted(roles)), source=source))
        user["tenant_id"] = tenant_id
        await _tell_admins(request, gw, tenant_id, user, frozenset(), roles, source)
        return user
    if user.get("status") != "active":
        await sign_in_failed(request, gw, tenant_id, username, user, source, "user disabled", count=False)
        raise Unauthorized("user disabled")
    if set(user["roles"]) != roles:
        actor = events.Actor(kind="user", id=user["user_id"], auth=source)
        event = events.UserRolesChanged(**event_fields(request, tenant_id, actor), type="user.role_granted",
                                        user_id=user["user_id"], roles=tuple(sorted(roles)), granted_by=f"{source}-groups")
        await account_store(gw).sync_roles(tenant_id, user["user_id"], sorted(roles), event,
                                           rules.confirmed_admin_since(frozenset(user["roles"]), roles, event.occurred_at))
        gw.operators.forget_user(tenant_id, user["user_id"])
        await _tell_admins(request, gw, tenant_id, user, frozenset(user["roles"]), roles, source)
        user = {**user, "roles": sorted(roles)}
    return user


async def _tell_admins(request: web.Request, gw: Gateway, tenant_id: str, user: dict[str, Any],
                       before: frozenset[str], after: frozenset[str], source: str) -> None:
    """Roles the identity provider's groups grant are role grants too: every admin hears of them."""
    granted = sorted(after - before)
    if granted:
        await notify_admins(gw, request.app[ACCOUNTS], tenant_id, f"roles granted to {user['username']} by single sign-on", [
            f"The identity provider ({source}) signed in {user['username']} ({user['user_id']}) with groups that map "
            f"to: {', '.join(granted)}. In effect now (the group mapping was confirmed by a second admin)."])


# --- SAML 2.0 -------------------------------------------------------------------------------------


def _saml_endpoints(gw: Gateway, request: web.Request, config: dict[str, Any]) -> tuple[str, str]:
    """Our SP entity id (the audience the IdP must name) and assertion consumer service URL."""
    base = base_url(gw, request)
    return config.get("sp_entity_id") or f"{base}/v1/auth/saml/metadata", f"{base}/v1/auth/saml/acs"


async def begin_saml(request: web.Request, tenant_id: str, *, protocol: str = "saml", acs_url: str | None = None,
                     extra: dict[str, Any] | None = None) -> str:
    """The IdP's URL carrying a new AuthnRequest whose ID the response must answer (its relay
    state single-use, tagged `protocol`, kept with `extra`)."""
    gw, acc = context(request)
    throttle(acc.login_by_address, f"ip:{request.remote}")
    config = await _sso_config(gw, tenant_id, "saml")
    sp_entity_id, api_acs_url = _saml_endpoints(gw, request, config)
    acs_url = acs_url or api_acs_url
    authn = sso_saml.authn_request(idp_sso_url=config["idp_sso_url"], sp_entity_id=sp_entity_id, acs_url=acs_url,
                                   now=_now())
    await account_store(gw).insert_sso_state(tenant_id, {
        "state": authn.relay_state, "protocol": protocol, "request_id": authn.request_id,
        "sp_entity_id": sp_entity_id, "acs_url": acs_url, "expires_at": _now() + SSO_STATE_TTL, **(extra or {})})
    return authn.url


async def saml_start(request: web.Request) -> web.Response:
    """Redirects to the tenant's SAML IdP with an AuthnRequest whose ID the response must answer."""
    raise web.HTTPFound(await begin_saml(request, request.query.get("tenant", "")[:100]))


async def saml_metadata(request: web.Request) -> web.Response:
    """Our service-provider metadata (entity id, ACS) for the tenant's IdP administrator."""
    gw, _ = context(request)
    config = await _sso_config(gw, request.query.get("tenant", "")[:100], "saml")
    sp_entity_id, acs_url = _saml_endpoints(gw, request, config)
    return web.Response(text=sso_saml.sp_metadata(sp_entity_id=sp_entity_id, acs_url=acs_url),
                        content_type="application/samlmetadata+xml")


async def saml_form(request: web.Request) -> tuple[str, str]:
    """The SAMLResponse and RelayState an IdP posted (HTTP-POST binding), or 400 naming the field."""
    try:
        form = await request.post()
    except ValueError:
        raise ProblemError(400, "Bad Request", "expected a form body (HTTP-POST binding)", "SAMLResponse") from None
    for name in ("SAMLResponse", "RelayState"):
        value = form.get(name)
        if not isinstance(value, str) or not value:
            raise ProblemError(400, "Bad Request", f"{name} is required", name)
    return str(form["SAMLResponse"]), str(form["RelayState"])


async def saml_acs(request: web.Request) -> web.Response:
    """The IdP posted its Response (HTTP-POST binding): check it against the request we made
    (single use), refuse replayed assertions, map groups to roles and start a session."""
    gw, acc = context(request)
    throttle(acc.login_by_address, f"ip:{request.remote}")
    saml_response, relay_state = await saml_form(request)
    state = await take_state(gw, relay_state, "saml")
    session = await finish_saml(request, state, saml_response)
    return _json({**session, "mfa_enrolment_required": False}, 201)


async def finish_saml(request: web.Request, state: dict[str, Any], saml_response: str) -> dict[str, Any]:
    """For a relay state already taken: verify the Response against the request we made, refuse
    a replayed assertion, map groups to roles and start a session (auth "saml")."""
    gw, _ = context(request)
    tenant_id = state["tenant_id"]
    config = await _sso_config(gw, tenant_id, "saml")
    try:
        root = sso_saml.decode_response(saml_response)
    except sso_saml.MalformedResponse as exc:
        await sign_in_failed(request, gw, tenant_id, "(saml)", None, "saml", str(exc), count=False)
        raise ProblemError(400, "Bad Request", str(exc), "SAMLResponse") from None
    try:
        identity = sso_saml.verify_response(
            root, idp_certificate_pem=config["idp_certificate_pem"], idp_entity_id=config["idp_entity_id"],
            sp_entity_id=state["sp_entity_id"], acs_url=state["acs_url"], request_id=state["request_id"], now=_now())
    except (sso_saml.InvalidResponse, ValueError) as exc:
        reason = str(exc) if isinstance(exc, sso_saml.InvalidResponse) else "unusable idp certificate"
        await sign_in_failed(request, gw, tenant_id, "(saml)", None, "saml", reason, count=False)
        raise Unauthorized(reason) from None
    username = identity.name_id.lower()[:64]
    if not await account_store(gw).first_use_of_assertion(tenant_id, identity.assertion_id, identity.remember_until):
        await sign_in_failed(request, gw, tenant_id, username, None, "saml", "replayed assertion", count=False)
        raise Unauthorized("replayed saml assertion")
    groups = identity.attributes.get(config.get("groups_claim") or "groups", [])
    user = await sso_user(request, gw, tenant_id, source="saml", external_id=identity.name_id, username=username,
                          groups=groups, config=config)
    return await start_session(request, gw, user, method="saml", mfa=identity.mfa)
