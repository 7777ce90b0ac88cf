"""Operator commands of the audit area, registered into `strongroom`'s parser by `register`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

PAGE = 1000


def _cli():  # the core CLI module, imported late: it imports this one
    from strongroom import cli

    return cli


def _pages(api: Any, path: str, query: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
    cli = _cli()
    after = 0
    while True:
        page = api.get(path, query={**(query or {}), "after": after, "limit": PAGE})
        yield from cli._items(page)
        nxt = page.get("next") if isinstance(page, Mapping) else None
        if nxt is None:
            return
        if isinstance(nxt, bool) or not isinstance(nxt, int) or nxt <= after:
            raise cli.CommandFailed(f"the gateway's cursor did not advance on {path} (after={after}, next={nxt!r})")
        after = nxt


def _optional(api: Any, path: str) -> Any:
    """A route an older gateway lacks: 404 means "nothing there", said once on stderr."""
    from strongroom.client import ApiError

    try:
        return api.get(path)
    except ApiError as exc:
        if exc.status != 404:
            raise
        print(f"note: the gateway has no {path}; signed checkpoints not checked", file=sys.stderr)
        return None


def _trusted_keys(ctx: Any, offered: list[Mapping[str, Any]]) -> list[Any]:
    """The keys checkpoints must be signed with: --trusted-key if given, else what the API offers."""
    from shared.signatures import key_fingerprint
    from shared.signatures import load_public_pem

    cli = _cli()
    path = getattr(ctx.args, "trusted_key", None)
    if path:
        try:
            return [load_public_pem(Path(path).read_bytes())]
        except (OSError, ValueError) as exc:
            raise cli.UsageError(f"--trusted-key {path}: {exc}") from None
    keys = []
    for item in offered:
        try:
            keys.append(load_public_pem(str(item.get("public_key_pem", ""))))
        except ValueError:
            continue
    if keys and not ctx.as_json:
        # Trust on first use: an operator should compare this with the key kept elsewhere.
        print("note: checkpoints checked against the gateway's signing keys "
              f"({', '.join(key_fingerprint(k) for k in keys)}); pin one with --trusted-key",
              file=sys.stderr)
    return keys


def verify(ctx: Any) -> int:
    """`strongroom audit verify`: the hash chain and its signed checkpoints, online or from a file."""
    from shared import audit_archive as archive
    from shared.audit_chain import ChainHead, verify_chain

    cli = _cli()
    start = None
    checkpoints: list[Mapping[str, Any]] = []
    if ctx.args.from_file:
        path = ctx.args.from_file
        if archive.is_archive(path):
            try:
                loaded = archive.read_archive(Path(path).read_bytes())
            except (OSError, ValueError) as exc:
                raise cli.CommandFailed(f"{path}: {exc}") from None
            keys = _trusted_keys(ctx, [{"public_key_pem": loaded.public_key_pem}])
            if not archive.verify_archive_signature(loaded, keys):
                return cli._report_verify(ctx, ok=False, checked=0, seq=None, event_id=None,
                                          problem="archive signature is invalid or by an untrusted key")
            records, checkpoints = loaded.records, loaded.checkpoints
            start = loaded.start_head
        else:
            records = cli._read_jsonl(path)
            keys = _trusted_keys(ctx, []) if getattr(ctx.args, "trusted_key", None) else []
    else:
        api = cli._require(ctx)
        offered = (_optional(api, "/v1/audit/signing-key") or {}).get("keys") or []
        keys = _trusted_keys(ctx, offered)
        # Checkpoints first: every one of them then covers records the next read will return.
        checkpoints = list(_pages(api, "/v1/audit/checkpoints")) if offered else []
        records = list(_pages(api, "/v1/audit"))
        status = (_optional(api, "/v1/audit/status") if offered else None) or {}
        base = status.get("archived_seq")
        if base:
            start = ChainHead(str(status.get("tenant_id")), int(base), str(status.get("archived_hash")))
    tenant = records[0].get("tenant_id") if records else (start.tenant_id if start else None)
    if records and not (isinstance(tenant, str) and tenant):
        first = records[0]
        return cli._report_verify(ctx, ok=False, checked=0, seq=first.get("seq"),
                                  event_id=first.get("event_id"), problem="first record names no tenant")
    if start is None and tenant:
        # Pinning genesis means the records must start at seq 1: a missing head is caught.
        start = ChainHead.genesis(tenant)
    result = verify_chain(records, start=start, checkpoints=checkpoints, trusted_keys=keys)
    head = result.head
    code = cli._report_verify(ctx, ok=result.ok, checked=result.checked, seq=result.first_bad_seq,
                              event_id=result.first_bad_event_id, problem=result.problem,
                              tenant=tenant, head_seq=head.seq if head else None,
                              head_hash=head.hash if head else None)
    if result.ok and checkpoints and not ctx.as_json:
        print(f"checkpoints ok: {len(checkpoints)} signed checkpoint(s) match the chain")
    return code


EXPORT_FORMATS = ("cef", "leef", "syslog", "jsonl", "records")


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal, or when forced)."""

    def __init__(self, total: int | None, *, stream: Any = None, force: bool = False, width: int = 30):
        self.total, self.done = total, 0
        self._stream = stream or sys.stderr
        self._on = force or self._stream.isatty()
        self._width = width
        self._last = 0.0

    def line(self) -> str:
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = int(frac * self._width)
            return f"[{'#' * filled}{'.' * (self._width - filled)}] {self.done}/{self.total} records ({frac:4.0%})"
        return f"{self.done} records"

    def advance(self, n: int) -> None:
        import time

        self.done += n
        now = time.monotonic()
        if self._on and now - self._last >= 0.1:
            self._last = now
            print("\r" + self.line(), end="", file=self._stream, flush=True)

    def finish(self) -> None:
        if self._on:
            print("\r" + self.line(), file=self._stream, flush=True)


