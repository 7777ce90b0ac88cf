"""Accounts and sign-in views: bootstrap, tenants' lifecycle, users and roles, login, MFA,
sessions and API tokens. The rules live in `accounts.py` (pure); this module loads, asks,
saves and publishes. Failed sign-ins answer the same for every cause; the cause is audited.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from shared import events
from shared.crypto import tokens
from shared.outbox import entry as outbox_entry
from shared.outbox import staged
from shared.rpc import NotFound, ProblemError

from . import account_schemas as S
from . import accounts, mfa, passwords, sso_oidc, sso_saml
from .auth import PROVIDER_TENANT, SESSION_PREFIX, Principal, RateLimited, Unauthorized
from .datakey import SecretSealer, load_data_key
from .ratelimit import RateLimiter
from .settings import GatewaySettings
from .views import CORRELATION_ID, GATEWAY, PRINCIPAL, Gateway, _json, body_as

log = structlog.get_logger("strongroom.gateway.accounts")


@dataclass
class Accounts:
    """The accounts area's own dependencies, bound once in `app.py`."""

    hasher: passwords.Hasher
    hash_slots: asyncio.Semaphore
    login_by_address: RateLimiter
    agent_by_address: RateLimiter
    agent_by_device: RateLimiter
    sealer: SecretSealer  # TOTP and SSO client secrets are stored sealed under the data key

    @classmethod
    def from_settings(cls, s: GatewaySettings) -> Accounts:
        return cls(
            hasher=passwords.Hasher(time_cost=s.password_time_cost, memory_kib=s.password_memory_kib,
                                    parallelism=s.password_parallelism),
            hash_slots=asyncio.Semaphore(s.password_hash_concurrency),
            login_by_address=RateLimiter(burst=s.login_rate_burst, per_second=s.login_rate_per_second),
            agent_by_address=RateLimiter(burst=s.agent_rate_burst_per_address,
                                         per_second=s.agent_rate_per_second_per_address),
            agent_by_device=RateLimiter(burst=s.agent_rate_burst_per_device,
                                        per_second=s.agent_rate_per_second_per_device),
            sealer=SecretSealer(load_data_key(s.data_key_file)),
        )

    def seal_totp(self, secret: str, *, tenant_id: str, user_id: str) -> str:
        return self.sealer.seal(secret, purpose="totp", tenant_id=tenant_id, owner=user_id)

    def open_totp(self, sealed: str, *, tenant_id: str, user_id: str) -> str:
        return self.sealer.open(sealed, purpose="totp", tenant_id=tenant_id, owner=user_id)

    async def hash(self, password: str) -> str:
        async with self.hash_slots:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, encoded: str | None, password: str) -> bool:
        async with self.hash_slots:
            return await asyncio.to_thread(self.hasher.verify, encoded, password)


ACCOUNTS = web.AppKey("accounts", Accounts)
INVALID = "invalid credentials"


def _ctx(request: web.Request) -> tuple[Gateway, Accounts]:
    return request.app[GATEWAY], request.app[ACCOUNTS]


def _now() -> datetime:
    return datetime.now(UTC)


def throttle(limiter: RateLimiter, key: str) -> None:
    wait = limiter.take(key, time.monotonic())
    if wait is not None:
        raise RateLimited(wait)


def _fields(request: web.Request, tenant_id: str, actor: events.Actor | None = None) -> dict[str, Any]:
    principal = request.get(PRINCIPAL)
    return {
        "tenant_id": tenant_id,
        "actor": actor or (principal.actor if principal else events.Actor(kind="user", id="anonymous")),
        "correlation_id": request[CORRELATION_ID],
        "source_ip": request.remote,
    }


async def _insert(gw: Gateway, collection, tenant_id: str, doc: dict[str, Any], *evts: events.Event) -> None:
    await collection.insert(tenant_id, staged(doc, *evts))
    for event in evts:
        await gw.outbox.publish(collection.raw, tenant_id, event)


async def _update(gw: Gateway, collection, tenant_id: str, query: dict[str, Any], update: dict[str, Any],
                  *evts: events.Event) -> bool:
    """A compare-and-swap update that stages its events in the same write; False if it lost."""
    if evts:
        update = {**update, "$push": {**update.get("$push", {}), "_outbox": {"$each": [outbox_entry(e) for e in evts]}}}
    if not await collection.update_one(tenant_id, query, update):
        return False
    for event in evts:
        await gw.outbox.publish(collection.raw, tenant_id, event)
    return True


def _check_password(password: str, username: str) -> None:
    reason = passwords.weakness(password, username=username)
    if reason is not None:
        raise ProblemError(422, "Unprocessable Content", f"password {reason}", "password")


def _setup_token(gw: Gateway) -> tuple[str, dict[str, Any]]:
    token = tokens.new_token("sr_setup")
    expires = _now() + timedelta(seconds=gw.settings.setup_token_ttl_seconds)
    return token, {"setup_digest": tokens.digest(token), "setup_expires_at": expires}


def _new_user(*, username: str, roles: list[str], account: str = "person", source: str = "local",
              pending: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": events.new_id("usr_"), "username": username, "account": account, "roles": roles,
        "pending": pending or [], "status": "active", "source": source, "created_at": _now(), "rev": 0,
        "mfa": None, "recovery": [], **extra,
    }


def user_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": doc["user_id"], "username": doc["username"], "account": doc.get("account", "person"),
        "roles": doc.get("roles", []), "status": doc.get("status"), "source": doc.get("source"),
        "pending_roles": [{"role": p["role"], "granted_by": p["granted_by"]} for p in doc.get("pending", [])],
        "mfa_enrolled": bool((doc.get("mfa") or {}).get("confirmed")),
        "password_set": bool(doc.get("password_hash")), "created_at": doc.get("created_at"),
    }


# --- bootstrap and tenants --------------------------------------------------------------


async def bootstrap(request: web.Request) -> web.Response:
    """The bootstrap credential creates the first admin (provider admin or, in enterprise mode,
    the single tenant and its admin), and is disabled from then on."""
    gw, acc = _ctx(request)
    body = await body_as(request, S.Bootstrap)
    _check_password(body.password, body.username)
    provider = gw.settings.deployment == "provider"
    tenant_id = PROVIDER_TENANT if provider else events.new_id("ten_")
    user = _new_user(username=body.username, roles=["provider_admin" if provider else "tenant_admin"],
                     source="bootstrap", password_hash=await acc.hash(body.password))
    # SECURITY: the marker insert is the compare-and-swap: only one bootstrap ever succeeds.
    if not await gw.store.mark_bootstrapped(tenant_id, user["user_id"], _now()):
        gw.operators.mark_bootstrapped()
        raise Unauthorized("bootstrap credential used after bootstrap")
    gw.operators.mark_bootstrapped()
    fields = _fields(request, tenant_id)
    name = "provider" if provider else gw.settings.enterprise_tenant_name
    tenant = {"name": name, "kind": "provider" if provider else "customer", "status": "active",
              "created_at": _now(), "settings": {}}
    await _insert(gw, gw.store.tenants, tenant_id, tenant, events.TenantCreated(**fields, name=name))
    await _insert(gw, gw.store.users, tenant_id, user, events.UserCreated(
        **fields, user_id=user["user_id"], username=user["username"], roles=tuple(user["roles"]), source="bootstrap"))
    return _json({"tenant_id": tenant_id, "user_id": user["user_id"], "username": user["username"],
                  "roles": user["roles"], "deployment": gw.settings.deployment}, 201)


