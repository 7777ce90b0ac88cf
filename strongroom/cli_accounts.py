"""Operator commands of the accounts area, registered into `strongroom`'s parser by `register`:
bootstrap, login and logout, whoami, MFA enrolment, users and roles, tenant settings and the
provider's tenant lifecycle. Passwords are read from standard input, never from arguments."""

from __future__ import annotations

import getpass
import sys
from typing import Any

from strongroom.client import quote_id

USER_COLUMNS = [("ID", "user_id"), ("USERNAME", "username"), ("ROLES", "roles"),
                ("PENDING", lambda u: ",".join(p["role"] for p in u.get("pending_roles") or [])),
                ("MFA", "mfa_enrolled"), ("STATUS", "status"), ("ACCOUNT", "account")]
TENANT_COLUMNS = [("ID", "tenant_id"), ("NAME", "name"), ("STATUS", "status"),
                  ("USERS", "usage.users"), ("DEVICES", "usage.devices"), ("TOKENS", "usage.tokens")]


def _cli():  # the core CLI module, imported late: it imports this one
    from strongroom import cli

    return cli


def _api(ctx: Any) -> Any:
    return _cli()._require(ctx)


def _password(ctx: Any) -> str:
    """From standard input (first line) with --password-stdin, else prompted without echo."""
    if ctx.args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass("password: ")


def cmd_bootstrap(ctx: Any) -> int:
    resp = _api(ctx).post("/v1/auth/bootstrap", {"username": ctx.args.username, "password": _password(ctx)})
    return _cli().show_object(ctx, resp)


def cmd_login(ctx: Any) -> int:
    body: dict[str, Any] = {"username": ctx.args.username, "password": _password(ctx)}
    for field in ("tenant", "totp", "recovery_code"):
        if getattr(ctx.args, field):
            body[field] = getattr(ctx.args, field)
    resp = _api(ctx).post("/v1/auth/login", body)
    if isinstance(resp, dict) and resp.get("mfa_enrolment_required"):
        print("note: your roles require MFA: run `strongroom mfa enrol` with this session", file=sys.stderr)
    return _cli().show_new_credential(ctx, resp, "session_token", "the session token")


def cmd_setup(ctx: Any) -> int:
    resp = _api(ctx).post("/v1/auth/setup", {"setup_token": ctx.args.setup_token, "password": _password(ctx)})
    return _cli().show_object(ctx, resp)


def cmd_logout(ctx: Any) -> int:
    return _cli().show_message(ctx, _api(ctx).post("/v1/auth/logout"), "signed out")


def cmd_password_change(ctx: Any) -> int:
    """Current and new password from standard input (two lines) or prompts; the TOTP code as an option."""
    if ctx.args.password_stdin:
        current, new = sys.stdin.readline().rstrip("\n"), sys.stdin.readline().rstrip("\n")
    else:
        current, new = getpass.getpass("current password: "), getpass.getpass("new password: ")
    body: dict[str, Any] = {"current_password": current, "new_password": new}
    if ctx.args.totp:
        body["totp"] = ctx.args.totp
    resp = _api(ctx).post("/v1/me/password", body)
    return _cli().show_message(ctx, resp, "password changed; every session ended: sign in again")


def cmd_user_mfa_reset(ctx: Any) -> int:
    return _cli().show_object(ctx, _api(ctx).post(f"/v1/users/{quote_id(ctx.args.id)}/mfa/reset"))


def cmd_user_mfa_reset_confirm(ctx: Any) -> int:
    return _cli().show_object(ctx, _api(ctx).post(f"/v1/users/{quote_id(ctx.args.id)}/mfa/reset/confirm"))


def cmd_whoami(ctx: Any) -> int:
    return _cli().show_object(ctx, _api(ctx).get("/v1/me"))


def cmd_mfa_enrol(ctx: Any) -> int:
    resp = _api(ctx).post("/v1/me/mfa")
    return _cli().show_new_credential(ctx, resp, "secret", "the TOTP secret (add the otpauth URI to your app)")


def cmd_mfa_confirm(ctx: Any) -> int:
    resp = _api(ctx).post("/v1/me/mfa/confirm", {"code": ctx.args.code})
    cli = _cli()
    if ctx.as_json:
        cli._print_json(resp)
    else:
        print("recovery codes (each works once):")
        for code in resp.get("recovery_codes", []):
            print(f"  {code}")
        print(cli._SHOWN_ONCE_NOTE.format(what="each recovery code"), file=sys.stderr)
    return cli.EXIT_OK


def cmd_user_create(ctx: Any) -> int:
    body = {"username": ctx.args.username, "roles": ctx.args.roles or [], "account": ctx.args.account}
    resp = _api(ctx).post("/v1/users", body)
    return _cli().show_new_credential(ctx, resp, "setup_token", "the user's one-time setup token")


def cmd_user_list(ctx: Any) -> int:
    return _cli().show_list(ctx, _api(ctx).get("/v1/users"), USER_COLUMNS)


def cmd_user_show(ctx: Any) -> int:
    return _cli().show_object(ctx, _api(ctx).get(f"/v1/users/{quote_id(ctx.args.id)}"))


def cmd_user_grant(ctx: Any) -> int:
    resp = _api(ctx).post(f"/v1/users/{quote_id(ctx.args.id)}/roles", {"grant": ctx.args.roles})
    return _cli().show_object(ctx, resp)


def cmd_user_revoke(ctx: Any) -> int:
    resp = _api(ctx).post(f"/v1/users/{quote_id(ctx.args.id)}/roles", {"revoke": ctx.args.roles})
    return _cli().show_object(ctx, resp)