def export(ctx: Any) -> int:
    """`strongroom audit export`: stream a range to a file, with a progress bar on stderr."""
    cli = _cli()
    a = ctx.args
    query = {"format": a.format, "since": a.since, "until": a.until}
    response = cli._require(ctx).open_stream("/v1/audit/export", query=query)
    total = response.headers.get("X-Record-Count")
    progress = Progress(int(total) if total and total.isdigit() else None, force=a.progress)
    target = Path(a.output)
    partial_path = target.with_name(target.name + ".partial")
    try:
        with response, open(partial_path, "wb") as out:
            pending = b""
            while chunk := response.read(64 * 1024):
                out.write(chunk)
                pending += chunk
                lines = pending.count(b"\n")
                if lines:
                    pending = pending[pending.rindex(b"\n") + 1:]
                    progress.advance(lines)
    except Exception as exc:  # OSError, or http.client.IncompleteRead when the stream is cut
        partial_path.unlink(missing_ok=True)
        raise cli.CommandFailed(f"export interrupted after {progress.done} records: {exc!r}") from None
    # Only a complete export takes the target name: a cut stream never looks like a short export.
    partial_path.replace(target)
    progress.finish()
    result = {"file": str(target), "format": a.format, "records": progress.done}
    return cli.show_message(ctx, result, f"exported {progress.done} records to {target}")


def report(ctx: Any) -> int:
    """`strongroom report`: the tenant's compliance report as JSON, CSV or one self-contained HTML page."""
    cli = _cli()
    a = ctx.args
    query = {"since": a.since, "until": a.until, "format": a.format}
    api = cli._require(ctx)
    if a.format == "json":
        data = api.get("/v1/reports", query=query)
        body = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        with api.open_stream("/v1/reports", query=query) as response:
            body = response.read().decode("utf-8")
    if a.output in (None, "-"):
        sys.stdout.write(body)
        return cli.EXIT_OK
    Path(a.output).write_text(body, encoding="utf-8")
    return cli.show_message(ctx, {"file": a.output, "format": a.format}, f"wrote the {a.format} report to {a.output}")


def rotate_forwarder_secret(ctx: Any) -> int:
    cli = _cli()
    out = cli._require(ctx).post(f"/v1/audit/forwarders/{ctx.args.forwarder_id}/rotate-secret")
    return cli.show_new_credential(ctx, out, "secret", "the forwarder's new signing secret")


def register(leaf: Any, noun: Any) -> None:
    """Adds this area's nouns and actions; `leaf` and `noun` are `build_parser`'s helpers."""
    p = leaf(_top(noun), "report", report,
             "Compliance report: releases and denials by device, key and policy, approvals, keys, devices.")
    p.add_argument("--since", help="RFC 3339 start time")
    p.add_argument("--until", help="RFC 3339 end time")
    p.add_argument("--format", choices=("json", "csv", "html"), default="json")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


def _top(noun: Any) -> Any:
    """The top-level subparsers group, so `report` is a command of its own (`strongroom report`)."""
    # `noun` closes over build_parser's top-level group; its first cell is that group.
    for cell in noun.__closure__ or ():
        if hasattr(cell.cell_contents, "add_parser"):
            return cell.cell_contents
    raise RuntimeError("cannot find the top-level command group")


def add_audit_actions(leaf: Any, group: Any) -> None:
    """Actions added to the core `audit` noun (export, checkpoints, status)."""
    cli = _cli()
    leaf(group, "checkpoints", lambda ctx: cli.show_list(
        ctx, {"items": list(_pages(cli._require(ctx), "/v1/audit/checkpoints"))},
        [("SEQ", "seq"), ("TIME", "time"), ("KEY", "key_id"), ("HASH", "hash")]),
        "List the chain's signed checkpoints.")
    p = leaf(group, "export", export, "Export a time range as CEF, LEEF, syslog, JSON lines or records.")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--since", help="RFC 3339 start time (inclusive)")
    p.add_argument("--until", help="RFC 3339 end time (inclusive)")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    leaf(group, "status", lambda ctx: cli.show_object(ctx, cli._require(ctx).get("/v1/audit/status")),
         "Show the audit chain head, checkpoints, lag and queue depth.")
    p = leaf(group, "rotate-forwarder-secret", rotate_forwarder_secret,
             "Give a webhook forwarder a new signing secret; prints it once.")
    p.add_argument("forwarder_id")
