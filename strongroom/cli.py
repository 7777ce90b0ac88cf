# PYTHON_ARGCOMPLETE_OK
"""`strongroom`: the operator CLI over the gateway's HTTP API, plus the `dev` and `serve` launchers.

The command modules (`cli_*`) register their nouns; this module lists them, parses and runs one.
It is the only module that names the launchers, and imports them only for `dev` and `serve`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

import argcomplete

from shared.problem_types import MFA_REQUIRED
from strongroom import cli_accounts, cli_audit, cli_changes, cli_custody, cli_keys, cli_policy, cli_signin, cli_volumes, profiles
from strongroom.cli_common import (
    DEFAULT_URL,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    OUTPUTS,
    CommandFailed,
    Commands,
    Ctx,
    UsageError,
    api,
    non_negative_int,
    open_client,
    positive_int,
    show_object,
)
from strongroom.client import ApiError, GatewayUnreachable

SERVICES = ("gateway", "policysvc", "keysvc", "auditsvc")

# Every noun, in the order `strongroom --help` lists them.
NOUNS = (
    cli_accounts.add_tenant, cli_accounts.add_token, cli_accounts.add_enroll_token,
    cli_keys.add_device, cli_keys.add_key, cli_policy.add_policy, cli_audit.add_audit,
    cli_signin.add_account, cli_signin.add_mfa, cli_accounts.add_user, cli_accounts.add_settings,
    cli_accounts.add_tenants, cli_changes.add_changes,
    cli_policy.add_approval, cli_policy.add_group, cli_policy.add_decision, cli_policy.add_events,
    cli_custody.add_operator, cli_custody.add_custody, cli_custody.add_byok, cli_custody.add_key_version,
    cli_custody.add_destruction,
    cli_audit.add_report, cli_volumes.add_volume,
)


def cmd_health(ctx: Ctx) -> int:
    if ctx.args.service:  # this host's running service, from its heartbeat file (a container's liveness check)
        from launch.operate import service_health

        return service_health(ctx.args.service, max_age=ctx.args.max_age)
    return show_object(ctx, api(ctx).get("/v1/health", auth=False))


def cmd_config_docs(ctx: Ctx) -> int:
    from launch.operate import config_docs

    return config_docs()


def cmd_keys_init(ctx: Ctx) -> int:
    from launch.operate import keys_init

    return keys_init(ctx.args.directory, uid=ctx.args.uid, gid=ctx.args.gid)


def cmd_admin_teardown(ctx: Ctx) -> int:
    from launch.operate import teardown

    return teardown(ctx.args.prefix, yes=ctx.args.yes, amqp_url=ctx.args.amqp_url)


def cmd_dev(ctx: Ctx) -> int:
    from launch.dev import run_dev  # the launchers compose the services: imported only to run them

    run_dev(port=ctx.args.port, data_dir=ctx.args.data_dir, demo=ctx.args.demo)
    return EXIT_OK


def cmd_serve(ctx: Ctx) -> int:
    from launch.serve import run_service

    run_service(ctx.args.service)
    return EXIT_OK


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strongroom",
        description="Operate a Strongroom gateway: tenants, tokens, devices, keys, policies, audit.")
    _add_globals(parser, environ)
    # The same options after the subcommand too; SUPPRESS keeps them from overwriting the top level.
    common = argparse.ArgumentParser(add_help=False)
    _add_globals(common, None)
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    top.required = True
    cli = Commands(top, common)

    p = cli.command("health", cmd_health, "Show the gateway's health (or, with --service, a service's on this host).",
                    token=False)
    p.add_argument("--service", choices=SERVICES,
                   help="check the heartbeat `strongroom serve SERVICE` keeps on this host instead (exit 1 if stale)")
    p.add_argument("--max-age", type=positive_int, default=30, metavar="SECONDS",
                   help="with --service: the oldest heartbeat that counts as alive (default 30)")
    p = cli.command("dev", cmd_dev, "Run every service in one process for development.", api=False, token=False)
    p.add_argument("--port", type=positive_int, default=positive_int(environ.get("STRONGROOM_DEV_PORT") or "8400"),
                   help="gateway port (env STRONGROOM_DEV_PORT, default 8400)")
    p.add_argument("--data-dir", help="where dev state is kept")
    p.add_argument("--demo", action="store_true",
                   help="prepare a demo tenant (one person per role, a key, a policy, an enrollment token) "
                        "and the settings to use it in <data dir>/demo.env")
    p = cli.command("serve", cmd_serve, "Run one service.", api=False, token=False)
    p.add_argument("service", choices=SERVICES)
    _add_deployment_commands(cli)
    for add in NOUNS:
        add(cli)
    return parser


def _add_deployment_commands(cli: Commands) -> None:
    """Commands on a deployment's own files and broker, not through the gateway."""
    noun = cli.noun("config", "The services' settings.")
    noun.action("docs", cmd_config_docs, "Print every setting's variables, default and meaning (docs/configuration.md).",
                api=False, token=False)
    noun = cli.noun("keys", "A deployment's key files.")
    p = noun.action("init", cmd_keys_init, "Create every key file a deployment needs in DIR (mode 0400), "
                    "keysvc's root key sealed under a random passphrase.", api=False, token=False)
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--uid", type=non_negative_int, help="owner of the files (e.g. the container's user, 10001)")
    p.add_argument("--gid", type=non_negative_int, help="group of the files")
    noun = cli.noun("admin", "Broker-level administration of a deployment.")
    p = noun.action("teardown", cmd_admin_teardown, "Delete a deployment's queues and exchanges (their messages too).",
                    api=False, token=False)
    p.add_argument("--prefix", required=True, help="the deployment's STRONGROOM_BUS_PREFIX, e.g. strongroom.")
    p.add_argument("--yes", action="store_true", help="delete; without it, only list what would be deleted")
    p.add_argument("--amqp-url", help="the broker (default: STRONGROOM_AMQP_URL)")


def _add_globals(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None) -> None:
    top = environ is not None
    parser.add_argument(
        "--url", default=(environ.get("STRONGROOM_URL") or None) if top else argparse.SUPPRESS,
        help=f"gateway URL (env STRONGROOM_URL, else the profile's, else {DEFAULT_URL})")
    parser.add_argument(
        "--token", default=environ.get("STRONGROOM_TOKEN") if top else argparse.SUPPRESS,
        help="bearer token (env STRONGROOM_TOKEN, else the profile's; prefer either to argv, which others can see)")
    parser.add_argument(
        "--profile", default=(environ.get(profiles.ENV_PROFILE) or profiles.DEFAULT_PROFILE) if top else argparse.SUPPRESS,
        help="where `account login` keeps the session and the URL (env STRONGROOM_PROFILE, default default)")
    parser.add_argument("--output", choices=OUTPUTS, default="table" if top else argparse.SUPPRESS,
                        help="output format of list and show commands (default table)")
    parser.add_argument("--get", default=None if top else argparse.SUPPRESS, metavar="FIELD",
                        help="print only this field of the answer (dotted path), e.g. --get key_id")
    parser.add_argument("--json", action="store_true",
                        default=False if top else argparse.SUPPRESS, help="print raw JSON (--output json)")
    parser.add_argument("--change", default=None if top else argparse.SUPPRESS, metavar="ID",
                        help="small-team mode: carry out the change a second person confirmed (the same command again)")
    parser.add_argument("--wait", type=non_negative_int, default=0 if top else argparse.SUPPRESS, metavar="SECONDS",
                        help="small-team mode: wait this long for a second person to confirm a change, then carry it out")


def _with_profile(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Fills in the URL and token from the profile where neither argv nor the environment gave them."""
    stored = profiles.load(environ, args.profile) if args.needs_api else {}
    args.url = args.url or stored.get("url") or DEFAULT_URL
    if not args.token and args.needs_token:
        args.token = stored.get("token")
        args.token_source = f"profile {args.profile}" if args.token else None


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _api_error_text(exc: ApiError) -> str:
    if exc.type == MFA_REQUIRED:
        return (f"enrol MFA first: strongroom mfa enrol (then strongroom mfa confirm CODE), or sign in again "
                f"with --totp CODE ({exc.status} {exc.title})")
    text = f"{exc.status} {exc.title}"
    if exc.detail:
        text += f": {exc.detail}"
    if exc.field:
        text += f" (field: {exc.field})"
    return text


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    argcomplete.autocomplete(parser)  # answers the shell's completion request, if this is one
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage or help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        _with_profile(args, environ)
        output = "json" if args.json else args.output
        ctx = Ctx(args=args, api=open_client(args), output=output, environ=environ)
        try:
            return args.func(ctx)
        except ApiError as exc:
            if not (exc.change_id and args.wait):
                raise
            # Small-team mode: wait for the second person's confirmation, then run the command again.
            print(f"waiting up to {args.wait} s for a second person to confirm change {exc.change_id} "
                  f"(`strongroom changes confirm {exc.change_id}`)", file=sys.stderr)
            if not cli_changes.wait_for_confirmation(api(ctx), exc.change_id, seconds=args.wait):
                raise
            api(ctx).change_id = exc.change_id
            return args.func(ctx)
    except (UsageError, profiles.ProfileError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except ApiError as exc:
        if exc.change_id:
            _error(cli_changes.waiting_text(exc.change_id, exc.change_digest))
            return EXIT_FAILED
        _error(_api_error_text(exc))
        return EXIT_FAILED
    except GatewayUnreachable as exc:
        hint = ""
        if exc.reason == "connection refused":
            hint = " (is the gateway running? start one with `strongroom dev`, or set --url / STRONGROOM_URL)"
        _error(f"cannot reach the gateway at {exc.url}: {exc.reason}{hint}")
        return EXIT_FAILED
    except CommandFailed as exc:
        _error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
