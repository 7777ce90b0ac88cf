"""Operator commands of the accounts area: tenants, API and enrollment tokens, bootstrap, login and
logout, whoami, MFA enrolment, users and roles, tenant settings and the provider's tenant lifecycle.
Passwords are read from standard input or a prompt, never from arguments."""

from __future__ import annotations

import sys
from typing import Any

from strongroom.cli_common import (
    Column,
    CommandFailed,
    Commands,
    Ctx,
    api,
    items,
    positive_int,
    show_list,
    show_message,
    show_new_credential,
    show_object,
)
from strongroom.client import quote_id

TOKEN_COLUMNS: list[Column] = [
    ("ID", "token_id"), ("NAME", "name"), ("USER", "user_id"), ("SCOPES", "scopes"), ("CREATED", "created_at"),
    ("EXPIRES", "expires_at"), ("REVOKED", lambda it: it.get("revoked_at") or it.get("revoked")),
]
USER_COLUMNS: list[Column] = [
    ("ID", "user_id"), ("USERNAME", "username"), ("ROLES", "roles"),
    ("PENDING", lambda u: ",".join(p["role"] for p in u.get("pending_roles") or [])),
    ("MFA", "mfa_enrolled"), ("STATUS", "status"), ("ACCOUNT", "account"),
]
TENANT_COLUMNS: list[Column] = [
    ("ID", "tenant_id"), ("NAME", "name"), ("STATUS", "status"),
    ("USERS", "usage.users"), ("DEVICES", "usage.devices"), ("TOKENS", "usage.tokens"),
]
TOKEN_REQUEST_COLUMNS: list[Column] = [
    ("ID", "token_id"), ("NAME", "name"), ("ACCOUNT", "user_id"), ("REQUESTED_BY", "minted_by"),
    ("STATUS", "status"), ("CONFIRMED_BY", "confirmed_by"),
]


def _with_note(ctx: Ctx, resp: Any, note: str) -> int:
    """The created object, and on standard error where its secret went (never here)."""
    code = show_object(ctx, resp)
    if not ctx.as_json:
        print(note, file=sys.stderr)
    return code


def cmd_tenant_create(ctx: Ctx) -> int:
    body: dict[str, Any] = {"name": ctx.args.name, "admin_email": ctx.args.admin_email}
    if ctx.args.admin_username:
        body["admin_username"] = ctx.args.admin_username
    if ctx.args.second_admin:
        body["second_admin_username"], body["second_admin_email"] = ctx.args.second_admin
    resp = api(ctx).post("/v1/tenants", body)
    return _with_note(ctx, resp, "each admin's invitation (their one-time setup token) went to their own "
                                   "address; `invitation: undelivered` means re-send it with `strongroom user invite`")


def cmd_token_create(ctx: Ctx) -> int:
    body: dict[str, Any] = {"name": ctx.args.name}
    if ctx.args.scopes:
        body["scopes"] = ctx.args.scopes
    if ctx.args.service_account:
        body["service_account_id"] = ctx.args.service_account
    if ctx.args.expires_in is not None:
        body["expires_in_seconds"] = ctx.args.expires_in
    resp = api(ctx).post("/v1/tokens", body)
    return show_new_credential(ctx, resp, "token", "the API token")


def cmd_token_list(ctx: Ctx) -> int:
    return show_list(ctx, api(ctx).get("/v1/tokens"), TOKEN_COLUMNS)


def cmd_token_requests(ctx: Ctx) -> int:
    return show_list(ctx, api(ctx).get("/v1/token-requests"), TOKEN_REQUEST_COLUMNS)


def cmd_token_confirm(ctx: Ctx) -> int:
    """A second admin confirms a service-account token request; the secret goes to the requester."""
    resp = api(ctx).post(f"/v1/token-requests/{quote_id(ctx.args.id)}/confirm", {})
    return show_message(ctx, resp, f"confirmed token request {ctx.args.id}: its requester collects it with "
                                   f"`strongroom token collect {ctx.args.id}`")


def cmd_token_collect(ctx: Ctx) -> int:
    resp = api(ctx).post(f"/v1/token-requests/{quote_id(ctx.args.id)}/collect", {})
    return show_new_credential(ctx, resp, "token", "the service-account token")


def cmd_token_revoke(ctx: Ctx) -> int:
    resp = api(ctx).delete(f"/v1/tokens/{quote_id(ctx.args.id)}")
    return show_message(ctx, resp, f"revoked token {ctx.args.id}")


def cmd_enroll_token_create(ctx: Ctx) -> int:
    body: dict[str, Any] = {}
    if ctx.args.name is not None:
        body["name"] = ctx.args.name
    if ctx.args.ttl is not None:
        body["ttl_seconds"] = ctx.args.ttl
    if ctx.args.groups:
        body["groups"] = ctx.args.groups
    resp = api(ctx).post("/v1/enrollment-tokens", body)
    return show_new_credential(ctx, resp, "token", "the enrollment token")


