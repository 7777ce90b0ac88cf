"""Tenants: the bootstrap of the first admin, customer tenants' lifecycle (provider), and a
tenant's own settings, where widening changes wait for a second tenant admin."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shared import events
from shared.rpc import NotFound, ProblemError, RpcRequest

from ..auth import PROVIDER_TENANT, Principal, Unauthorized
from ..roles import PROVIDER_ADMIN, TENANT_ADMIN
from ..state import CORRELATION_ID, PRINCIPAL, Gateway, _json, _now, body_as
from . import rules
from . import schemas as S
from .common import ACCOUNTS, account_store, acting_user, check_password, context, event_fields, new_user
from .invitations import deliver, setup_fields


async def bootstrap(request: web.Request) -> web.Response:
    """The bootstrap credential creates the first admin (provider admin or, in enterprise mode,
    the single tenant and its admin), and may name a second one, an admin from creation too; it is
    disabled from then on."""
    gw, acc = context(request)
    body = await body_as(request, S.Bootstrap)
    check_password(body.password, body.username)
    provider = gw.settings.deployment == "provider"
    tenant_id = PROVIDER_TENANT if provider else events.new_id("ten_")
    user = new_user(username=body.username, roles=[(PROVIDER_ADMIN if provider else TENANT_ADMIN).name],
                     source="bootstrap", password_hash=await acc.hash(body.password),
                     **({"email": body.email} if body.email else {}))
    user["admin_since"] = user["created_at"]
    # SECURITY: the marker insert is the compare-and-swap: only one bootstrap ever succeeds.
    if not await account_store(gw).mark_bootstrapped(tenant_id, user["user_id"], _now()):
        gw.operators.mark_bootstrapped()
        raise Unauthorized("bootstrap credential used after bootstrap")
    gw.operators.mark_bootstrapped()
    fields = event_fields(request, tenant_id)
    name = "provider" if provider else gw.settings.enterprise_tenant_name
    tenant = {"name": name, "kind": "provider" if provider else "customer", "status": "active",
              "created_at": _now(), "settings": {}}
    await account_store(gw).insert_tenant(tenant_id, tenant, events.TenantCreated(**fields, name=name))
    await account_store(gw).insert_user(tenant_id, user, events.UserCreated(
        **fields, user_id=user["user_id"], username=user["username"], roles=tuple(user["roles"]), source="bootstrap"))
    out = {"tenant_id": tenant_id, "user_id": user["user_id"], "username": user["username"],
           "roles": user["roles"], "deployment": gw.settings.deployment}
    if body.second_admin_username and body.second_admin_email:
        # The second admin (the provider's, or the enterprise tenant's), invited at their own address:
        # admin grants wait for a second admin, whom a lone admin cannot make.
        second = await _invite_first_admin(request, tenant_id, name, body.second_admin_username, body.second_admin_email,
                                           role=user["roles"][0])
        out["second_admin"] = {"user_id": second["user_id"], "username": second["username"],
                               "invitation": second["invitation"]}
    return _json(out, 201)


async def _invite_first_admin(request: web.Request, tenant_id: str, tenant_name: str, username: str,
                              email: str, *, role: str = TENANT_ADMIN.name) -> dict[str, Any]:
    """A tenant's first admins are invited by whoever creates the tenant; with nobody to confirm
    them yet, their role is in effect from creation, and they act once they have set up their own
    password and MFA with the invitation sent to their address."""
    gw, acc = context(request)
    token, setup = setup_fields(gw)
    user = new_user(username=username, roles=[role], email=email, **setup)
    user["admin_since"] = user["created_at"]
    await account_store(gw).insert_user(tenant_id, user, events.UserCreated(
        **event_fields(request, tenant_id), user_id=user["user_id"], username=username, roles=(role,)))
    await deliver(gw, acc, tenant_id, user, token, tenant_name=tenant_name)
    return user


async def create_tenant(request: web.Request) -> web.Response:
    """Provider: a customer tenant and its first admin (and a second), each invited at their own
    address. No setup token is returned: the provider never controls a tenant admin."""
    gw, _ = context(request)
    body = await body_as(request, S.CreateTenant)
    tenant_id = events.new_id("ten_")
    fields = event_fields(request, tenant_id)
    tenant = {"name": body.name, "kind": "customer", "status": "active", "created_at": _now(), "settings": {}}
    await account_store(gw).insert_tenant(tenant_id, tenant, events.TenantCreated(**fields, name=body.name))
    admins = [await _invite_first_admin(request, tenant_id, body.name, body.admin_username, body.admin_email)]
    if body.second_admin_username and body.second_admin_email:
        admins.append(await _invite_first_admin(request, tenant_id, body.name, body.second_admin_username,
                                                body.second_admin_email))
    first = admins[0]
    return _json({"tenant_id": tenant_id, "name": body.name, "admin_user_id": first["user_id"],
                  "admin_username": first["username"], "invitation": first["invitation"],
                  "admins": [{"user_id": a["user_id"], "username": a["username"], "email": a["email"],
                              "invitation": a["invitation"]} for a in admins]}, 201)


async def _usage(gw: Gateway, tenant_id: str) -> dict[str, int]:
    return {
        "users": await account_store(gw).count_active_users(tenant_id),
        "devices": await gw.store.count_active_devices(tenant_id),
        "tokens": await account_store(gw).count_live_tokens(tenant_id),
    }


def _tenant_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("tenant_id", "name", "status", "created_at")}


async def _offboarding(request: web.Request, gw: Gateway, tenant_id: str) -> dict[str, Any] | None:
    """keysvc's record of an offboarded tenant's shredding (None until keysvc has taken it up)."""
    principal: Principal = request[PRINCIPAL]
    reply = await gw.bus.call("keysvc", RpcRequest(
        method="get_offboarding", tenant_id=tenant_id, actor=principal.actor, correlation_id=request[CORRELATION_ID],
        source_ip=request.remote), timeout=gw.settings.rpc_timeout_seconds)
    if reply.problem is not None:
        if reply.problem.status == 404:
            return None
        raise ProblemError(reply.problem.status, reply.problem.title, reply.problem.detail, reply.problem.field)
    return reply.result


async def _listed(request: web.Request, gw: Gateway, doc: dict[str, Any]) -> dict[str, Any]:
    view = {**_tenant_view(doc), "usage": await _usage(gw, doc["tenant_id"])}
    if doc["status"] == "offboarded":
        # The gateway's offboarding is final at once; the tenant shows as offboarded only when keysvc
        # has shredded its keys (with the counts and the signed certificate), offboarding until then.
        shred = await _offboarding(request, gw, doc["tenant_id"])
        view["status"] = "offboarded" if shred and shred["status"] == "shredded" else "offboarding"
        view["offboarding"] = shred
    return view


async def list_tenants(request: web.Request) -> web.Response:
    """Provider: customer tenants with their status and usage (counts only, never content); an
    offboarded tenant's shredding, from keysvc."""
    gw, _ = context(request)
    docs = await account_store(gw).customer_tenants()
    return _json({"items": [await _listed(request, gw, d) for d in docs]})