def cmd_user_confirm(ctx: Any) -> int:
    resp = _api(ctx).post(f"/v1/users/{quote_id(ctx.args.id)}/roles/{quote_id(ctx.args.role)}/confirm")
    return _cli().show_object(ctx, resp)


def cmd_user_disable(ctx: Any) -> int:
    return _cli().show_object(ctx, _api(ctx).post(f"/v1/users/{quote_id(ctx.args.id)}/disable"))


def cmd_settings_show(ctx: Any) -> int:
    return _cli().show_object(ctx, _api(ctx).get("/v1/tenant/settings"))


def cmd_settings_set(ctx: Any) -> int:
    body = {"small_team": ctx.args.small_team == "on"}
    return _cli().show_object(ctx, _api(ctx).put("/v1/tenant/settings", body))


def cmd_settings_confirm(ctx: Any) -> int:
    resp = _api(ctx).post(f"/v1/tenant/settings/changes/{quote_id(ctx.args.change_id)}/confirm")
    return _cli().show_object(ctx, resp)


def cmd_tenants_list(ctx: Any) -> int:
    return _cli().show_list(ctx, _api(ctx).get("/v1/tenants"), TENANT_COLUMNS)


def _lifecycle(action: str):
    def command(ctx: Any) -> int:
        resp = _api(ctx).post(f"/v1/tenants/{quote_id(ctx.args.id)}/{action}")
        return _cli().show_object(ctx, resp)
    return command


def register(leaf: Any, noun: Any) -> None:
    """Adds this area's nouns and actions; `leaf` and `noun` are `build_parser`'s helpers."""
    g = noun("account", "Sign in and out, bootstrap, set a first password, who am I.")
    p = leaf(g, "bootstrap", cmd_bootstrap, "With the bootstrap credential (--token): create the first admin.")
    p.add_argument("--username", required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = leaf(g, "login", cmd_login, "Sign in; prints a session token once (use it as --token).", token=False)
    p.add_argument("--tenant", help="tenant id (not needed in enterprise deployments)")
    p.add_argument("--username", required=True)
    p.add_argument("--totp", help="current 6-digit TOTP code")
    p.add_argument("--recovery-code", dest="recovery_code")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = leaf(g, "setup", cmd_setup, "Set your first password with the one-time setup token.", token=False)
    p.add_argument("setup_token")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    leaf(g, "logout", cmd_logout, "End this session.")
    leaf(g, "whoami", cmd_whoami, "Show your user, roles and how you signed in.")
    p = leaf(g, "password", cmd_password_change, "Change your password (current password and a TOTP code).")
    p.add_argument("--totp", help="current 6-digit TOTP code (required once MFA is enrolled)")
    p.add_argument("--password-stdin", action="store_true", help="read current and new password, one a line")

    g = noun("mfa", "Enrol in TOTP multi-factor authentication.")
    leaf(g, "enrol", cmd_mfa_enrol, "Start enrolment: prints the TOTP secret and otpauth URI once.")
    p = leaf(g, "confirm", cmd_mfa_confirm, "Finish enrolment with a current code; prints recovery codes once.")
    p.add_argument("code")

    g = noun("user", "Manage the tenant's users and their roles (tenant admin).")
    p = leaf(g, "create", cmd_user_create, "Create a user; prints their one-time setup token.")
    p.add_argument("username")
    p.add_argument("--role", dest="roles", action="append", help="role to grant (repeatable)")
    p.add_argument("--account", choices=("person", "service"), default="person")
    leaf(g, "list", cmd_user_list, "List users.")
    p = leaf(g, "show", cmd_user_show, "Show a user.")
    p.add_argument("id")
    for name, func, help_ in (("grant", cmd_user_grant, "Grant roles (custodian/approver wait for a second admin)."),
                              ("revoke", cmd_user_revoke, "Revoke roles.")):
        p = leaf(g, name, func, help_)
        p.add_argument("id")
        p.add_argument("--role", dest="roles", action="append", required=True)
    p = leaf(g, "confirm", cmd_user_confirm, "Confirm a pending role grant (a second tenant admin).")
    p.add_argument("id")
    p.add_argument("role")
    p = leaf(g, "disable", cmd_user_disable, "Disable a user and drop their roles.")
    p.add_argument("id")
    p = leaf(g, "mfa-reset", cmd_user_mfa_reset, "Ask to reset a user's MFA (a second tenant admin confirms).")
    p.add_argument("id")
    p = leaf(g, "mfa-reset-confirm", cmd_user_mfa_reset_confirm, "Confirm a pending MFA reset (a second tenant admin).")
    p.add_argument("id")

    g = noun("settings", "Tenant settings (tenant admin).")
    leaf(g, "show", cmd_settings_show, "Show tenant settings.")
    p = leaf(g, "set", cmd_settings_set, "Change tenant settings (small-team on waits for a second admin).")
    p.add_argument("--small-team", choices=("on", "off"), required=True,
                   help="allow admin+custodian/approver in one user, every change co-signed")
    p = leaf(g, "confirm", cmd_settings_confirm, "Confirm a pending settings change (a second tenant admin).")
    p.add_argument("change_id")

    g = noun("tenants", "Provider: customer tenants' status, usage and lifecycle.")
    leaf(g, "list", cmd_tenants_list, "List customer tenants with usage.")
    for action in ("suspend", "resume", "offboard"):
        p = leaf(g, action, _lifecycle(action), f"{action.capitalize()} a tenant.")
        p.add_argument("id")