async def create_tenant(request: web.Request) -> web.Response:
    """Provider: a customer tenant and its first admin, who sets a password with the one-time
    setup token returned here (deliver it to the customer out of band)."""
    gw, _ = _ctx(request)
    body = await body_as(request, S.CreateTenant)
    tenant_id = events.new_id("ten_")
    fields = _fields(request, tenant_id)
    token, setup = _setup_token(gw)
    user = _new_user(username=body.admin_username, roles=["tenant_admin"], **setup)
    tenant = {"name": body.name, "kind": "customer", "status": "active", "created_at": _now(), "settings": {}}
    await _insert(gw, gw.store.tenants, tenant_id, tenant, events.TenantCreated(**fields, name=body.name))
    await _insert(gw, gw.store.users, tenant_id, user, events.UserCreated(
        **fields, user_id=user["user_id"], username=user["username"], roles=("tenant_admin",)))
    return _json({"tenant_id": tenant_id, "name": body.name, "admin_user_id": user["user_id"],
                  "admin_username": user["username"], "setup_token": token,
                  "setup_expires_at": setup["setup_expires_at"].isoformat()}, 201)


async def _usage(gw: Gateway, tenant_id: str) -> dict[str, int]:
    return {
        "users": await gw.store.users.count(tenant_id, {"status": "active"}),
        "devices": await gw.store.devices.count(tenant_id, {"status": "active"}),
        "tokens": await gw.store.tokens.count(tenant_id, {"revoked": False}),
    }


def _tenant_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("tenant_id", "name", "status", "created_at")}


async def list_tenants(request: web.Request) -> web.Response:
    """Provider: customer tenants with their status and usage (counts only, never content)."""
    gw, _ = _ctx(request)
    # Deliberately across tenants: the provider's view of its customers reads tenant documents only.
    docs = await gw.store.tenants.raw.find({"kind": {"$ne": "provider"}}, sort=[("created_at", 1)]).to_list(None)
    return _json({"items": [{**_tenant_view(d), "usage": await _usage(gw, d["tenant_id"])} for d in docs]})


_LIFECYCLE = {  # action -> (states it applies to, new state, event type)
    "suspend": (("active",), "suspended", "tenant.suspended"),
    "resume": (("suspended",), "active", "tenant.resumed"),
    "offboard": (("active", "suspended"), "offboarded", "tenant.offboarded"),
}


async def _lifecycle(request: web.Request, action: str) -> web.Response:
    gw, _ = _ctx(request)
    tenant_id = request.match_info["tenant_id"]
    doc = await gw.store.tenants.find_one(tenant_id, {"kind": {"$ne": "provider"}}) if tenant_id != PROVIDER_TENANT else None
    if doc is None:
        raise NotFound("tenant", "tenant_id")
    states, new_state, event_type = _LIFECYCLE[action]
    if doc["status"] not in states:
        raise ProblemError(409, "Conflict", f"tenant is {doc['status']}; cannot {action}", "tenant_id")
    event = events.TenantLifecycleChanged(**_fields(request, tenant_id), type=event_type)
    if not await _update(gw, gw.store.tenants, tenant_id, {"status": doc["status"]},
                         {"$set": {"status": new_state, f"{new_state}_at": _now()}}, event):
        raise ProblemError(409, "Conflict", "the tenant changed meanwhile; retry", "tenant_id")
    gw.operators.forget_tenant(tenant_id)
    return _json({**_tenant_view(doc), "status": new_state})


async def suspend_tenant(request: web.Request) -> web.Response:
    return await _lifecycle(request, "suspend")


async def resume_tenant(request: web.Request) -> web.Response:
    return await _lifecycle(request, "resume")


async def offboard_tenant(request: web.Request) -> web.Response:
    return await _lifecycle(request, "offboard")


def _pending_view(change: dict[str, Any]) -> dict[str, Any]:
    return {k: change.get(k) for k in ("change_id", "shown", "requested_by", "requested_at")}


async def get_settings(request: web.Request) -> web.Response:
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    doc = await gw.store.tenants.find_one(principal.tenant_id, {})
    settings = dict((doc or {}).get("settings", {}))
    if "sso" in settings:
        settings["sso"] = {k: v for k, v in settings["sso"].items() if k != "client_secret"}
    return _json({"small_team": bool(settings.get("small_team")), **{k: v for k, v in settings.items() if k != "small_team"},
                  "pending_changes": [_pending_view(c) for c in (doc or {}).get("pending_settings", [])]})


def _shown(settings: dict[str, Any]) -> dict[str, Any]:
    """What events and the confirming admin see of a settings change (never a client secret)."""
    shown = dict(settings)
    if "sso" in shown:
        sso = shown["sso"]
        shown["sso"] = {"protocol": sso["protocol"], "group_roles": sso["group_roles"],
                        "idp": sso.get("issuer") or sso.get("idp_entity_id")}
    return shown