async def _lifecycle(request: web.Request, action: str) -> web.Response:
    gw, _ = context(request)
    tenant_id = request.match_info["tenant_id"]
    doc = await account_store(gw).customer_tenant(tenant_id) if tenant_id != PROVIDER_TENANT else None
    if doc is None:
        raise NotFound("tenant", "tenant_id")
    transition = rules.tenant_transition(action, doc["status"])
    if transition is None:
        raise ProblemError(409, "Conflict", f"tenant is {doc['status']}; cannot {action}", "tenant_id")
    new_state, event_type = transition
    event = events.TenantLifecycleChanged(**event_fields(request, tenant_id), type=event_type)
    if not await account_store(gw).change_tenant_status(tenant_id, was=doc["status"], now=new_state, at=_now(), event=event):
        raise ProblemError(409, "Conflict", "the tenant changed meanwhile; retry", "tenant_id")
    gw.operators.forget_tenant(tenant_id)
    # Offboarding reaches keysvc through the outbox (tenant.offboarded); it shreds the tenant's keys.
    return _json({**_tenant_view(doc), "status": "offboarding" if new_state == "offboarded" else new_state})


async def suspend_tenant(request: web.Request) -> web.Response:
    return await _lifecycle(request, "suspend")


async def resume_tenant(request: web.Request) -> web.Response:
    return await _lifecycle(request, "resume")


async def offboard_tenant(request: web.Request) -> web.Response:
    """For good: the tenant's credentials stop at once, and keysvc shreds its KEKs and wrapped keys
    (the tenant list shows offboarding, then offboarded with the signed certificate)."""
    return await _lifecycle(request, "offboard")


def _pending_view(change: dict[str, Any]) -> dict[str, Any]:
    return {k: change.get(k) for k in ("change_id", "shown", "requested_by", "requested_at")}


async def get_settings(request: web.Request) -> web.Response:
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    doc = await account_store(gw).tenant(principal.tenant_id)
    settings = dict((doc or {}).get("settings", {}))
    if "sso" in settings:
        settings["sso"] = {k: v for k, v in settings["sso"].items() if k != "client_secret"}
    return _json({"small_team": bool(settings.get("small_team")), "sso_only": bool(settings.get("sso_only")),
                  "allowed_email_domains": settings.get("allowed_email_domains") or [],
                  **{k: v for k, v in settings.items() if k not in ("small_team", "sso_only", "allowed_email_domains")},
                  "pending_changes": [_pending_view(c) for c in (doc or {}).get("pending_settings", [])]})


