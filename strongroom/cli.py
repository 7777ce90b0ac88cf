"""`strongroom`: the operator CLI over the gateway's HTTP API, plus the `dev` and `serve` launchers (in launch/)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.argtypes import non_negative_int as _non_negative_int
from shared.argtypes import positive_int as _positive_int
from strongroom import cli_accounts, cli_audit, cli_custody, cli_policy
from strongroom.client import ApiError, GatewayClient, GatewayUnreachable, quote_id

DEFAULT_URL = "http://127.0.0.1:8400"
AUDIT_PAGE_SIZE = 1000
SERVICES = ("gateway", "policysvc", "keysvc", "auditsvc")
ALGORITHMS = ("AES-128", "AES-192", "AES-256")
KEY_ACTIONS = ("activate", "suspend", "resume", "deactivate", "mark_compromised")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# SECURITY: credentials are printed only by the three commands that just created one (tenant,
# token, enrollment token), once. Everywhere else, fields with these names are masked, even in
# --json output, in case an API response ever echoes one back.
_CREDENTIAL_FIELDS = frozenset({"token", "admin_token", "bootstrap_token", "secret", "password",
                                "session_token", "setup_token", "recovery_codes"})
_REDACTED = "<redacted>"
_SHOWN_ONCE_NOTE = "note: {what} is shown once, store it now: it cannot be retrieved again."


class UsageError(Exception):
    """Wrong invocation or unreadable local input: exit 2."""


class CommandFailed(Exception):
    """A failure that is not an API error (bad audit export, stuck cursor): exit 1."""


@dataclass(frozen=True, slots=True)
class Ctx:
    args: argparse.Namespace
    api: GatewayClient | None
    as_json: bool


# ------------------------------------------------------------------ output


def redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: (_REDACTED if k in _CREDENTIAL_FIELDS and v is not None else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ",".join(str(v) for v in value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _dig(item: Mapping[str, Any], path: str) -> Any:
    value: Any = item
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


# A column is a header and either a dotted path into the item or a function of the item.
Column = tuple[str, str | Callable[[Mapping[str, Any]], Any]]


def _typed_id(field: str) -> Callable[[Mapping[str, Any]], str]:
    def get(item: Mapping[str, Any]) -> str:
        obj = item.get(field)
        if not isinstance(obj, Mapping):
            return _cell(obj)
        kind, ident = obj.get("kind") or obj.get("type"), obj.get("id")
        return f"{kind}:{ident}" if ident is not None else _cell(kind)
    return get


def table_lines(items: Sequence[Mapping[str, Any]], columns: Sequence[Column], *,
                max_width: int = 48) -> list[str]:
    """A compact aligned table; columns no item has a value for are dropped."""
    if not items:
        return ["(none)"]
    getters = [(h, (lambda it, p=g: _dig(it, p)) if isinstance(g, str) else g) for h, g in columns]
    getters = [(h, g) for h, g in getters if any(g(it) not in (None, "") for it in items)]
    if not getters:  # unfamiliar shape: fall back to the scalar fields, credentials excluded
        keys: list[str] = []
        for it in items:
            keys += [k for k, v in it.items() if k not in keys and k not in _CREDENTIAL_FIELDS
                     and not isinstance(v, (dict, list))]
        getters = [(k.upper(), (lambda it, k=k: it.get(k))) for k in keys[:8]]
    rows = [[h for h, _ in getters]]
    for it in items:
        cells = [_cell(g(it)) for _, g in getters]
        rows.append([c if len(c) <= max_width else c[: max_width - 1] + "…" for c in cells])
    widths = [max(len(r[i]) for r in rows) for i in range(len(getters))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def object_lines(obj: Mapping[str, Any], prefix: str = "") -> list[str]:
    """`key: value` lines; nested objects flatten to dotted keys, lists of objects to bullets."""
    lines: list[str] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            lines += object_lines(value, prefix=f"{name}.")
        elif isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
            lines.append(f"{name}:")
            for v in value:
                if isinstance(v, Mapping):
                    lines.append("  - " + ", ".join(f"{k}={_cell(x)}" for k, x in v.items()))
                else:
                    lines.append(f"  - {_cell(v)}")
        else:
            lines.append(f"{name}: {_cell(value)}")
    return lines


def _items(page: Any) -> list[Mapping[str, Any]]:
    if isinstance(page, Mapping):
        page = page.get("items", [])
    return [it for it in page or [] if isinstance(it, Mapping)]


def show_object(ctx: Ctx, data: Any) -> int:
    data = redact(data)
    if ctx.as_json:
        _print_json(data)
    elif isinstance(data, Mapping):
        print("\n".join(object_lines(data)))
    elif data is not None:
        print(_cell(data))
    return EXIT_OK


def show_list(ctx: Ctx, page: Any, columns: Sequence[Column]) -> int:
    page = redact(page)
    if ctx.as_json:
        _print_json(page)
        return EXIT_OK
    print("\n".join(table_lines(_items(page), columns)))
    nxt = page.get("next") if isinstance(page, Mapping) else None
    if nxt is not None:
        print(f"more: pass --after {nxt}", file=sys.stderr)
    return EXIT_OK


def show_message(ctx: Ctx, data: Any, message: str) -> int:
    if ctx.as_json:
        _print_json(redact(data) if data is not None else {"ok": True})
    else:
        print(message)
    return EXIT_OK


def show_new_credential(ctx: Ctx, data: Any, field: str, what: str) -> int:
    """The one place a credential is printed: right after the API created it."""
    if ctx.as_json:
        _print_json(data)
    elif isinstance(data, Mapping):
        rest = {k: v for k, v in data.items() if k != field}
        print("\n".join(object_lines(redact(rest))))
        if data.get(field) is not None:
            print(f"{field}: {data[field]}")
    if isinstance(data, Mapping) and data.get(field) is not None:
        print(_SHOWN_ONCE_NOTE.format(what=what), file=sys.stderr)
    return EXIT_OK


# ------------------------------------------------------------------ commands


def _require(ctx: Ctx) -> GatewayClient:
    assert ctx.api is not None
    return ctx.api


def cmd_health(ctx: Ctx) -> int:
    return show_object(ctx, _require(ctx).get("/v1/health", auth=False))


def cmd_tenant_create(ctx: Ctx) -> int:
    body: dict[str, Any] = {"name": ctx.args.name}
    if ctx.args.admin_username:
        body["admin_username"] = ctx.args.admin_username
    resp = _require(ctx).post("/v1/tenants", body)
    return show_new_credential(ctx, resp, "setup_token", "the first admin's one-time setup token")


def cmd_token_create(ctx: Ctx) -> int:
    body: dict[str, Any] = {"name": ctx.args.name}
    if ctx.args.scopes:
        body["scopes"] = ctx.args.scopes
    if ctx.args.service_account:
        body["service_account_id"] = ctx.args.service_account
    if ctx.args.expires_in is not None:
        body["expires_in_seconds"] = ctx.args.expires_in
    resp = _require(ctx).post("/v1/tokens", body)
    return show_new_credential(ctx, resp, "token", "the API token")


TOKEN_COLUMNS: list[Column] = [
    ("ID", "token_id"), ("NAME", "name"), ("USER", "user_id"), ("SCOPES", "scopes"), ("CREATED", "created_at"),
    ("EXPIRES", "expires_at"), ("REVOKED", lambda it: it.get("revoked_at") or it.get("revoked")),
]


def cmd_token_list(ctx: Ctx) -> int:
    return show_list(ctx, _require(ctx).get("/v1/tokens"), TOKEN_COLUMNS)


def cmd_token_revoke(ctx: Ctx) -> int:
    resp = _require(ctx).delete(f"/v1/tokens/{quote_id(ctx.args.id)}")
    return show_message(ctx, resp, f"revoked token {ctx.args.id}")


def cmd_enroll_token_create(ctx: Ctx) -> int:
    body: dict[str, Any] = {}
    if ctx.args.name is not None:
        body["name"] = ctx.args.name
    if ctx.args.ttl is not None:
        body["ttl_seconds"] = ctx.args.ttl
    if ctx.args.groups:
        body["groups"] = ctx.args.groups
    resp = _require(ctx).post("/v1/enrollment-tokens", body)
    return show_new_credential(ctx, resp, "token", "the enrollment token")


DEVICE_COLUMNS: list[Column] = [
    ("ID", "device_id"), ("NAME", "name"), ("HOSTNAME", "hostname"), ("STATE", "state"),
    ("STATUS", "status"), ("GROUPS", "groups"), ("ENROLLED", "enrolled_at"),
    ("LAST SEEN", "last_seen_at"),
]


def cmd_device_list(ctx: Ctx) -> int:
    return show_list(ctx, _require(ctx).get("/v1/devices"), DEVICE_COLUMNS)


def cmd_device_show(ctx: Ctx) -> int:
    return show_object(ctx, _require(ctx).get(f"/v1/devices/{quote_id(ctx.args.id)}"))


def cmd_device_revoke(ctx: Ctx) -> int:
    resp = _require(ctx).post(f"/v1/devices/{quote_id(ctx.args.id)}/revoke",
                              {"reason": ctx.args.reason})
    return show_message(ctx, resp, f"revoked device {ctx.args.id}")


KEY_COLUMNS: list[Column] = [
    ("ID", "key_id"), ("NAME", "name"), ("ALGORITHM", "algorithm"), ("STATE", "state"),
    ("LATEST", "latest_version"), ("VOLUME", "volume"), ("EXPORTABLE", "exportable"),
]


def cmd_key_create(ctx: Ctx) -> int:
    a = ctx.args
    body: dict[str, Any] = {"name": a.name, "algorithm": a.algorithm, "exportable": a.exportable,
                            "activate": not a.inactive}
    if a.volume is not None:
        body["volume"] = a.volume
    if a.rotation_period is not None:
        body["rotation_period_seconds"] = a.rotation_period
    return show_object(ctx, _require(ctx).post("/v1/keys", body))


def cmd_key_list(ctx: Ctx) -> int:
    page = _require(ctx).get("/v1/keys", query={"limit": ctx.args.limit, "after": ctx.args.after})
    return show_list(ctx, page, KEY_COLUMNS)


def cmd_key_show(ctx: Ctx) -> int:
    return show_object(ctx, _require(ctx).get(f"/v1/keys/{quote_id(ctx.args.id)}"))


def cmd_key_rotate(ctx: Ctx) -> int:
    body = {} if ctx.args.reason is None else {"reason": ctx.args.reason}
    return show_object(ctx, _require(ctx).post(f"/v1/keys/{quote_id(ctx.args.id)}/rotate", body))


def cmd_key_state(ctx: Ctx) -> int:
    body = {"action": ctx.args.action, "reason": ctx.args.reason}
    return show_object(ctx, _require(ctx).post(f"/v1/keys/{quote_id(ctx.args.id)}/state", body))


POLICY_COLUMNS: list[Column] = [
    ("ID", "policy_id"), ("NAME", "name"), ("VERSION", "version"), ("EFFECT", "effect"),
    ("UPDATED", "updated_at"), ("CREATED", "created_at"),
]


def _read_json_file(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None


def cmd_policy_put(ctx: Ctx) -> int:
    document = _read_json_file(ctx.args.file)
    if not isinstance(document, dict):
        raise UsageError(f"{ctx.args.file} must hold a JSON object")
    api = _require(ctx)
    if ctx.args.id is None:
        resp = api.post("/v1/policies", document)
    else:
        resp = api.put(f"/v1/policies/{quote_id(ctx.args.id)}", document)
    return show_object(ctx, resp)


def cmd_policy_list(ctx: Ctx) -> int:
    return show_list(ctx, _require(ctx).get("/v1/policies"), POLICY_COLUMNS)


def cmd_policy_show(ctx: Ctx) -> int:
    return show_object(ctx, _require(ctx).get(f"/v1/policies/{quote_id(ctx.args.id)}"))


def cmd_policy_delete(ctx: Ctx) -> int:
    resp = _require(ctx).delete(f"/v1/policies/{quote_id(ctx.args.id)}")
    return show_message(ctx, resp, f"deleted policy {ctx.args.id}")


AUDIT_COLUMNS: list[Column] = [
    ("SEQ", "seq"), ("TIME", "time"), ("ACTION", "action"), ("ACTOR", _typed_id("actor")),
    ("RESOURCE", _typed_id("resource")), ("OUTCOME", "outcome"),
]


def cmd_audit_list(ctx: Ctx) -> int:
    a = ctx.args
    query = {"action": a.action, "actor": a.actor, "resource": a.resource, "outcome": a.outcome,
             "since": a.since, "until": a.until, "limit": a.limit, "after": a.after}
    return show_list(ctx, _require(ctx).get("/v1/audit", query=query), AUDIT_COLUMNS)


def _fetch_all_audit(api: GatewayClient) -> Iterator[Mapping[str, Any]]:
    after = 0
    while True:
        page = api.get("/v1/audit", query={"after": after, "limit": AUDIT_PAGE_SIZE})
        yield from _items(page)
        nxt = page.get("next") if isinstance(page, Mapping) else None
        if nxt is None:
            return
        # A cursor that does not move forward would loop forever (or silently re-read records).
        if isinstance(nxt, bool) or not isinstance(nxt, int) or nxt <= after:
            raise CommandFailed(f"the gateway's audit cursor did not advance (after={after}, "
                                f"next={nxt!r}); cannot read the whole chain")
        after = nxt


def _read_jsonl(path: str) -> list[Mapping[str, Any]]:
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    records: list[Mapping[str, Any]] = []
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise CommandFailed(f"{path} line {number} is not JSON: {exc}") from None
            if not isinstance(record, dict):
                raise CommandFailed(f"{path} line {number} is not a JSON object")
            records.append(record)
    return records


def cmd_audit_verify(ctx: Ctx) -> int:
    return cli_audit.verify(ctx)  # chain, signed checkpoints and archives (audit area)


def _report_verify(ctx: Ctx, *, ok: bool, checked: int, seq: Any, event_id: Any, problem: str,
                   tenant: str | None = None, head_seq: int | None = None,
                   head_hash: str | None = None) -> int:
    if ctx.as_json:
        _print_json({"ok": ok, "tenant_id": tenant, "checked": checked,
                     "head": {"seq": head_seq, "hash": head_hash} if ok else None,
                     "first_bad_seq": None if ok else seq,
                     "first_bad_event_id": None if ok else event_id,
                     "problem": None if ok else problem})
    elif ok and checked == 0:
        print("chain ok: 0 records (nothing to verify)")
    elif ok:
        print(f"chain ok: {checked} records, head seq {head_seq} hash {head_hash}")
    else:
        where = "?" if seq is None else seq
        event = "?" if event_id is None else event_id
        print(f"chain BROKEN at seq {where} (event {event}): {problem}")
    return EXIT_OK if ok else EXIT_FAILED


def cmd_dev(ctx: Ctx) -> int:
    from launch.dev import run_dev  # the launchers compose the services: imported only to run them

    run_dev(port=ctx.args.port, data_dir=ctx.args.data_dir)
    return EXIT_OK


def cmd_serve(ctx: Ctx) -> int:
    from launch.serve import run_service

    run_service(ctx.args.service)
    return EXIT_OK


# ------------------------------------------------------------------ parser






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

    def leaf(group: Any, name: str, func: Callable[[Ctx], int], help_: str, *,
             api: bool = True, token: bool = True) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=help_, description=help_, parents=[common])
        sub.set_defaults(func=func, needs_api=api, needs_token=token)
        return sub

    def noun(name: str, help_: str) -> Any:
        sub = top.add_parser(name, help=help_, description=help_)
        group = sub.add_subparsers(dest="action_name", metavar="ACTION")
        group.required = True
        return group

    leaf(top, "health", cmd_health, "Show the gateway's health.", token=False)

    p = leaf(top, "dev", cmd_dev, "Run every service in one process for development.", api=False,
             token=False)
    p.add_argument("--port", type=_positive_int, default=8400, help="gateway port (default 8400)")
    p.add_argument("--data-dir", help="where dev state is kept")

    p = leaf(top, "serve", cmd_serve, "Run one service.", api=False, token=False)
    p.add_argument("service", choices=SERVICES)

    g = noun("tenant", "Manage tenants (needs the provider credential as --token).")
    p = leaf(g, "create", cmd_tenant_create, "Create a tenant and its first admin; prints their one-time setup token.")
    p.add_argument("name")
    p.add_argument("--admin-username", help="the first admin's username (default admin)")

    g = noun("token", "Manage API tokens.")
    p = leaf(g, "create", cmd_token_create, "Create an API token; prints it once.")
    p.add_argument("--name", required=True)
    p.add_argument("--scope", dest="scopes", action="append",
                   help="a permission the token may use (repeat for more; default: all of yours)")
    p.add_argument("--service-account", metavar="USER_ID", help="tenant admin: a token for this service account")
    p.add_argument("--expires-in", type=_positive_int, metavar="SECONDS")
    leaf(g, "list", cmd_token_list, "List API tokens.")
    p = leaf(g, "revoke", cmd_token_revoke, "Revoke an API token.")
    p.add_argument("id")

    g = noun("enroll-token", "Manage device enrollment tokens.")
    p = leaf(g, "create", cmd_enroll_token_create, "Create an enrollment token; prints it once.")
    p.add_argument("--name")
    p.add_argument("--ttl", type=_positive_int, metavar="SECONDS")
    p.add_argument("--group", dest="groups", action="append", help="device group (repeatable)")

    g = noun("device", "Inspect and revoke enrolled devices.")
    leaf(g, "list", cmd_device_list, "List devices.")
    p = leaf(g, "show", cmd_device_show, "Show one device.")
    p.add_argument("id")
    p = leaf(g, "revoke", cmd_device_revoke, "Revoke a device.")
    p.add_argument("id")
    p.add_argument("--reason", required=True)

    g = noun("key", "Manage volume keys.")
    p = leaf(g, "create", cmd_key_create, "Create a key.")
    p.add_argument("name")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="AES-256")
    p.add_argument("--volume")
    p.add_argument("--exportable", action="store_true")
    p.add_argument("--rotation-period", type=_positive_int, metavar="SECONDS")
    p.add_argument("--inactive", action="store_true", help="create without activating")
    p = leaf(g, "list", cmd_key_list, "List keys.")
    p.add_argument("--limit", type=_positive_int)
    p.add_argument("--after", help="cursor from the previous page")
    p = leaf(g, "show", cmd_key_show, "Show one key and its versions.")
    p.add_argument("id")
    p = leaf(g, "rotate", cmd_key_rotate, "Rotate a key to a new version.")
    p.add_argument("id")
    p.add_argument("--reason")
    p = leaf(g, "state", cmd_key_state, "Change a key's state.")
    p.add_argument("id")
    p.add_argument("action", choices=KEY_ACTIONS)
    p.add_argument("--reason", required=True)

    g = noun("policy", "Manage key-release policies.")
    p = leaf(g, "put", cmd_policy_put, "Create a policy, or with --id add a new version of it.")
    p.add_argument("file", metavar="FILE.json")
    p.add_argument("--id", help="existing policy to version")
    leaf(g, "list", cmd_policy_list, "List policies.")
    p = leaf(g, "show", cmd_policy_show, "Show one policy.")
    p.add_argument("id")
    p = leaf(g, "delete", cmd_policy_delete, "Delete a policy.")
    p.add_argument("id")
    cli_policy.add_policy_actions(leaf, g)

    g = noun("audit", "Read and verify the tenant's audit chain.")
    p = leaf(g, "list", cmd_audit_list, "List audit records.")
    for flag in ("--action", "--actor", "--resource", "--outcome", "--since", "--until"):
        p.add_argument(flag)
    p.add_argument("--limit", type=_positive_int)
    p.add_argument("--after", type=_non_negative_int, help="cursor: the previous page's next")
    p = leaf(g, "verify", cmd_audit_verify, "Verify the whole hash chain locally.")
    p.add_argument("--from-file", metavar="FILE", help="verify a records export (.jsonl) or an archive instead")
    p.add_argument("--trusted-key", metavar="PEM", help="the audit signing public key checkpoints must match")
    cli_audit.add_audit_actions(leaf, g)

    # Each capability area registers its own commands from its own module.
    for area in (cli_accounts, cli_policy, cli_custody, cli_audit):
        area.register(leaf, noun)
    return parser


def _add_globals(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None) -> None:
    top = environ is not None
    parser.add_argument(
        "--url", default=(environ.get("STRONGROOM_URL") or DEFAULT_URL) if top else argparse.SUPPRESS,
        help="gateway URL (env STRONGROOM_URL, default %s)" % DEFAULT_URL)
    parser.add_argument(
        "--token", default=environ.get("STRONGROOM_TOKEN") if top else argparse.SUPPRESS,
        help="bearer token (env STRONGROOM_TOKEN; prefer the env var, argv is visible to others)")
    parser.add_argument("--json", action="store_true",
                        default=False if top else argparse.SUPPRESS, help="print raw JSON")


def _is_loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _api_error_text(exc: ApiError) -> str:
    text = f"{exc.status} {exc.title}"
    if exc.detail:
        text += f": {exc.detail}"
    if exc.field:
        text += f" (field: {exc.field})"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(os.environ)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage or help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    api = None
    try:
        if args.needs_api:
            if args.needs_token and not args.token:
                raise UsageError("no token: set STRONGROOM_TOKEN or pass --token")
            try:
                api = GatewayClient(args.url, args.token if args.needs_token else None)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            parts = urllib.parse.urlsplit(args.url)
            if api.has_token and parts.scheme == "http" and not _is_loopback(parts.hostname):
                print(f"warning: sending a bearer token over plain HTTP to {parts.hostname}",
                      file=sys.stderr)
        return args.func(Ctx(args=args, api=api, as_json=args.json))
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except ApiError as exc:
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