async def put_settings(request: web.Request) -> web.Response:
    """Tenant admin: small-team mode and single sign-on. Turning small-team mode on and any
    single sign-on change wait for a second tenant admin (202 with the pending change)."""
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    body = await body_as(request, S.TenantSettings)
    changes: dict[str, Any] = {}
    if body.small_team is not None:
        if not body.small_team:
            users = await gw.store.users.find(principal.tenant_id, {"status": "active"})
            if any(accounts.conflicting(frozenset(u["roles"]) | {p["role"] for p in u.get("pending", [])}) for u in users):
                raise ProblemError(409, "Conflict", "some users hold conflicting roles; revoke them first", "small_team")
        changes["small_team"] = body.small_team
    if body.sso is not None:
        changes["sso"] = body.sso.model_dump()
        if body.sso.client_secret:
            changes["sso"]["client_secret"] = request.app[ACCOUNTS].sealer.seal(
                body.sso.client_secret, purpose="oidc_client_secret", tenant_id=principal.tenant_id, owner="sso")
    if not changes:
        raise ProblemError(422, "Unprocessable Content", "nothing to change", "body")
    held_names = accounts.settings_needing_confirmation(small_team=body.small_team, sso_changed=body.sso is not None)
    held = {k: v for k, v in changes.items() if k in held_names}
    now_applied = {k: v for k, v in changes.items() if k not in held_names}
    fields = _fields(request, principal.tenant_id)
    if now_applied:
        event = events.TenantSettingsChanged(**fields, settings=_shown(now_applied))
        await _update(gw, gw.store.tenants, principal.tenant_id, {},
                      {"$set": {f"settings.{k}": v for k, v in now_applied.items()}}, event)
        gw.operators.forget_tenant(principal.tenant_id)
    if not held:
        return await get_settings(request)
    change = {"change_id": events.new_id("chg_"), "settings": held, "shown": _shown(held),
              "requested_by": principal.id, "requested_at": _now()}
    event = events.TenantSettingsChanged(**fields, type="tenant.settings_change_pending", settings=change["shown"],
                                         change_id=change["change_id"], requested_by=principal.id)
    await _update(gw, gw.store.tenants, principal.tenant_id, {}, {"$push": {"pending_settings": change}}, event)
    return _json({"pending_change": _pending_view(change),
                  "detail": "waits for a second tenant admin: POST /v1/tenant/settings/changes/{change_id}/confirm"}, 202)


async def confirm_settings(request: web.Request) -> web.Response:
    """A second tenant admin (not the requester) confirms a pending settings change; it applies."""
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    change_id = request.match_info["change_id"]
    doc = await gw.store.tenants.find_one(principal.tenant_id, {})
    change = next((c for c in (doc or {}).get("pending_settings", []) if c["change_id"] == change_id), None)
    if change is None:
        raise NotFound("pending settings change", "change_id")
    decision = accounts.check_settings_confirmation(requested_by=change["requested_by"], confirmer_id=principal.id)
    if not decision.allowed:
        raise ProblemError(403, "Forbidden", decision.reason, "change_id")
    event = events.TenantSettingsChanged(**_fields(request, principal.tenant_id), settings=change["shown"],
                                         change_id=change_id, requested_by=change["requested_by"])
    # The pull is the compare-and-swap: two confirmations of one change apply it once.
    if not await _update(gw, gw.store.tenants, principal.tenant_id, {"pending_settings.change_id": change_id},
                         {"$set": {f"settings.{k}": v for k, v in change["settings"].items()},
                          "$pull": {"pending_settings": {"change_id": change_id}}}, event):
        raise NotFound("pending settings change", "change_id")
    gw.operators.forget_tenant(principal.tenant_id)
    return await get_settings(request)


# --- users and roles ----------------------------------------------------------------------


async def _tenant_kind(gw: Gateway, tenant_id: str) -> tuple[str, bool]:
    doc = await gw.store.tenants.find_one(tenant_id, {})
    return (doc or {}).get("kind", "customer"), bool((doc or {}).get("settings", {}).get("small_team"))


async def create_user(request: web.Request) -> web.Response:
    """Tenant admin: a named user; custodian and approver roles wait for a second admin."""
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    body = await body_as(request, S.CreateUser)
    kind, small_team = await _tenant_kind(gw, principal.tenant_id)
    user = _new_user(username=body.username, roles=[], account=body.account)
    decision, plan = accounts.plan_grant(
        current=frozenset(), pending=frozenset(), grant=frozenset(body.roles), granter_id=principal.id,
        target_id=user["user_id"], small_team=small_team, known=accounts.roles_for(kind))
    if not decision.allowed:
        raise ProblemError(422, "Unprocessable Content", decision.reason, "roles")
    user["roles"] = list(plan.effective)
    user["pending"] = [{"role": r, "granted_by": principal.id, "granted_at": _now()} for r in plan.pending]
    token = None
    if body.account == "person":
        token, setup = _setup_token(gw)
        user.update(setup)
    if await gw.store.users.find_one(principal.tenant_id, {"username": body.username}) is not None:
        raise ProblemError(409, "Conflict", "a user with this username exists", "username")
    fields = _fields(request, principal.tenant_id)
    await _insert(gw, gw.store.users, principal.tenant_id, user, events.UserCreated(
        **fields, user_id=user["user_id"], username=user["username"], account=body.account,
        roles=plan.effective, pending_roles=plan.pending))
    out = user_view(user)
    if token is not None:
        out.update(setup_token=token, setup_expires_at=user["setup_expires_at"].isoformat())
    return _json(out, 201)


async def list_users(request: web.Request) -> web.Response:
    gw, _ = _ctx(request)
    docs = await gw.store.users.find(request[PRINCIPAL].tenant_id, {}, sort=[("created_at", 1)])
    return _json({"items": [user_view(d) for d in docs]})


async def _user(gw: Gateway, tenant_id: str, user_id: str) -> dict[str, Any]:
    doc = await gw.store.users.find_one(tenant_id, {"user_id": user_id})
    if doc is None:
        raise NotFound("user", "user_id")
    return doc


async def get_user(request: web.Request) -> web.Response:
    gw, _ = _ctx(request)
    return _json(user_view(await _user(gw, request[PRINCIPAL].tenant_id, request.match_info["user_id"])))


async def change_roles(request: web.Request) -> web.Response:
    """Tenant admin: grant (custodian/approver pending a second admin) and revoke roles."""
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    body = await body_as(request, S.ChangeRoles)
    doc = await _user(gw, principal.tenant_id, request.match_info["user_id"])
    kind, small_team = await _tenant_kind(gw, principal.tenant_id)
    revoke = set(body.revoke)
    current = frozenset(doc["roles"]) - revoke
    pending = [p for p in doc.get("pending", []) if p["role"] not in revoke]
    decision, plan = accounts.plan_grant(
        current=current, pending=frozenset(p["role"] for p in pending), grant=frozenset(body.grant),
        granter_id=principal.id, target_id=doc["user_id"], small_team=small_team, known=accounts.roles_for(kind))
    if not decision.allowed:
        raise ProblemError(422, "Unprocessable Content", decision.reason, "grant")
    fields = _fields(request, principal.tenant_id)
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
    return await _save_roles(gw, principal, doc, new_roles, new_pending, *evts)


async def _save_roles(gw, principal: Principal, doc: dict, new_roles: list[str], new_pending: list[dict],
                      *evts: events.Event) -> web.Response:
    """Compare-and-swap the user's roles (with their events), then drop cached credentials."""
    if not await _update(gw, gw.store.users, principal.tenant_id, {"user_id": doc["user_id"], "rev": doc["rev"]},
                         {"$set": {"roles": new_roles, "pending": new_pending}, "$inc": {"rev": 1}}, *evts):
        raise ProblemError(409, "Conflict", "the user changed meanwhile; retry", "user_id")
    gw.operators.forget_user(principal.tenant_id, doc["user_id"])
    return _json(user_view({**doc, "roles": new_roles, "pending": new_pending}))