def _shown(settings: dict[str, Any]) -> dict[str, Any]:
    """What events and the confirming admin see of a settings change (never a client secret)."""
    shown = dict(settings)
    if "sso" in shown:
        sso = shown["sso"]
        shown["sso"] = {"protocol": sso["protocol"], "group_roles": sso["group_roles"],
                        "idp": sso.get("issuer") or sso.get("idp_entity_id")}
    if "cloud_identity" in shown:  # public certificates and keys, but long: the event names what changed
        anchors = shown["cloud_identity"]
        shown["cloud_identity"] = {"aws_regions": sorted(anchors["aws_region_certs"]),
                                   "gcp_keys": [k.get("kid") for k in anchors["gcp_jwks"].get("keys", [])],
                                   "azure_roots": len(anchors["azure_roots"])}
    return shown


async def _requested_changes(request: web.Request, gw: Gateway, principal: Principal,
                             body: S.TenantSettings) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if body.small_team is not None:
        if not body.small_team:
            users = await account_store(gw).active_users(principal.tenant_id)
            if any(rules.conflicting(frozenset(u["roles"]) | {p["role"] for p in u.get("pending", [])}) for u in users):
                raise ProblemError(409, "Conflict", "some users hold conflicting roles; revoke them first", "small_team")
        changes["small_team"] = body.small_team
    if body.sso_only is not None:
        tenant = await account_store(gw).tenant(principal.tenant_id)
        if body.sso_only and body.sso is None and not (tenant or {}).get("settings", {}).get("sso"):
            raise ProblemError(422, "Unprocessable Content", "configure single sign-on first", "sso_only")
        changes["sso_only"] = body.sso_only
    if body.allowed_email_domains is not None:
        changes["allowed_email_domains"] = body.allowed_email_domains
    if body.token_max_days is not None:
        changes["token_max_days"] = body.token_max_days
    if body.cloud_identity is not None:
        changes["cloud_identity"] = body.cloud_identity.model_dump(mode="json")
    if body.zero_touch is not None:
        changes["zero_touch"] = body.zero_touch.model_dump(mode="json")
    if body.sso is not None:
        changes["sso"] = body.sso.model_dump()
        if body.sso.client_secret:
            changes["sso"]["client_secret"] = request.app[ACCOUNTS].sealer.seal(
                body.sso.client_secret, purpose="oidc_client_secret", tenant_id=principal.tenant_id, owner="sso")
    if not changes:
        raise ProblemError(422, "Unprocessable Content", "nothing to change", "body")
    return changes


async def put_settings(request: web.Request) -> web.Response:
    """Tenant admin: small-team mode and single sign-on. Turning small-team mode on and any
    single sign-on change wait for a second tenant admin (202 with the pending change)."""
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    body = await body_as(request, S.TenantSettings)
    changes = await _requested_changes(request, gw, principal, body)
    held_names = rules.settings_needing_confirmation(small_team=body.small_team, sso_changed=body.sso is not None,
                                                     sso_only=body.sso_only,
                                                     domains_changed=body.allowed_email_domains is not None,
                                                     anchors_changed=body.cloud_identity is not None,
                                                     zero_touch_changed=body.zero_touch is not None)
    held = {k: v for k, v in changes.items() if k in held_names}
    now_applied = {k: v for k, v in changes.items() if k not in held_names}
    fields = event_fields(request, principal.tenant_id)
    if now_applied:
        event = events.TenantSettingsChanged(**fields, settings=_shown(now_applied))
        await account_store(gw).apply_settings(principal.tenant_id, now_applied, event)
        gw.operators.forget_tenant(principal.tenant_id)
    if not held:
        return await get_settings(request)
    change = {"change_id": events.new_id("chg_"), "settings": held, "shown": _shown(held),
              "requested_by": principal.id, "requested_at": _now()}
    event = events.TenantSettingsChanged(**fields, type="tenant.settings_change_pending", settings=change["shown"],
                                         change_id=change["change_id"], requested_by=principal.id)
    await account_store(gw).hold_settings_change(principal.tenant_id, change, event)
    return _json({"pending_change": _pending_view(change),
                  "detail": "waits for a second tenant admin: POST /v1/tenant/settings/changes/{change_id}/confirm"}, 202)


async def confirm_settings(request: web.Request) -> web.Response:
    """A second, already active tenant admin (not the requester) confirms a pending settings change;
    it applies."""
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    change_id = request.match_info["change_id"]
    doc = await account_store(gw).tenant(principal.tenant_id)
    change = next((c for c in (doc or {}).get("pending_settings", []) if c["change_id"] == change_id), None)
    if change is None:
        raise NotFound("pending settings change", "change_id")
    decision = rules.check_second_admin(confirmer=await acting_user(gw, principal), requested_by=change["requested_by"],
                                        requested_at=change["requested_at"], what="requested a settings change")
    if not decision.allowed:
        raise ProblemError(403, "Forbidden", decision.reason, "change_id")
    event = events.TenantSettingsChanged(**event_fields(request, principal.tenant_id), settings=change["shown"],
                                         change_id=change_id, requested_by=change["requested_by"])
    if not await account_store(gw).confirm_settings_change(principal.tenant_id, change_id, change["settings"], event):
        raise NotFound("pending settings change", "change_id")
    gw.operators.forget_tenant(principal.tenant_id)
    return await get_settings(request)
