"""Users and roles: tenant admins create (invite) and disable users, grant and revoke roles (admin,
security-officer, custodian and approver grants wait for a second, already active admin), and
reset a user's MFA with a second admin. Every admin is told of every role grant."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shared import events
from shared.rpc import NotFound, ProblemError

from ..auth import Principal
from ..state import PRINCIPAL, Gateway, _json, _now, body_as
from . import rules
from . import schemas as S
from .common import account_store, acting_user, context, event_fields, new_user, tenant_kind, user_or_404, user_view
from .invitations import check_invitee, deliver, notify_admins, setup_fields, tenant_mail_rules


async def create_user(request: web.Request) -> web.Response:
    """Tenant admin: a named user, invited at their own address (the setup token goes there, never
    into this answer); admin, security-officer, custodian and approver roles wait for a second admin."""
    gw, acc = context(request)
    principal: Principal = request[PRINCIPAL]
    body = await body_as(request, S.CreateUser)
    kind, small_team = await tenant_kind(gw, principal.tenant_id)
    tenant = await account_store(gw).tenant(principal.tenant_id)
    check_invitee(tenant, email=body.email, account=body.account)
    if body.account == "person" and tenant_mail_rules(tenant)[0]:
        raise ProblemError(409, "Conflict", "this tenant signs people in only through its identity provider: they "
                           "are created at their first sign-in, with the roles its groups map to", "account")
    user = new_user(username=body.username, roles=[], account=body.account,
                    **({"email": body.email} if body.account == "person" else {}))
    decision, plan = rules.plan_grant(
        current=frozenset(), pending=frozenset(), grant=frozenset(body.roles), granter_id=principal.id,
        target_id=user["user_id"], small_team=rules.separation_waived(small_team=small_team, account=body.account),
        known=rules.roles_for(kind), account=body.account)
    if not decision.allowed:
        raise ProblemError(422, "Unprocessable Content", decision.reason, "roles")
    user["roles"] = list(plan.effective)
    user.update(rules.confirmed_admin_since(frozenset(), frozenset(plan.effective), _now()))
    user["pending"] = [{"role": r, "granted_by": principal.id, "granted_at": _now()} for r in plan.pending]
    token = None
    if body.account == "person":
        token, setup = setup_fields(gw)
        user.update(setup)
    if await account_store(gw).user_by_username(principal.tenant_id, body.username) is not None:
        raise ProblemError(409, "Conflict", "a user with this username exists", "username")
    fields = event_fields(request, principal.tenant_id)
    await account_store(gw).insert_user(principal.tenant_id, user, events.UserCreated(
        **fields, user_id=user["user_id"], username=user["username"], account=body.account,
        roles=plan.effective, pending_roles=plan.pending))
    if token is not None:
        await deliver(gw, acc, principal.tenant_id, user, token, tenant_name=(tenant or {}).get("name", ""))
    if plan.effective or plan.pending:
        await notify_admins(gw, acc, principal.tenant_id, f"new user {user['username']}", [
            f"{principal.id} created the user {user['username']} ({user['user_id']}).",
            f"Roles in effect: {', '.join(plan.effective) or 'none'}.",
            f"Roles waiting for a second admin: {', '.join(plan.pending) or 'none'}."])
    return _json(user_view(user), 201)


async def users(request: web.Request) -> list[dict[str, Any]]:
    """The tenant's users as the API shows them (the API and the console both list here)."""
    gw, _ = context(request)
    return [user_view(d) for d in await account_store(gw).list_users(request[PRINCIPAL].tenant_id)]


async def list_users(request: web.Request) -> web.Response:
    return _json({"items": await users(request)})


async def get_user(request: web.Request) -> web.Response:
    gw, _ = context(request)
    return _json(user_view(await user_or_404(gw, request[PRINCIPAL].tenant_id, request.match_info["user_id"])))