async def confirm_role(request: web.Request) -> web.Response:
    """A second tenant admin confirms a pending custodian or approver grant."""
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    doc = await _user(gw, principal.tenant_id, request.match_info["user_id"])
    role = request.match_info["role"]
    grant = next((p for p in doc.get("pending", []) if p["role"] == role), None)
    if grant is None:
        raise NotFound("pending role grant", "role")
    decision = accounts.check_confirmation(granted_by=grant["granted_by"], confirmer_id=principal.id,
                                           target_id=doc["user_id"])
    if not decision.allowed:
        raise ProblemError(403, "Forbidden", decision.reason, "role")
    event = events.UserRolesChanged(**_fields(request, principal.tenant_id), type="user.role_confirmed",
                                    user_id=doc["user_id"], roles=(role,), granted_by=grant["granted_by"])
    new_roles = sorted(set(doc["roles"]) | {role})
    new_pending = [p for p in doc["pending"] if p["role"] != role]
    return await _save_roles(gw, principal, doc, new_roles, new_pending, event)


async def disable_user(request: web.Request) -> web.Response:
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    doc = await _user(gw, principal.tenant_id, request.match_info["user_id"])
    if doc["user_id"] == principal.id:
        raise ProblemError(422, "Unprocessable Content", "a user may not disable themselves", "user_id")
    event = events.UserRolesChanged(**_fields(request, principal.tenant_id), type="user.role_revoked",
                                    user_id=doc["user_id"], roles=tuple(doc["roles"]))
    await _update(gw, gw.store.users, principal.tenant_id, {"user_id": doc["user_id"]},
                  {"$set": {"status": "disabled", "roles": [], "pending": []}, "$inc": {"rev": 1}}, event)
    gw.operators.forget_user(principal.tenant_id, doc["user_id"])
    return _json(user_view({**doc, "status": "disabled", "roles": [], "pending": []}))


# --- sign-in --------------------------------------------------------------------------------


async def setup_password(request: web.Request) -> web.Response:
    """An invited user sets their first password with the one-time setup token."""
    gw, acc = _ctx(request)
    throttle(acc.login_by_address, f"ip:{request.remote}")
    body = await body_as(request, S.Setup)
    digest = tokens.digest(body.setup_token)
    doc = await gw.store.user_by_setup_digest(digest)
    if doc is None or doc["setup_expires_at"] <= _now() or doc.get("status") != "active":
        raise Unauthorized("unknown or expired setup token")
    _check_password(body.password, doc["username"])
    encoded = await acc.hash(body.password)
    event = events.UserPasswordSet(**_fields(request, doc["tenant_id"], events.Actor(
        kind="user", id=doc["user_id"], auth="setup_token")), user_id=doc["user_id"])
    if not await _update(gw, gw.store.users, doc["tenant_id"], {"user_id": doc["user_id"], "setup_digest": digest},
                         {"$set": {"password_hash": encoded}, "$unset": {"setup_digest": "", "setup_expires_at": ""}},
                         event):
        raise Unauthorized("setup token already used")
    return _json({"tenant_id": doc["tenant_id"], "user_id": doc["user_id"], "username": doc["username"]})


async def _login_tenant(gw: Gateway, body: S.Login) -> str | None:
    if body.tenant:
        return body.tenant
    if gw.settings.deployment == "enterprise":
        marker = await gw.store.state.find_one({"_id": "bootstrap"})
        return marker["tenant_id"] if marker else None
    raise ProblemError(422, "Unprocessable Content", "tenant: required in provider deployments", "tenant")


async def _failed(request: web.Request, gw: Gateway, tenant_id: str, username: str, user: dict | None,
                  method: str, reason: str, *, count: bool = True) -> None:
    if count:
        now = _now()
        doc = await gw.store.login_attempts.raw.find_one_and_update(
            {"tenant_id": tenant_id, "username": username}, {"$inc": {"failures": 1}}, upsert=True,
            return_document=True)
        until = accounts.locked_until(doc["failures"], now, threshold=gw.settings.lockout_threshold)
        if until is not None:
            await gw.store.login_attempts.update_one(tenant_id, {"username": username}, {"$set": {"locked_until": until}})
    user_id = user["user_id"] if user else None
    await gw.bus.publish(events.UserLoginFailed(
        **_fields(request, tenant_id, events.Actor(kind="user", id=user_id or "unknown", auth=method)),
        user_id=user_id, username=username, method=method, reason=reason))
    log.info("login_failed", tenant_id=tenant_id, reason=reason)


async def login(request: web.Request) -> web.Response:
    """Password (and TOTP or a recovery code where the user's roles require MFA) -> a session."""
    gw, acc = _ctx(request)
    throttle(acc.login_by_address, f"ip:{request.remote}")
    body = await body_as(request, S.Login)
    if len(body.password) > passwords.MAX_LENGTH:
        raise ProblemError(422, "Unprocessable Content", f"password must be at most {passwords.MAX_LENGTH} characters", "password")
    tenant_id = await _login_tenant(gw, body)
    username = body.username.lower()
    method = "password"
    tenant = await gw.store.tenants.find_one(tenant_id, {}) if tenant_id else None
    if tenant is None or tenant.get("status") != "active":
        await acc.verify(None, body.password)  # same cost as a real attempt
        raise Unauthorized("unknown or inactive tenant")
    attempts = await gw.store.login_attempts.find_one(tenant_id, {"username": username})
    now = _now()
    if attempts and attempts.get("locked_until") and attempts["locked_until"] > now:
        # Unknown usernames lock exactly like real ones, so this reveals nothing about who exists.
        await _failed(request, gw, tenant_id, username, None, method, "locked out", count=False)
        raise RateLimited(int((attempts["locked_until"] - now).total_seconds()) + 1,
                          "too many failed sign-ins; retry later")
    user = await gw.store.users.find_one(tenant_id, {"username": username})
    usable = user is not None and user.get("status") == "active" and user.get("account") == "person"
    ok = await acc.verify(user.get("password_hash") if usable else None, body.password)
    if not ok:
        await _failed(request, gw, tenant_id, username, user if usable else None, method,
                      "bad password" if usable else "unknown user")
        raise Unauthorized("bad password")
    assert user is not None
    roles = frozenset(user["roles"]) | {p["role"] for p in user.get("pending", [])}
    enrolled = bool((user.get("mfa") or {}).get("confirmed"))
    mfa_done = False
    if enrolled:
        mfa_done, method = await _second_factor(request, gw, user, body)
    session = await _start_session(request, gw, user, method=method, mfa=mfa_done)
    await gw.store.login_attempts.delete_one(tenant_id, {"username": username})
    return _json({**session, "mfa_enrolment_required": accounts.needs_mfa(roles) and not enrolled}, 201)