def cmd_user_mfa_reset(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).post(f"/v1/users/{user_ref(ctx)}/mfa/reset"))


def cmd_user_mfa_reset_confirm(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).post(f"/v1/users/{user_ref(ctx)}/mfa/reset/confirm"))


def cmd_user_create(ctx: Ctx) -> int:
    body = {"username": ctx.args.username, "roles": ctx.args.roles or [], "account": ctx.args.account}
    if ctx.args.email:
        body["email"] = ctx.args.email
    resp = api(ctx).post("/v1/users", body)
    if ctx.args.account == "service":
        return show_object(ctx, resp)
    return _with_note(ctx, resp, f"the invitation (a one-time setup token) went to {ctx.args.email or 'their address'}, "
                                   "never to you; roles under pending_roles wait for a second admin")


def user_ref(ctx: Ctx) -> str:
    """The user a command names: a user id, or a username of the tenant (looked up in its users)."""
    value = ctx.args.id
    if value.startswith(("usr_", "usr-")):
        return quote_id(value)
    for user in items(api(ctx).get("/v1/users")):
        if user.get("username") == value.lower():
            return quote_id(str(user["user_id"]))
    raise CommandFailed(f"no user {value} in this tenant (give a username or a user id)")


def cmd_user_invite(ctx: Ctx) -> int:
    resp = api(ctx).post(f"/v1/users/{user_ref(ctx)}/invitation", {})
    return _with_note(ctx, resp, "a new invitation went to the user's address; the old setup token no longer works")


def cmd_user_list(ctx: Ctx) -> int:
    return show_list(ctx, api(ctx).get("/v1/users"), USER_COLUMNS)


def cmd_user_show(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get(f"/v1/users/{user_ref(ctx)}"))


def cmd_user_grant(ctx: Ctx) -> int:
    resp = api(ctx).post(f"/v1/users/{user_ref(ctx)}/roles", {"grant": ctx.args.roles})
    return show_object(ctx, resp)


def cmd_user_revoke(ctx: Ctx) -> int:
    resp = api(ctx).post(f"/v1/users/{user_ref(ctx)}/roles", {"revoke": ctx.args.roles})
    return show_object(ctx, resp)


def cmd_user_confirm(ctx: Ctx) -> int:
    resp = api(ctx).post(f"/v1/users/{user_ref(ctx)}/roles/{quote_id(ctx.args.role)}/confirm")
    return show_object(ctx, resp)


def cmd_user_disable(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).post(f"/v1/users/{user_ref(ctx)}/disable"))


def cmd_settings_show(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get("/v1/tenant/settings"))


def cmd_settings_set(ctx: Ctx) -> int:
    body = {"small_team": ctx.args.small_team == "on"}
    return show_object(ctx, api(ctx).put("/v1/tenant/settings", body))


def cmd_settings_confirm(ctx: Ctx) -> int:
    resp = api(ctx).post(f"/v1/tenant/settings/changes/{quote_id(ctx.args.change_id)}/confirm")
    return show_object(ctx, resp)


def cmd_tenants_list(ctx: Ctx) -> int:
    return show_list(ctx, api(ctx).get("/v1/tenants"), TENANT_COLUMNS)


def cmd_tenants_status(ctx: Ctx) -> int:
    """One tenant's status and usage; an offboarded one's shredding (counts, certificate id)."""
    tenant = next((t for t in items(api(ctx).get("/v1/tenants")) if t.get("tenant_id") == ctx.args.id), None)
    if tenant is None:
        raise CommandFailed(f"no customer tenant {ctx.args.id}")
    if tenant.get("offboarding") and not ctx.as_json:  # the signed certificate itself: --json
        tenant = {**tenant, "offboarding": {k: v for k, v in tenant["offboarding"].items()
                                            if k not in ("certificate", "signature")}}
    return show_object(ctx, tenant)


def _lifecycle(action: str):
    def command(ctx: Ctx) -> int:
        resp = api(ctx).post(f"/v1/tenants/{quote_id(ctx.args.id)}/{action}")
        if action == "offboard" and not ctx.as_json:
            print(f"keysvc shreds the tenant's keys now: `strongroom tenants status {ctx.args.id}` shows "
                  "offboarded with the counts and the destruction certificate", file=sys.stderr)
        return show_object(ctx, resp)
    return command