async def change_roles(request: web.Request) -> web.Response:
    """Tenant admin: grant (custodian/approver pending a second admin) and revoke roles."""
    gw, acc = context(request)
    principal: Principal = request[PRINCIPAL]
    body = await body_as(request, S.ChangeRoles)
    doc = await user_or_404(gw, principal.tenant_id, request.match_info["user_id"])
    kind, small_team = await tenant_kind(gw, principal.tenant_id)
    revoke = set(body.revoke)
    current = frozenset(doc["roles"]) - revoke
    pending = [p for p in doc.get("pending", []) if p["role"] not in revoke]
    decision, plan = rules.plan_grant(
        current=current, pending=frozenset(p["role"] for p in pending), grant=frozenset(body.grant),
        granter_id=principal.id, target_id=doc["user_id"],
        small_team=rules.separation_waived(small_team=small_team, account=doc.get("account", "person")),
        known=rules.roles_for(kind), account=doc.get("account", "person"))
    if not decision.allowed:
        raise ProblemError(422, "Unprocessable Content", decision.reason, "grant")
    fields = event_fields(request, principal.tenant_id)
    evts: list[events.Event] = []
    revoked = tuple(sorted(revoke & (set(doc["roles"]) | {p["role"] for p in doc.get("pending", [])})))
    if revoked:
        evts.append(events.UserRolesChanged(**fields, type="user.role_revoked", user_id=doc["user_id"], roles=revoked))
    if plan.effective:
        evts.append(events.UserRolesChanged(**fields, type="user.role_granted", user_id=doc["user_id"],
                                            roles=plan.effective, granted_by=principal.id))
    if plan.pending:
        evts.append(events.UserRolesChanged(**fields, type="user.role_pending", user_id=doc["user_id"],
                                            roles=plan.pending, granted_by=principal.id))
    new_roles = sorted(current | set(plan.effective))
    new_pending = pending + [{"role": r, "granted_by": principal.id, "granted_at": _now()} for r in plan.pending]
    response = _json(await _save_roles(gw, principal, doc, new_roles, new_pending, *evts, revoked=bool(revoked)))
    if plan.effective or plan.pending:
        await notify_admins(gw, acc, principal.tenant_id, f"roles granted to {doc['username']}", [
            f"{principal.id} granted roles to {doc['username']} ({doc['user_id']}).",
            f"In effect now: {', '.join(plan.effective) or 'none'}.",
            f"Waiting for a second admin: {', '.join(plan.pending) or 'none'}."])
    return response


async def _save_roles(gw: Gateway, principal: Principal, doc: dict[str, Any], new_roles: list[str],
                      new_pending: list[dict[str, Any]], *evts: events.Event, revoked: bool = False) -> dict[str, Any]:
    """Compare-and-swap the user's roles (with their events, and when an admin role took effect),
    then drop cached credentials; a revocation ends the user's sessions and API tokens."""
    since = rules.confirmed_admin_since(frozenset(doc["roles"]), frozenset(new_roles), _now())
    if not await account_store(gw).set_roles(principal.tenant_id, doc["user_id"], rev=doc["rev"], roles=new_roles,
                                             pending=new_pending, evts=evts, since=since):
        raise ProblemError(409, "Conflict", "the user changed meanwhile; retry", "user_id")
    if revoked:
        await account_store(gw).end_credentials(principal.tenant_id, doc["user_id"], _now())
    gw.operators.forget_user(principal.tenant_id, doc["user_id"])
    return user_view({**doc, "roles": new_roles, "pending": new_pending})


async def confirm_role(request: web.Request) -> web.Response:
    return _json(await confirm_grant(request, request.match_info["user_id"], request.match_info["role"]))