async def _second_factor(request: web.Request, gw: Gateway, user: dict, body: S.Login) -> tuple[bool, str]:
    tenant_id, username = user["tenant_id"], user["username"]
    if body.totp:
        method = "password+totp"
        secret = request.app[ACCOUNTS].open_totp(user["mfa"]["secret"], tenant_id=tenant_id, user_id=user["user_id"])
        step = mfa.matching_step(secret, body.totp, _now(), last_step=user["mfa"].get("last_step"))
        # SECURITY: the step only moves forward, atomically: a code is good once, even under a race.
        if step is not None and await gw.store.users.update_one(
                tenant_id, {"user_id": user["user_id"], "$or": [{"mfa.last_step": None}, {"mfa.last_step": {"$lt": step}}]},
                {"$set": {"mfa.last_step": step}}):
            return True, method
        await _failed(request, gw, tenant_id, username, user, method, "bad or replayed TOTP code")
        raise Unauthorized("bad totp")
    if body.recovery_code:
        method = "password+recovery_code"
        digest = mfa.recovery_digest(body.recovery_code)
        if digest in user.get("recovery", []):
            event = events.UserRecoveryCodeUsed(
                **_fields(request, tenant_id, events.Actor(kind="user", id=user["user_id"], auth=method)),
                user_id=user["user_id"], remaining=len(user["recovery"]) - 1)
            if await _update(gw, gw.store.users, tenant_id, {"user_id": user["user_id"], "recovery": digest},
                             {"$pull": {"recovery": digest}}, event):
                return True, method
        await _failed(request, gw, tenant_id, username, user, method, "bad or used recovery code")
        raise Unauthorized("bad recovery code")
    await _failed(request, gw, tenant_id, username, user, "password", "second factor missing", count=False)
    raise ProblemError(401, "Unauthorized", "a TOTP code (or a recovery code) is required", "totp")


async def _start_session(request: web.Request, gw: Gateway, user: dict, *, method: str, mfa: bool) -> dict[str, Any]:
    token = tokens.new_token(SESSION_PREFIX)
    now = _now()
    doc = {"session_id": events.new_id("ses_"), "digest": tokens.digest(token), "user_id": user["user_id"],
           "auth": method, "mfa": mfa, "created_at": now, "last_seen": now, "ended_at": None}
    await gw.store.sessions.insert(user["tenant_id"], doc)
    await gw.bus.publish(events.UserLoggedIn(
        **_fields(request, user["tenant_id"], events.Actor(kind="user", id=user["user_id"], auth=method)),
        user_id=user["user_id"], method=method, session_id=doc["session_id"]))
    return {
        "session_token": token, "session_id": doc["session_id"], "tenant_id": user["tenant_id"],
        "user_id": user["user_id"], "username": user["username"], "roles": user["roles"], "auth": method,
        "idle_timeout_seconds": gw.settings.session_idle_seconds,
        "expires_at": (now + timedelta(seconds=gw.settings.session_absolute_seconds)).isoformat(),
    }


async def logout(request: web.Request) -> web.Response:
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    if principal.credential_id and principal.credential_id.startswith("ses_"):
        event = events.UserLoggedOut(**_fields(request, principal.tenant_id), user_id=principal.id,
                                     session_id=principal.credential_id)
        await gw.store.sessions.update_one(principal.tenant_id, {"session_id": principal.credential_id},
                                           {"$set": {"ended_at": _now()}})
        gw.operators.forget_session(principal.credential_id)
        await gw.bus.publish(event)
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    if principal.kind == "bootstrap":
        return _json({"kind": "bootstrap", "roles": sorted(principal.roles)})
    doc = await _user(gw, principal.tenant_id, principal.id)
    return _json({**user_view(doc), "tenant_id": principal.tenant_id, "auth": principal.auth,
                  "effective_roles": sorted(principal.roles - {accounts.MEMBER}),
                  "scopes": sorted(principal.scopes) if principal.scopes is not None else None})


async def mfa_begin(request: web.Request) -> web.Response:
    """Start TOTP enrolment: a new secret as an otpauth:// URI (no QR image; paste or render it)."""
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    doc = await _user(gw, principal.tenant_id, principal.id)
    if (doc.get("mfa") or {}).get("confirmed"):
        raise ProblemError(409, "Conflict", "MFA is already enrolled", "mfa")
    secret = mfa.new_secret()
    sealed = request.app[ACCOUNTS].seal_totp(secret, tenant_id=principal.tenant_id, user_id=principal.id)
    await gw.store.users.update_one(principal.tenant_id, {"user_id": principal.id},
                                    {"$set": {"mfa": {"secret": sealed, "confirmed": False, "last_step": None}}})
    gw.operators.forget_user(principal.tenant_id, principal.id)
    return _json({"secret": secret, "otpauth_uri": mfa.provisioning_uri(secret, account=doc["username"])}, 201)


async def mfa_confirm(request: web.Request) -> web.Response:
    """Finish enrolment with a current code; returns single-use recovery codes (shown once) and
    upgrades the calling session to MFA-verified."""
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    body = await body_as(request, S.MfaCode)
    doc = await _user(gw, principal.tenant_id, principal.id)
    state = doc.get("mfa") or {}
    if not state.get("secret") or state.get("confirmed"):
        raise ProblemError(409, "Conflict", "no MFA enrolment in progress", "mfa")
    secret = request.app[ACCOUNTS].open_totp(state["secret"], tenant_id=principal.tenant_id, user_id=principal.id)
    step = mfa.matching_step(secret, body.code, _now(), last_step=None)
    if step is None:
        raise ProblemError(422, "Unprocessable Content", "the code does not match", "code")
    codes = mfa.new_recovery_codes()
    event = events.UserMfaEnrolled(**_fields(request, principal.tenant_id), user_id=principal.id)
    if not await _update(gw, gw.store.users, principal.tenant_id,
                         {"user_id": principal.id, "mfa.confirmed": False, "mfa.secret": state["secret"]},
                         {"$set": {"mfa.confirmed": True, "mfa.last_step": step,
                                   "recovery": [mfa.recovery_digest(c) for c in codes]}}, event):
        raise ProblemError(409, "Conflict", "the enrolment changed meanwhile; start again", "mfa")
    gw.operators.forget_user(principal.tenant_id, principal.id)
    if principal.credential_id and principal.credential_id.startswith("ses_"):
        await gw.store.sessions.update_one(principal.tenant_id, {"session_id": principal.credential_id},
                                           {"$set": {"mfa": True, "auth": f"{principal.auth}+totp"}})
        gw.operators.forget_session(principal.credential_id)
    return _json({"recovery_codes": codes})


