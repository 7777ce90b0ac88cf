"""Operator commands for signing in: bootstrap, first password, login (the session kept in a
profile), logout, whoami, password change and MFA enrolment. Passwords are read from standard
input or a prompt, setup tokens and TOTP secrets from files: never from arguments."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pyotp

from strongroom import profiles
from strongroom.cli_common import (
    EXIT_OK,
    SHOWN_ONCE_NOTE,
    CommandFailed,
    Commands,
    Ctx,
    UsageError,
    api,
    hidden,
    print_data,
    read_password,
    redact,
    show_message,
    show_new_credential,
    show_object,
    stdin_line,
)

_SETUP_TOKEN = re.compile(r"sr_setup_[A-Za-z0-9_-]+")


def setup_token_from(path: str) -> str:
    """The setup token in an invitation (.eml) or in a file holding just the token."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    found = _SETUP_TOKEN.search(text)
    if found is None:
        raise UsageError(f"{path} holds no setup token (sr_setup_...)")
    return found.group(0)


def write_secret_file(path: str, secret: str) -> None:
    """A new file, 0600 from its creation: a TOTP secret is as good as the authenticator app."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists: choose a new file for the secret") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")


def totp_now(path: str) -> str:
    """The current TOTP code of a secret file (what an authenticator app shows). A code is good
    once, so the step used last is noted next to the file and a second use waits for the next one."""
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        totp = pyotp.TOTP(secret)
        totp.now()
    except (ValueError, TypeError):
        raise UsageError(f"{path} does not hold a base32 TOTP secret") from None
    used = Path(f"{path}.last-step")
    try:
        last = int(used.read_text().strip())
    except (OSError, ValueError):
        last = -1
    step = int(time.time()) // totp.interval
    if step <= last:
        print("waiting for the next TOTP code (the current one was used)", file=sys.stderr)
        time.sleep((last + 1) * totp.interval - time.time() + 0.05)
        step = last + 1
    used.write_text(str(step))
    return totp.at(step * totp.interval)


def cmd_bootstrap(ctx: Ctx) -> int:
    body: dict[str, Any] = {"username": ctx.args.username, "password": read_password(ctx)}
    if ctx.args.email:
        body["email"] = ctx.args.email
    if ctx.args.second_admin:
        body["second_admin_username"], body["second_admin_email"] = ctx.args.second_admin
    resp = api(ctx).post("/v1/auth/bootstrap", body)
    return show_object(ctx, resp)


def cmd_login(ctx: Ctx) -> int:
    """Signs in and keeps the session in the profile (a 0600 file); prints it only when asked."""
    body: dict[str, Any] = {"username": ctx.args.username, "password": read_password(ctx)}
    if ctx.args.totp_secret_file:
        body["totp"] = totp_now(ctx.args.totp_secret_file)
    for field in ("tenant", "totp", "recovery_code"):
        if getattr(ctx.args, field):
            body[field] = getattr(ctx.args, field)
    resp = api(ctx).post("/v1/auth/login", body)
    if not isinstance(resp, dict) or not resp.get("session_token"):
        raise CommandFailed("the gateway answered the sign-in without a session")
    path = profiles.save(ctx.environ, ctx.args.profile, {
        "url": api(ctx).base_url, "token": resp["session_token"], "tenant_id": resp.get("tenant_id"),
        "username": resp.get("username")})
    if resp.get("mfa_enrolment_required"):
        print("note: your roles require MFA: run `strongroom mfa enrol`, then `strongroom mfa confirm CODE`",
              file=sys.stderr)
    if ctx.args.print_session:
        return show_new_credential(ctx, resp, "session_token", "the session token")
    if ctx.as_json:
        print_data(ctx, redact(resp))
    else:
        print(f"signed in as {resp.get('username')} (tenant {resp.get('tenant_id')}); "
              f"the session is kept in profile {ctx.args.profile} ({path})")
    return EXIT_OK


def cmd_setup(ctx: Ctx) -> int:
    """The setup token from the invitation: an .eml file or a file holding the token, else standard input.
    With --password-stdin the token file must be given, the password is the first line of standard input."""
    if ctx.args.invitation:
        token = setup_token_from(ctx.args.invitation)
    elif ctx.args.setup_token:
        token = ctx.args.setup_token
    else:
        raise UsageError("give --invitation FILE (the invitation .eml or a file holding its setup token)")
    resp = api(ctx).post("/v1/auth/setup", {"setup_token": token, "password": read_password(ctx)})
    return show_object(ctx, resp)


def cmd_logout(ctx: Ctx) -> int:
    resp = api(ctx).post("/v1/auth/logout")
    if getattr(ctx.args, "token_source", None):  # the session came from the profile: forget it there
        profiles.forget_token(ctx.environ, ctx.args.profile)
    return show_message(ctx, resp, "signed out")


def cmd_password_change(ctx: Ctx) -> int:
    """Current and new password from standard input (two lines) or prompts; the TOTP code as an option."""
    if ctx.args.password_stdin:
        current, new = stdin_line(), stdin_line()
    else:
        current, new = hidden("current password: "), hidden("new password: ")
    body: dict[str, Any] = {"current_password": current, "new_password": new}
    if ctx.args.totp:
        body["totp"] = ctx.args.totp
    resp = api(ctx).post("/v1/me/password", body)
    return show_message(ctx, resp, "password changed; every session ended: sign in again")


def cmd_whoami(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get("/v1/me"))


def cmd_mfa_enrol(ctx: Ctx) -> int:
    resp = api(ctx).post("/v1/me/mfa")
    if ctx.args.secret_file and isinstance(resp, dict):
        write_secret_file(ctx.args.secret_file, str(resp["secret"]))
        print(f"the TOTP secret is in {ctx.args.secret_file} (0600); finish with "
              f"`strongroom mfa confirm --secret-file {ctx.args.secret_file}`")
        return EXIT_OK
    return show_new_credential(ctx, resp, "secret", "the TOTP secret (add the otpauth URI to your app)")


def cmd_mfa_code(ctx: Ctx) -> int:
    print(totp_now(ctx.args.secret_file))
    return EXIT_OK


def cmd_mfa_confirm(ctx: Ctx) -> int:
    if ctx.args.secret_file:
        code = totp_now(ctx.args.secret_file)
    elif ctx.args.code:
        code = ctx.args.code
    else:
        raise UsageError("give the current CODE from your authenticator app, or --secret-file FILE")
    resp = api(ctx).post("/v1/me/mfa/confirm", {"code": code})
    if ctx.as_json:
        print_data(ctx, resp)
    else:
        print("recovery codes (each works once):")
        for code in resp.get("recovery_codes", []):
            print(f"  {code}")
        print(SHOWN_ONCE_NOTE.format(what="each recovery code"), file=sys.stderr)
    return EXIT_OK


def add_account(cli: Commands) -> None:
    g = cli.noun("account", "Sign in and out, bootstrap, set a first password, who am I.")
    p = g.action("bootstrap", cmd_bootstrap, "With the bootstrap credential (--token): create the first admin.")
    p.add_argument("--username", required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--email", help="the first admin's address, for admin notices")
    p.add_argument("--second-admin", nargs=2, metavar=("USERNAME", "EMAIL"),
                   help="a second admin, invited too (admin grants wait for a second admin, whom a lone admin cannot make)")
    p = g.action("login", cmd_login, "Sign in; prints a session token once (use it as --token).", token=False)
    p.add_argument("--tenant", help="tenant name or id (not needed in enterprise deployments)")
    p.add_argument("--username", required=True)
    p.add_argument("--totp", help="current 6-digit TOTP code")
    p.add_argument("--totp-secret-file", metavar="FILE", help="compute the TOTP code from this secret file (scripts, the demo)")
    p.add_argument("--recovery-code", dest="recovery_code")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--print-session", action="store_true", help="also print the session token (for STRONGROOM_TOKEN)")
    p = g.action("setup", cmd_setup, "Set your first password with the one-time setup token.", token=False)
    p.add_argument("setup_token", nargs="?", help=argparse.SUPPRESS)  # kept for old scripts: argv is visible to others
    p.add_argument("--invitation", metavar="FILE", help="the invitation (.eml) or a file holding its setup token")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    g.action("logout", cmd_logout, "End this session.")
    g.action("whoami", cmd_whoami, "Show your user, roles and how you signed in.")
    p = g.action("password", cmd_password_change, "Change your password (current password and a TOTP code).")
    p.add_argument("--totp", help="current 6-digit TOTP code (required once MFA is enrolled)")
    p.add_argument("--password-stdin", action="store_true", help="read current and new password, one a line")


def add_mfa(cli: Commands) -> None:
    g = cli.noun("mfa", "Enrol in TOTP multi-factor authentication.")
    p = g.action("enrol", cmd_mfa_enrol, "Start enrolment: prints the TOTP secret and otpauth URI once.")
    p.add_argument("--secret-file", metavar="FILE", help="write the secret to this new 0600 file instead (scripts)")
    p = g.action("confirm", cmd_mfa_confirm, "Finish enrolment with a current code; prints recovery codes once.")
    p.add_argument("code", nargs="?")
    p.add_argument("--secret-file", metavar="FILE", help="compute the code from the secret `mfa enrol --secret-file` wrote")
    p = g.action("code", cmd_mfa_code, "Print the current TOTP code of a secret file (an authenticator for scripts).",
                 api=False, token=False)
    p.add_argument("--secret-file", metavar="FILE", required=True)