async def confirm_grant(request: web.Request, user_id: str, role: str) -> dict[str, Any]:
    """A second, already active tenant admin confirms a pending grant (the API and the console
    both confirm here, so the second-admin rules are the same)."""
    gw, acc = context(request)
    principal: Principal = request[PRINCIPAL]
    doc = await user_or_404(gw, principal.tenant_id, user_id)
    grant = next((p for p in doc.get("pending", []) if p["role"] == role), None)
    if grant is None:
        raise NotFound("pending role grant", "role")
    decision = rules.check_second_admin(confirmer=await acting_user(gw, principal), requested_by=grant["granted_by"],
                                        requested_at=grant["granted_at"], target_id=doc["user_id"])
    if not decision.allowed:
        raise ProblemError(403, "Forbidden", decision.reason, "role")
    event = events.UserRolesChanged(**event_fields(request, principal.tenant_id), type="user.role_confirmed",
                                    user_id=doc["user_id"], roles=(role,), granted_by=grant["granted_by"])
    new_roles = sorted(set(doc["roles"]) | {role})
    new_pending = [p for p in doc["pending"] if p["role"] != role]
    view = await _save_roles(gw, principal, doc, new_roles, new_pending, event)
    await notify_admins(gw, acc, principal.tenant_id, f"{role} confirmed for {doc['username']}", [
        f"{principal.id} confirmed the role {role} for {doc['username']} ({doc['user_id']}), "
        f"granted by {grant['granted_by']}; it is in effect now."])
    return view


async def disable_user(request: web.Request) -> web.Response:
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    doc = await user_or_404(gw, principal.tenant_id, request.match_info["user_id"])
    if doc["user_id"] == principal.id:
        raise ProblemError(422, "Unprocessable Content", "a user may not disable themselves", "user_id")
    event = events.UserRolesChanged(**event_fields(request, principal.tenant_id), type="user.role_revoked",
                                    user_id=doc["user_id"], roles=tuple(doc["roles"]))
    await account_store(gw).disable_user(principal.tenant_id, doc["user_id"], event)
    await account_store(gw).end_credentials(principal.tenant_id, doc["user_id"], _now())
    gw.operators.forget_user(principal.tenant_id, doc["user_id"])
    return _json(user_view({**doc, "status": "disabled", "roles": [], "pending": []}))


async def request_mfa_reset(request: web.Request) -> web.Response:
    """Tenant admin: ask to reset a user's MFA (a lost authenticator); a second admin confirms."""
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    doc = await user_or_404(gw, principal.tenant_id, request.match_info["user_id"])
    if doc["user_id"] == principal.id:
        raise ProblemError(422, "Unprocessable Content", "a user may not reset their own MFA", "user_id")
    if not (doc.get("mfa") or {}).get("confirmed"):
        raise ProblemError(409, "Conflict", "the user has no MFA enrolled", "user_id")
    event = events.UserMfaReset(**event_fields(request, principal.tenant_id), type="user.mfa_reset_pending",
                                user_id=doc["user_id"], requested_by=principal.id)
    pending = {"requested_by": principal.id, "requested_at": _now()}
    if not await account_store(gw).request_mfa_reset(principal.tenant_id, doc["user_id"], rev=doc["rev"], pending=pending,
                                              event=event):
        raise ProblemError(409, "Conflict", "the user changed meanwhile; retry", "user_id")
    return _json({"user_id": doc["user_id"], "mfa_reset": pending}, 202)


async def confirm_mfa_reset(request: web.Request) -> web.Response:
    """A second tenant admin confirms: the user's TOTP secret and recovery codes are dropped and
    their sessions end; at the next password sign-in they enrol again."""
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    doc = await user_or_404(gw, principal.tenant_id, request.match_info["user_id"])
    pending = doc.get("mfa_reset")
    if not pending:
        raise NotFound("pending MFA reset", "user_id")
    decision = rules.check_second_admin(confirmer=await acting_user(gw, principal), requested_by=pending["requested_by"],
                                        requested_at=pending["requested_at"], target_id=doc["user_id"],
                                        what="requested a reset")
    if not decision.allowed:
        raise ProblemError(403, "Forbidden", decision.reason, "user_id")
    event = events.UserMfaReset(**event_fields(request, principal.tenant_id), type="user.mfa_reset",
                                user_id=doc["user_id"], requested_by=pending["requested_by"])
    if not await account_store(gw).confirm_mfa_reset(principal.tenant_id, doc["user_id"], rev=doc["rev"], at=_now(),
                                              event=event):
        raise ProblemError(409, "Conflict", "the user changed meanwhile; retry", "user_id")
    gw.operators.forget_user(principal.tenant_id, doc["user_id"])
    return _json(user_view({**doc, "mfa": None}))