# --- API tokens -------------------------------------------------------------------------------


def token_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("token_id", "name", "user_id", "kind", "scopes", "created_at", "expires_at", "revoked")}


async def create_token(request: web.Request) -> web.Response:
    """A personal API token for the caller, or (tenant admin) a service account's token; shown once."""
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    body = await body_as(request, S.CreateToken)
    if principal.kind not in ("user", "provider"):
        raise ProblemError(403, "Forbidden", "only people create tokens", "service_account_id")
    scopes = frozenset(body.scopes) if body.scopes is not None else None
    if principal.scopes is not None and (scopes is None or not scopes <= principal.scopes):
        # SECURITY: a scoped token never mints a broader one.
        raise ProblemError(403, "Forbidden", "a scoped token may only create tokens within its scopes", "scopes")
    owner, kind = principal.id, "personal"
    if body.service_account_id is not None:
        if not principal.may("tokens.manage"):
            raise ProblemError(403, "Forbidden", "requires permission tokens.manage", "service_account_id")
        target = await gw.store.users.find_one(principal.tenant_id, {"user_id": body.service_account_id,
                                                                     "account": "service", "status": "active"})
        if target is None:
            raise NotFound("service account", "service_account_id")
        owner, kind = target["user_id"], "service"
    elif scopes is not None and not all(principal.may(s) for s in scopes):
        raise ProblemError(422, "Unprocessable Content", "scopes must be permissions you hold", "scopes")
    token = tokens.new_token("sr_pat" if kind == "personal" else "sr_svc")
    now = _now()
    doc = {"token_id": events.new_id("tok_"), "name": body.name, "user_id": owner, "kind": kind,
           "scopes": sorted(scopes) if scopes is not None else None, "digest": tokens.digest(token),
           "created_by": principal.id, "created_at": now,
           "expires_at": now + timedelta(seconds=body.expires_in_seconds), "revoked": False}
    event = events.TokenCreated(**_fields(request, principal.tenant_id), token_id=doc["token_id"], name=body.name,
                                role=",".join(doc["scopes"] or ["owner"]), user_id=owner, expires_at=doc["expires_at"])
    await _insert(gw, gw.store.tokens, principal.tenant_id, doc, event)
    return _json({**token_view(doc), "token": token}, 201)


async def list_tokens(request: web.Request) -> web.Response:
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    query = {} if principal.may("tokens.manage") else {"user_id": principal.id}
    docs = await gw.store.tokens.find(principal.tenant_id, query, sort=[("created_at", 1)])
    return _json({"items": [token_view(d) for d in docs]})


async def revoke_token(request: web.Request) -> web.Response:
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    token_id = request.match_info["token_id"]
    query: dict[str, Any] = {"token_id": token_id, "revoked": False}
    if not principal.may("tokens.manage"):
        query["user_id"] = principal.id
    event = events.TokenRevoked(**_fields(request, principal.tenant_id), token_id=token_id)
    if not await _update(gw, gw.store.tokens, principal.tenant_id, query,
                         {"$set": {"revoked": True, "revoked_at": _now()}}, event):
        raise NotFound("token", "token_id")
    gw.operators.forget(token_id)
    return web.Response(status=204)


# --- hooks used by the route guard (routes.py) -------------------------------------------------

COSIGN_HEADER = "X-Strongroom-Cosign"


def throttle_agent_address(request: web.Request) -> None:
    throttle(request.app[ACCOUNTS].agent_by_address, f"ip:{request.remote}")


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


# Another gateway instance changed a user, a session or a tenant: drop our cached copies.
ACCOUNT_CHANGES = ["user.#", "tenant.#"]


async def forget_account_changes(event: events.Event, *, gateway: Gateway) -> None:
    if isinstance(event, events.UserLoggedOut):
        gateway.operators.forget_session(event.session_id)
    user_id = getattr(event, "user_id", None)
    if user_id:
        gateway.operators.forget_user(event.tenant_id, user_id)
    if event.type.startswith("tenant."):  # type: ignore[attr-defined]
        gateway.operators.forget_tenant(event.tenant_id)


# --- single sign-on ------------------------------------------------------------------------------

SSO_STATE_TTL = timedelta(minutes=10)


async def _sso_config(gw: Gateway, tenant_id: str, protocol: str) -> dict[str, Any]:
    tenant = await gw.store.tenants.find_one(tenant_id, {}) if tenant_id else None
    config = ((tenant or {}).get("settings") or {}).get("sso")
    if tenant is None or tenant.get("status") != "active" or not config or config.get("protocol") != protocol:
        raise NotFound(f"{protocol} sign-in for this tenant", "tenant")
    return config


def _redirect_uri(gw: Gateway, request: web.Request, config: dict[str, Any]) -> str:
    base = gw.settings.public_url or f"{request.scheme}://{request.host}"
    return config.get("redirect_uri") or f"{base}/v1/auth/oidc/callback"


async def oidc_start(request: web.Request) -> web.Response:
    """Redirects to the tenant's OpenID provider (authorization code flow with PKCE)."""
    gw, acc = _ctx(request)
    throttle(acc.login_by_address, f"ip:{request.remote}")
    tenant_id = request.query.get("tenant", "")[:100]
    config = await _sso_config(gw, tenant_id, "oidc")
    redirect_uri = _redirect_uri(gw, request, config)
    auth = sso_oidc.authorization_request(config, redirect_uri)
    await gw.store.sso_states.insert(tenant_id, {
        "state": auth.state, "nonce": auth.nonce, "code_verifier": auth.code_verifier,
        "redirect_uri": redirect_uri, "expires_at": _now() + SSO_STATE_TTL})
    raise web.HTTPFound(auth.url)