def add_tenant(cli: Commands) -> None:
    g = cli.noun("tenant", "Manage tenants (needs the provider credential as --token).")
    p = g.action("create", cmd_tenant_create,
                 "Create a tenant and its first admin (and a second), each invited by e-mail at their own address.")
    p.add_argument("name")
    p.add_argument("--admin-email", required=True, help="where the first admin's invitation goes")
    p.add_argument("--admin-username", help="the first admin's username (default admin)")
    p.add_argument("--second-admin", nargs=2, metavar=("USERNAME", "EMAIL"),
                   help="a second admin, invited too (grants wait for a second admin, whom a lone admin cannot make)")


def add_token(cli: Commands) -> None:
    g = cli.noun("token", "Manage API tokens.")
    p = g.action("create", cmd_token_create, "Create an API token; prints it once.")
    p.add_argument("--name", required=True)
    p.add_argument("--scope", dest="scopes", action="append",
                   help="a permission the token may use (repeat for more; default: all of yours)")
    p.add_argument("--service-account", metavar="USER_ID", help="tenant admin: a token for this service account")
    p.add_argument("--expires-in", type=positive_int, metavar="SECONDS")
    g.action("list", cmd_token_list, "List API tokens.")
    p = g.action("revoke", cmd_token_revoke, "Revoke an API token.")
    p.add_argument("id")
    g.action("requests", cmd_token_requests,
             "Service-account token requests waiting for a second admin, or confirmed and not yet collected.")
    p = g.action("confirm", cmd_token_confirm, "Confirm another admin's service-account token request.")
    p.add_argument("id")
    p = g.action("collect", cmd_token_collect, "Collect the service-account token you requested, once confirmed.")
    p.add_argument("id")


def add_enroll_token(cli: Commands) -> None:
    g = cli.noun("enroll-token", "Manage device enrollment tokens.")
    p = g.action("create", cmd_enroll_token_create, "Create an enrollment token; prints it once.")
    p.add_argument("--name")
    p.add_argument("--ttl", type=positive_int, metavar="SECONDS")
    p.add_argument("--group", dest="groups", action="append", help="device group (repeatable)")


def add_user(cli: Commands) -> None:
    g = cli.noun("user", "Manage the tenant's users and their roles (tenant admin).")
    p = g.action("create", cmd_user_create, "Create a user; a person is invited by e-mail at --email.")
    p.add_argument("username")
    p.add_argument("--email", help="a person's address: their invitation (setup token) goes there, never to you")
    p.add_argument("--role", dest="roles", action="append", help="role to grant (repeatable)")
    p.add_argument("--account", choices=("person", "service"), default="person")
    p = g.action("invite", cmd_user_invite, "Re-send a person's invitation (a new setup token; the old one stops working).")
    p.add_argument("id")
    g.action("list", cmd_user_list, "List users.")
    p = g.action("show", cmd_user_show, "Show a user.")
    p.add_argument("id")
    for name, func, help_ in (("grant", cmd_user_grant, "Grant roles (most wait for a second admin)."),
                              ("revoke", cmd_user_revoke, "Revoke roles.")):
        p = g.action(name, func, help_)
        p.add_argument("id")
        p.add_argument("--role", dest="roles", action="append", required=True)
    p = g.action("confirm", cmd_user_confirm, "Confirm a pending role grant (a second tenant admin).")
    p.add_argument("id")
    p.add_argument("role")
    p = g.action("disable", cmd_user_disable, "Disable a user and drop their roles.")
    p.add_argument("id")
    p = g.action("mfa-reset", cmd_user_mfa_reset, "Ask to reset a user's MFA (a second tenant admin confirms).")
    p.add_argument("id")
    p = g.action("mfa-reset-confirm", cmd_user_mfa_reset_confirm, "Confirm a pending MFA reset (a second tenant admin).")
    p.add_argument("id")


def add_settings(cli: Commands) -> None:
    g = cli.noun("settings", "Tenant settings (tenant admin).")
    g.action("show", cmd_settings_show, "Show tenant settings.")
    p = g.action("set", cmd_settings_set, "Change tenant settings (small-team on waits for a second admin).")
    p.add_argument("--small-team", choices=("on", "off"), required=True,
                   help="allow admin+custodian/approver in one user, every change co-signed")
    p = g.action("confirm", cmd_settings_confirm, "Confirm a pending settings change (a second tenant admin).")
    p.add_argument("change_id")


def add_tenants(cli: Commands) -> None:
    g = cli.noun("tenants", "Provider: customer tenants' status, usage and lifecycle.")
    g.action("list", cmd_tenants_list, "List customer tenants with usage.")
    p = g.action("status", cmd_tenants_status, "A tenant's status and usage; offboarding -> offboarded with its certificate.")
    p.add_argument("id")
    for action in ("suspend", "resume", "offboard"):
        p = g.action(action, _lifecycle(action), f"{action.capitalize()} a tenant.")
        p.add_argument("id")
