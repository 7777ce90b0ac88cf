"""What every `strongroom` command module shares: context, errors, output, prompts, argument types, the client."""

from __future__ import annotations

import argparse
import getpass
import io
import ipaddress
import json
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.argtypes import non_negative_int as non_negative_int  # argument types, offered with the rest
from shared.argtypes import positive_int as positive_int
from strongroom.client import GatewayClient

DEFAULT_URL = "http://127.0.0.1:8400"
PAGE_SIZE = 1000
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# SECURITY: credentials are printed only by the commands that just created one (tenant, token,
# enrollment token, session, TOTP secret, forwarder secret), once. Everywhere else, fields with
# these names are masked, even in --json output, in case an API response ever echoes one back.
_CREDENTIAL_FIELDS = frozenset({"token", "admin_token", "bootstrap_token", "secret", "password",
                                "session_token", "setup_token", "recovery_codes"})
_REDACTED = "<redacted>"
SHOWN_ONCE_NOTE = "note: {what} is shown once, store it now: it cannot be retrieved again."


class UsageError(Exception):
    """Wrong invocation or unreadable local input: exit 2."""


class CommandFailed(Exception):
    """A failure that is not an API error (bad audit export, stuck cursor): exit 1."""


OUTPUTS = ("table", "json", "yaml")


@dataclass(frozen=True, slots=True)
class Ctx:
    args: argparse.Namespace
    api: GatewayClient | None
    output: str = "table"  # one of OUTPUTS
    environ: Mapping[str, str] = field(default_factory=dict)

    @property
    def as_json(self) -> bool:
        """Machine-readable output (JSON or YAML) rather than tables and `key: value` lines."""
        return self.output != "table"


def api(ctx: Ctx) -> GatewayClient:
    """The gateway client of a command declared with `api=True` (the default)."""
    assert ctx.api is not None
    return ctx.api


# ------------------------------------------------------------------ the parser


@dataclass(frozen=True)
class Noun:
    """A command noun (`key`, `user`, ...): its actions are subcommands."""

    group: Any  # argparse's subparsers action
    common: argparse.ArgumentParser

    def action(self, name: str, func: Callable[[Ctx], int], help_: str, *,
               api: bool = True, token: bool = True) -> argparse.ArgumentParser:
        sub = self.group.add_parser(name, help=help_, description=help_, parents=[self.common])
        sub.set_defaults(func=func, needs_api=api, needs_token=token)
        return sub


@dataclass(frozen=True)
class Commands:
    """What the area modules register their commands into: nouns and top-level commands."""

    top: Any  # the top-level subparsers action
    common: argparse.ArgumentParser  # options accepted after the subcommand too

    def noun(self, name: str, help_: str) -> Noun:
        sub = self.top.add_parser(name, help=help_, description=help_)
        group = sub.add_subparsers(dest="action_name", metavar="ACTION")
        group.required = True
        return Noun(group, self.common)

    def command(self, name: str, func: Callable[[Ctx], int], help_: str, *,
                api: bool = True, token: bool = True) -> argparse.ArgumentParser:
        return Noun(self.top, self.common).action(name, func, help_, api=api, token=token)


# ------------------------------------------------------------------ output


def redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: (_REDACTED if k in _CREDENTIAL_FIELDS and v is not None else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def print_data(ctx: Ctx, data: Any) -> None:
    """Machine-readable output in the format `--output` chose (JSON unless YAML was asked for)."""
    if ctx.output == "yaml":
        import yaml  # imported when used: every command pays for the CLI's start-up

        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n"))
    else:
        print_json(data)


def cell(value: Any) -> str:
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


def typed_id(field: str) -> Callable[[Mapping[str, Any]], str]:
    """A column showing a `{kind, id}` object as `kind:id`."""
    def get(item: Mapping[str, Any]) -> str:
        obj = item.get(field)
        if not isinstance(obj, Mapping):
            return cell(obj)
        kind, ident = obj.get("kind") or obj.get("type"), obj.get("id")
        return f"{kind}:{ident}" if ident is not None else cell(kind)
    return get


def table_rows(items: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of a table; columns no item has a value for are dropped."""
    getters = [(h, (lambda it, p=g: _dig(it, p)) if isinstance(g, str) else g) for h, g in columns]
    getters = [(h, g) for h, g in getters if any(g(it) not in (None, "") for it in items)]
    if not getters:  # unfamiliar shape: fall back to the scalar fields, credentials excluded
        keys: list[str] = []
        for it in items:
            keys += [k for k, v in it.items() if k not in keys and k not in _CREDENTIAL_FIELDS
                     and not isinstance(v, (dict, list))]
        getters = [(k.upper(), (lambda it, k=k: it.get(k))) for k in keys[:8]]
    return [h for h, _ in getters], [[cell(g(it)) for _, g in getters] for it in items]


def print_table(items: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, max_width: int = 48) -> None:
    """A table drawn by rich: plain aligned columns, long cells cut with an ellipsis."""
    if not items:
        print("(none)")
        return
    from rich.console import Console  # imported when used: every command pays for the CLI's start-up
    from rich.table import Table

    headers, rows = table_rows(items, columns)
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, max_width=max_width, overflow="ellipsis", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    # Off a terminal (a pipe, a test) nothing is wrapped to 80 columns: every line stays whole.
    tty = sys.stdout.isatty()
    buffer = io.StringIO()
    Console(file=buffer, width=None if tty else 100_000, force_terminal=tty, markup=False, highlight=False,
            emoji=False).print(table)
    print("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()))


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
                    lines.append("  - " + ", ".join(f"{k}={cell(x)}" for k, x in v.items()))
                else:
                    lines.append(f"  - {cell(v)}")
        else:
            lines.append(f"{name}: {cell(value)}")
    return lines


def items(page: Any) -> list[Mapping[str, Any]]:
    """The objects of a page (`{"items": [...]}`) or of a plain list."""
    if isinstance(page, Mapping):
        page = page.get("items", [])
    return [it for it in page or [] if isinstance(it, Mapping)]


def show_field(ctx: Ctx, data: Any) -> bool:
    """`--get FIELD`: only that field of the answer, raw (for `$(...)` in scripts). False if not asked."""
    path = getattr(ctx.args, "get", None)
    if not path:
        return False
    value = _dig(data, path) if isinstance(data, Mapping) else None
    if value is None:
        raise CommandFailed(f"--get {path}: the answer has no such field")
    print(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return True


def show_object(ctx: Ctx, data: Any) -> int:
    data = redact(data)
    if show_field(ctx, data):
        return EXIT_OK
    if ctx.as_json:
        print_data(ctx, data)
    elif isinstance(data, Mapping):
        print("\n".join(object_lines(data)))
    elif data is not None:
        print(cell(data))
    return EXIT_OK


def show_list(ctx: Ctx, page: Any, columns: Sequence[Column]) -> int:
    page = redact(page)
    if ctx.as_json:
        print_data(ctx, page)
        return EXIT_OK
    print_table(items(page), columns)
    nxt = page.get("next") if isinstance(page, Mapping) else None
    if nxt is not None:
        print(f"more: pass --after {nxt}", file=sys.stderr)
    return EXIT_OK


def show_message(ctx: Ctx, data: Any, message: str) -> int:
    if show_field(ctx, redact(data)):
        return EXIT_OK
    if ctx.as_json:
        print_data(ctx, redact(data) if data is not None else {"ok": True})
    else:
        print(message)
    return EXIT_OK


def show_new_credential(ctx: Ctx, data: Any, field: str, what: str) -> int:
    """The one place a credential is printed: right after the API created it."""
    if show_field(ctx, data):  # `--get token` prints the credential itself, as this is its one showing
        return EXIT_OK
    if ctx.as_json:
        print_data(ctx, data)
    elif isinstance(data, Mapping):
        rest = {k: v for k, v in data.items() if k != field}
        print("\n".join(object_lines(redact(rest))))
        if data.get(field) is not None:
            print(f"{field}: {data[field]}")
    if isinstance(data, Mapping) and data.get(field) is not None:
        print(SHOWN_ONCE_NOTE.format(what=what), file=sys.stderr)
    return EXIT_OK


# ------------------------------------------------------------------ reading


def pages(client: GatewayClient, path: str, query: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
    """Every item of a cursor-paged listing, page after page."""
    after = 0
    while True:
        page = client.get(path, query={**(query or {}), "after": after, "limit": PAGE_SIZE})
        yield from items(page)
        nxt = page.get("next") if isinstance(page, Mapping) else None
        if nxt is None:
            return
        # A cursor that does not move forward would loop forever (or silently re-read items).
        if isinstance(nxt, bool) or not isinstance(nxt, int) or nxt <= after:
            raise CommandFailed(f"the gateway's cursor did not advance on {path} (after={after}, next={nxt!r})")
        after = nxt


def read_json_object(path: str) -> dict[str, Any]:
    """A local JSON file that must hold one object (a policy, a group)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path} must hold a JSON object")
    return document


def read_jsonl(path: str) -> list[Mapping[str, Any]]:
    """A local JSON-lines file of objects (an audit records export)."""
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


# ------------------------------------------------------------------ prompts
# SECURITY: secrets (passwords, unseal shares) are never taken from argv, where shell history and
# `ps` would keep them: from a prompt without echo, from standard input, or from a file.


def stdin_line() -> str:
    return sys.stdin.readline().rstrip("\n")


def hidden(prompt: str) -> str:
    return getpass.getpass(prompt)


def read_password(ctx: Ctx) -> str:
    """From standard input (first line) with --password-stdin, else prompted without echo."""
    return stdin_line() if ctx.args.password_stdin else hidden("password: ")


def read_share(ctx: Ctx) -> str:
    """An unseal share: from --share-file, else a prompt without echo, else (piped) standard input."""
    if getattr(ctx.args, "share_file", None):
        return Path(ctx.args.share_file).read_text(encoding="utf-8").strip()
    if sys.stdin.isatty():
        return hidden("unseal share (input hidden): ").strip()
    return sys.stdin.readline().strip()


# ------------------------------------------------------------------ the client


def _is_loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_client(args: argparse.Namespace) -> GatewayClient | None:
    """The gateway client a command needs (None for local commands); refuses a missing token."""
    if not args.needs_api:
        return None
    if args.needs_token and not args.token:
        raise UsageError(f"not signed in: run `strongroom account login` (it keeps the session in profile "
                         f"{args.profile}), or set STRONGROOM_TOKEN")
    try:
        client = GatewayClient(args.url, args.token if args.needs_token else None,
                               change_id=getattr(args, "change", None))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    parts = urllib.parse.urlsplit(args.url)
    if client.has_token and parts.scheme == "http" and not _is_loopback(parts.hostname):
        print(f"warning: sending a bearer token over plain HTTP to {parts.hostname}", file=sys.stderr)
    return client