async def oidc_callback(request: web.Request) -> web.Response:
    """The provider sent the browser back with a code: exchange it, check the ID token, map the
    groups to roles and start a session (auth "oidc")."""
    gw, acc = _ctx(request)
    throttle(acc.login_by_address, f"ip:{request.remote}")
    for name in ("state", "code"):
        if not 0 < len(request.query.get(name, "")) <= 1024:
            raise ProblemError(400, "Bad Request", f"{name} is required", name)
    state = await gw.store.sso_state(request.query["state"])
    if state is None or state["expires_at"] <= _now() or state.get("protocol", "oidc") != "oidc":
        raise Unauthorized("unknown or expired sso state")
    tenant_id = state["tenant_id"]
    config = await _sso_config(gw, tenant_id, "oidc")
    if config.get("client_secret"):
        config = {**config, "client_secret": acc.sealer.open(
            config["client_secret"], purpose="oidc_client_secret", tenant_id=tenant_id, owner="sso")}
    form = sso_oidc.token_request(config, code=request.query["code"], redirect_uri=state["redirect_uri"],
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
        await _failed(request, gw, tenant_id, "(oidc)", None, "oidc", reason, count=False)
        raise Unauthorized(reason) from None
    username = str(claims.get("preferred_username") or claims.get("email") or claims["sub"]).lower()[:64]
    groups = claims.get(config.get("groups_claim") or "groups") or []
    mfa_done = bool(set(claims.get("amr") or []) & {"mfa", "otp", "hwk", "swk"})
    user = await sso_user(request, gw, tenant_id, source="oidc", external_id=str(claims["sub"]), username=username,
                          groups=[str(g) for g in groups] if isinstance(groups, list) else [], config=config)
    session = await _start_session(request, gw, user, method="oidc", mfa=mfa_done)
    return _json({**session, "mfa_enrolment_required": False}, 201)


async def sso_user(request: web.Request, gw: Gateway, tenant_id: str, *, source: str, external_id: str,
                   username: str, groups: list[str], config: dict[str, Any]) -> dict[str, Any]:
    """The user an identity provider vouched for, created on first sign-in; roles follow the
    tenant's group mapping at every sign-in, within separation of duties."""
    roles = accounts.roles_from_groups(groups, config.get("group_roles") or {})
    _, small_team = await _tenant_kind(gw, tenant_id)
    decision = accounts.check_role_set(roles, small_team=small_team)
    if not decision.allowed:
        await _failed(request, gw, tenant_id, username, None, source, decision.reason, count=False)
        raise ProblemError(403, "Forbidden", decision.reason, "groups")
    actor = events.Actor(kind="user", id="unknown", auth=source)
    user = await gw.store.users.find_one(tenant_id, {"source": source, "external_id": external_id})
    if user is None:
        if await gw.store.users.find_one(tenant_id, {"username": username}) is not None:
            # SECURITY: never link an SSO identity to a local account by name alone.
            await _failed(request, gw, tenant_id, username, None, source, "username taken by another account", count=False)
            raise Unauthorized("sso username collides")
        user = _new_user(username=username, roles=sorted(roles), source=source, external_id=external_id)
        fields = _fields(request, tenant_id, events.Actor(kind="user", id=user["user_id"], auth=source))
        await _insert(gw, gw.store.users, tenant_id, user, events.UserCreated(
            **fields, user_id=user["user_id"], username=username, roles=tuple(sorted(roles)), source=source))
        user["tenant_id"] = tenant_id
        return user
    if user.get("status") != "active":
        await _failed(request, gw, tenant_id, username, user, source, "user disabled", count=False)
        raise Unauthorized("user disabled")
    if set(user["roles"]) != roles:
        actor = events.Actor(kind="user", id=user["user_id"], auth=source)
        event = events.UserRolesChanged(**_fields(request, tenant_id, actor), type="user.role_granted",
                                        user_id=user["user_id"], roles=tuple(sorted(roles)), granted_by=f"{source}-groups")
        await _update(gw, gw.store.users, tenant_id, {"user_id": user["user_id"]},
                      {"$set": {"roles": sorted(roles)}, "$inc": {"rev": 1}}, event)
        gw.operators.forget_user(tenant_id, user["user_id"])
        user = {**user, "roles": sorted(roles)}
    return user


# --- SAML 2.0 -------------------------------------------------------------------------------------


def _saml_endpoints(gw: Gateway, request: web.Request, config: dict[str, Any]) -> tuple[str, str]:
    """Our SP entity id (the audience the IdP must name) and assertion consumer service URL."""
    base = gw.settings.public_url or f"{request.scheme}://{request.host}"
    return config.get("sp_entity_id") or f"{base}/v1/auth/saml/metadata", f"{base}/v1/auth/saml/acs"


async def saml_start(request: web.Request) -> web.Response:
    """Redirects to the tenant's SAML IdP with an AuthnRequest whose ID the response must answer."""
    gw, acc = _ctx(request)
    throttle(acc.login_by_address, f"ip:{request.remote}")
    tenant_id = request.query.get("tenant", "")[:100]
    config = await _sso_config(gw, tenant_id, "saml")
    sp_entity_id, acs_url = _saml_endpoints(gw, request, config)
    authn = sso_saml.authn_request(idp_sso_url=config["idp_sso_url"], sp_entity_id=sp_entity_id, acs_url=acs_url,
                                   now=_now())
    await gw.store.sso_states.insert(tenant_id, {
        "state": authn.relay_state, "protocol": "saml", "request_id": authn.request_id,
        "sp_entity_id": sp_entity_id, "acs_url": acs_url, "expires_at": _now() + SSO_STATE_TTL})
    raise web.HTTPFound(authn.url)


async def saml_metadata(request: web.Request) -> web.Response:
    """Our service-provider metadata (entity id, ACS) for the tenant's IdP administrator."""
    gw, _ = _ctx(request)
    config = await _sso_config(gw, request.query.get("tenant", "")[:100], "saml")
    sp_entity_id, acs_url = _saml_endpoints(gw, request, config)
    return web.Response(text=sso_saml.sp_metadata(sp_entity_id=sp_entity_id, acs_url=acs_url),
                        content_type="application/samlmetadata+xml")


async def saml_acs(request: web.Request) -> web.Response:
    """The IdP posted its Response (HTTP-POST binding): check it against the request we made
    (single use), refuse replayed assertions, map groups to roles and start a session."""
    gw, acc = _ctx(request)
    throttle(acc.login_by_address, f"ip:{request.remote}")
    try:
        form = await request.post()
    except ValueError:
        raise ProblemError(400, "Bad Request", "expected a form body (HTTP-POST binding)", "SAMLResponse") from None
    for name in ("SAMLResponse", "RelayState"):
        value = form.get(name)
        if not isinstance(value, str) or not value:
            raise ProblemError(400, "Bad Request", f"{name} is required", name)
    relay_state = str(form["RelayState"])
    # SECURITY: the state is taken (deleted) before anything else: each AuthnRequest is answered once.
    state = await gw.store.sso_state(relay_state[:200])
    if state is None or state["expires_at"] <= _now() or state.get("protocol") != "saml":
        raise Unauthorized("unknown or expired saml relay state")
    tenant_id = state["tenant_id"]
    config = await _sso_config(gw, tenant_id, "saml")
    try:
        root = sso_saml.decode_response(str(form["SAMLResponse"]))
    except sso_saml.MalformedResponse as exc:
        await _failed(request, gw, tenant_id, "(saml)", None, "saml", str(exc), count=False)
        raise ProblemError(400, "Bad Request", str(exc), "SAMLResponse") from None
    try:
        identity = sso_saml.verify_response(
            root, idp_certificate_pem=config["idp_certificate_pem"], idp_entity_id=config["idp_entity_id"],
            sp_entity_id=state["sp_entity_id"], acs_url=state["acs_url"], request_id=state["request_id"], now=_now())
    except (sso_saml.InvalidResponse, ValueError) as exc:
        reason = str(exc) if isinstance(exc, sso_saml.InvalidResponse) else "unusable idp certificate"
        await _failed(request, gw, tenant_id, "(saml)", None, "saml", reason, count=False)
        raise Unauthorized(reason) from None
    username = identity.name_id.lower()[:64]
    if not await gw.store.first_use_of_assertion(tenant_id, identity.assertion_id, identity.remember_until):
        await _failed(request, gw, tenant_id, username, None, "saml", "replayed assertion", count=False)
        raise Unauthorized("replayed saml assertion")
    groups = identity.attributes.get(config.get("groups_claim") or "groups", [])
    user = await sso_user(request, gw, tenant_id, source="saml", external_id=identity.name_id, username=username,
                          groups=groups, config=config)
    session = await _start_session(request, gw, user, method="saml", mfa=identity.mfa)
    return _json({**session, "mfa_enrolment_required": False}, 201)


# --- MFA reset (two admins) and password change ------------------------------------------------


async def request_mfa_reset(request: web.Request) -> web.Response:
    """Tenant admin: ask to reset a user's MFA (a lost authenticator); a second admin confirms."""
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    doc = await _user(gw, principal.tenant_id, request.match_info["user_id"])
    if doc["user_id"] == principal.id:
        raise ProblemError(422, "Unprocessable Content", "a user may not reset their own MFA", "user_id")
    if not (doc.get("mfa") or {}).get("confirmed"):
        raise ProblemError(409, "Conflict", "the user has no MFA enrolled", "user_id")
    event = events.UserMfaReset(**_fields(request, principal.tenant_id), type="user.mfa_reset_pending",
                                user_id=doc["user_id"], requested_by=principal.id)
    pending = {"requested_by": principal.id, "requested_at": _now()}
    if not await _update(gw, gw.store.users, principal.tenant_id, {"user_id": doc["user_id"], "rev": doc["rev"]},
                         {"$set": {"mfa_reset": pending}, "$inc": {"rev": 1}}, event):
        raise ProblemError(409, "Conflict", "the user changed meanwhile; retry", "user_id")
    return _json({"user_id": doc["user_id"], "mfa_reset": pending}, 202)


async def confirm_mfa_reset(request: web.Request) -> web.Response:
    """A second tenant admin confirms: the user's TOTP secret and recovery codes are dropped and
    their sessions end; at the next password sign-in they enrol again."""
    gw, _ = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    doc = await _user(gw, principal.tenant_id, request.match_info["user_id"])
    pending = doc.get("mfa_reset")
    if not pending:
        raise NotFound("pending MFA reset", "user_id")
    decision = accounts.check_confirmation(granted_by=pending["requested_by"], confirmer_id=principal.id,
                                           target_id=doc["user_id"])
    if not decision.allowed:
        raise ProblemError(403, "Forbidden", decision.reason.replace("granted a role", "requested a reset"), "user_id")
    event = events.UserMfaReset(**_fields(request, principal.tenant_id), type="user.mfa_reset",
                                user_id=doc["user_id"], requested_by=pending["requested_by"])
    if not await _update(gw, gw.store.users, principal.tenant_id, {"user_id": doc["user_id"], "rev": doc["rev"]},
                         {"$set": {"mfa": None, "recovery": [], "sessions_after": _now()},
                          "$unset": {"mfa_reset": ""}, "$inc": {"rev": 1}}, event):
        raise ProblemError(409, "Conflict", "the user changed meanwhile; retry", "user_id")
    gw.operators.forget_user(principal.tenant_id, doc["user_id"])
    return _json(user_view({**doc, "mfa": None}))


async def change_password(request: web.Request) -> web.Response:
    """The signed-in user changes their password: the current one and, once enrolled, a fresh
    TOTP code. Every session of theirs ends (sign in again); failures count toward lockout."""
    gw, acc = _ctx(request)
    principal: Principal = request[PRINCIPAL]
    throttle(acc.login_by_address, f"ip:{request.remote}")
    body = await body_as(request, S.ChangePassword)
    if principal.kind not in ("user", "provider"):
        raise ProblemError(403, "Forbidden", "only people have passwords", "current_password")
    doc = await _user(gw, principal.tenant_id, principal.id)
    if not doc.get("password_hash"):
        raise ProblemError(409, "Conflict", "this account signs in through single sign-on", "current_password")
    _check_password(body.new_password, doc["username"])
    doc["tenant_id"] = principal.tenant_id
    method = "password_change"
    if not await acc.verify(doc["password_hash"], body.current_password):
        await _failed(request, gw, principal.tenant_id, doc["username"], doc, method, "bad current password")
        raise ProblemError(403, "Forbidden", "the current password or code is wrong", "current_password")
    if (doc.get("mfa") or {}).get("confirmed"):
        secret = acc.open_totp(doc["mfa"]["secret"], tenant_id=principal.tenant_id, user_id=doc["user_id"])
        step = mfa.matching_step(secret, body.totp or "", _now(), last_step=doc["mfa"].get("last_step"))
        # SECURITY: as at sign-in, the step only moves forward: a code is good once.
        if step is None or not await gw.store.users.update_one(
                principal.tenant_id, {"user_id": doc["user_id"], "$or": [{"mfa.last_step": None}, {"mfa.last_step": {"$lt": step}}]},
                {"$set": {"mfa.last_step": step}}):
            await _failed(request, gw, principal.tenant_id, doc["username"], doc, method, "bad or replayed TOTP code")
            raise ProblemError(403, "Forbidden", "the current password or code is wrong", "totp")
    encoded = await acc.hash(body.new_password)
    event = events.UserPasswordSet(**_fields(request, principal.tenant_id), user_id=doc["user_id"])
    await _update(gw, gw.store.users, principal.tenant_id, {"user_id": doc["user_id"]},
                  {"$set": {"password_hash": encoded, "sessions_after": _now()}, "$inc": {"rev": 1}}, event)
    gw.operators.forget_user(principal.tenant_id, doc["user_id"])
    return web.Response(status=204)
