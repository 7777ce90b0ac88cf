"""Operator commands of the audit area: list, verify (online, from an export or an archive), export,
checkpoints, status, forwarder secrets, and the compliance report."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared import audit_archive, export_formats
from shared.audit_chain import ChainHead, Reach, VerifyResult, describe_missing, verify_audit
from shared.commands_audit import REPORT_FORMATS
from shared.signatures import key_fingerprint, load_public_pem
from strongroom.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    Column,
    CommandFailed,
    Commands,
    Ctx,
    UsageError,
    api,
    non_negative_int,
    pages,
    positive_int,
    print_data,
    read_json_object,
    read_jsonl,
    show_list,
    show_message,
    show_new_credential,
    show_object,
    typed_id,
)
from strongroom.client import ApiError, GatewayClient

AUDIT_COLUMNS: list[Column] = [
    ("SEQ", "seq"), ("TIME", "time"), ("ACTION", "action"), ("ACTOR", typed_id("actor")),
    ("RESOURCE", typed_id("resource")), ("OUTCOME", "outcome"),
]
CHECKPOINT_COLUMNS: list[Column] = [("SEQ", "seq"), ("TIME", "time"), ("KEY", "key_id"), ("HASH", "hash")]


def cmd_audit_list(ctx: Ctx) -> int:
    a = ctx.args
    query = {"action": a.action, "actor": a.actor, "resource": a.resource, "outcome": a.outcome,
             "since": a.since, "until": a.until, "limit": a.limit, "after": a.after}
    return show_list(ctx, api(ctx).get("/v1/audit", query=query), AUDIT_COLUMNS)


def cmd_audit_checkpoints(ctx: Ctx) -> int:
    return show_list(ctx, {"items": list(pages(api(ctx), "/v1/audit/checkpoints"))}, CHECKPOINT_COLUMNS)


def cmd_audit_status(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get("/v1/audit/status"))


# --- verification --------------------------------------------------------------------------------


def _optional(client: GatewayClient, path: str, unchecked: str) -> Any:
    """A route an older gateway lacks: 404 means "nothing there", said once on stderr."""
    try:
        return client.get(path)
    except ApiError as exc:
        if exc.status != 404:
            raise
        print(f"note: the gateway has no {path}; {unchecked} not checked", file=sys.stderr)
        return None


def _trusted_keys(ctx: Ctx, offered: list[Mapping[str, Any]]) -> list[Ed25519PublicKey]:
    """The keys checkpoints must be signed with: --trusted-key if given, else what the API offers."""
    path = getattr(ctx.args, "trusted_key", None)
    if path:
        try:
            return [load_public_pem(Path(path).read_bytes())]
        except (OSError, ValueError) as exc:
            raise UsageError(f"--trusted-key {path}: {exc}") from None
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


def _report_verify(ctx: Ctx, result: VerifyResult, tenant: str | None) -> int:
    head = result.head
    if ctx.as_json:
        print_data(ctx, {"ok": result.ok, "tenant_id": tenant, "checked": result.checked,
                    "head": {"seq": head.seq, "hash": head.hash} if result.ok and head else None,
                    "first_bad_seq": None if result.ok else result.first_bad_seq,
                    "first_bad_event_id": None if result.ok else result.first_bad_event_id,
                    "problem": None if result.ok else result.problem,
                    "missing": [list(span) for span in result.missing], "unsigned_tail": result.unsigned})
        return EXIT_OK if result.ok else EXIT_FAILED
    if result.ok and result.checked == 0:
        print("chain ok: 0 records (nothing to verify)")
    elif result.ok and head is not None:
        print(f"chain ok: {result.checked} records, head seq {head.seq} hash {head.hash}")
    else:
        where = "?" if result.first_bad_seq is None else result.first_bad_seq
        event = "?" if result.first_bad_event_id is None else result.first_bad_event_id
        print(f"chain BROKEN at seq {where} (event {event}): {result.problem}")
    if result.missing:
        print(describe_missing(result.missing))
    if result.unsigned is not None:
        print(f"unsigned tail: {result.unsigned} record(s) after the newest signed checkpoint")
    return EXIT_OK if result.ok else EXIT_FAILED


@dataclass
class _Material:
    """What verification reads: records, the head they continue (None: genesis), checkpoints, the
    keys those must be signed with, and the outside evidence of how far the chain reaches."""

    records: list[Mapping[str, Any]]
    start: ChainHead | None
    checkpoints: list[Mapping[str, Any]]
    keys: list[Ed25519PublicKey]
    reach: Reach
    tenant: str | None = None


def _from_file(ctx: Ctx, path: str, trusted: Mapping[str, Any] | None) -> _Material | None:
    """An archive (signed, continuing an archived head) or a records export (.jsonl);
    None when an archive's signature already fails."""
    reach = Reach(trusted_checkpoint=trusted)
    if not audit_archive.is_archive(path):
        keys = _trusted_keys(ctx, []) if getattr(ctx.args, "trusted_key", None) else []
        return _Material(read_jsonl(path), None, [], keys, reach)
    try:
        loaded = audit_archive.read_archive(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise CommandFailed(f"{path}: {exc}") from None
    keys = _trusted_keys(ctx, [{"public_key_pem": loaded.public_key_pem}])
    if not audit_archive.verify_archive_signature(loaded, keys):
        return None
    return _Material(loaded.records, loaded.start_head, loaded.checkpoints, keys, reach)


def _forwarder_cursors(client: GatewayClient) -> dict[str, int]:
    """How far each forwarder has sent the chain to its SIEM: records up to there existed."""
    listing = _optional(client, "/v1/audit/forwarders", "forwarder cursors") or {}
    return {str(f.get("forwarder_id")): f["cursor"] for f in listing.get("items") or []
            if isinstance(f.get("cursor"), int) and not isinstance(f.get("cursor"), bool)}


def _from_gateway(ctx: Ctx, trusted: Mapping[str, Any] | None) -> _Material:
    client = api(ctx)
    offered = (_optional(client, "/v1/audit/signing-key", "signed checkpoints") or {}).get("keys") or []
    keys = _trusted_keys(ctx, offered)
    # Everything that says how far the chain reaches is read before the records: the records read
    # afterwards must then reach at least as far, however many arrive meanwhile.
    status = _optional(client, "/v1/audit/status", "the reported head") or {}
    reported = status.get("last_seq")
    reach = Reach(reported_seq=reported if isinstance(reported, int) else None,
                  cursors=_forwarder_cursors(client), trusted_checkpoint=trusted)
    checkpoints = list(pages(client, "/v1/audit/checkpoints")) if offered else []
    records = list(pages(client, "/v1/audit"))
    base = status.get("archived_seq")
    start = ChainHead(str(status.get("tenant_id")), int(base), str(status.get("archived_hash"))) if base else None
    tenant = status.get("tenant_id")
    return _Material(records, start, checkpoints, keys, reach, tenant if isinstance(tenant, str) else None)


def _trusted_checkpoint(ctx: Ctx) -> dict[str, Any] | None:
    """--trusted-checkpoint: one checkpoint as GET /v1/audit/checkpoints lists it, kept elsewhere."""
    path = getattr(ctx.args, "trusted_checkpoint", None)
    return read_json_object(path) if path else None


def cmd_audit_verify(ctx: Ctx) -> int:
    """`strongroom audit verify`: the hash chain, its signed checkpoints and its tail, online or from a file."""
    trusted = _trusted_checkpoint(ctx)
    m = _from_file(ctx, ctx.args.from_file, trusted) if ctx.args.from_file else _from_gateway(ctx, trusted)
    if m is None:
        return _report_verify(ctx, VerifyResult(ok=False, checked=0,
                                                problem="archive signature is invalid or by an untrusted key"), None)
    tenant = m.records[0].get("tenant_id") if m.records else (m.start.tenant_id if m.start else m.tenant)
    if m.records and not (isinstance(tenant, str) and tenant):
        first = m.records[0]
        return _report_verify(ctx, VerifyResult(ok=False, checked=0, first_bad_seq=first.get("seq"),
                                                first_bad_event_id=first.get("event_id"),
                                                problem="first record names no tenant"), None)
    start = m.start
    if start is None and tenant:
        # Pinning genesis means the records must start at seq 1: a missing head is caught.
        start = ChainHead.genesis(tenant)
    result = verify_audit(m.records, start=start, checkpoints=m.checkpoints, trusted_keys=m.keys, reach=m.reach)
    code = _report_verify(ctx, result, tenant)
    if result.ok and m.checkpoints and not ctx.as_json:
        print(f"checkpoints ok: {len(m.checkpoints)} signed checkpoint(s) match the chain")
    return code


# --- export and report ---------------------------------------------------------------------------


class Progress:
    """Export progress on stderr, drawn by rich (only when stderr is a terminal, or when forced)."""

    def __init__(self, total: int | None, *, stream: Any = None, force: bool = False):
        self.total, self.done = total, 0
        stream = stream or sys.stderr
        self._bar: Any = None
        if force or stream.isatty():
            from rich.console import Console  # imported when used: every command pays for the CLI's start-up
            from rich.progress import BarColumn, TextColumn
            from rich.progress import Progress as Bar

            label = ("{task.completed}/{task.total} records ({task.percentage:.0f}%)" if total
                     else "{task.completed} records")
            self._bar = Bar(BarColumn(), TextColumn(label, markup=False),
                            console=Console(file=stream, force_terminal=True, highlight=False))
            self._task = self._bar.add_task("export", total=total)
            self._bar.start()

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            self._bar.stop()
            self._bar = None


def cmd_audit_export(ctx: Ctx) -> int:
    """`strongroom audit export`: stream a range to a file, with a progress bar on stderr."""
    a = ctx.args
    query = {"format": a.format, "since": a.since, "until": a.until}
    response = api(ctx).open_stream("/v1/audit/export", query=query)
    total = response.headers.get("X-Record-Count")
    progress = Progress(int(total) if total and total.isdigit() else None, force=a.progress)
    target = Path(a.out_file)
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
        progress.finish()
        partial_path.unlink(missing_ok=True)
        raise CommandFailed(f"export interrupted after {progress.done} records: {exc!r}") from None
    # Only a complete export takes the target name: a cut stream never looks like a short export.
    partial_path.replace(target)
    progress.finish()
    result = {"file": str(target), "format": a.format, "records": progress.done}
    return show_message(ctx, result, f"exported {progress.done} records to {target}")


def cmd_report(ctx: Ctx) -> int:
    """`strongroom report`: the tenant's compliance report as JSON, CSV or one self-contained HTML page."""
    a = ctx.args
    query = {"since": a.since, "until": a.until, "format": a.format}
    client = api(ctx)
    if a.format == "json":
        data = client.get("/v1/reports", query=query)
        body = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        with client.open_stream("/v1/reports", query=query) as response:
            body = response.read().decode("utf-8")
    if a.out_file in (None, "-"):
        sys.stdout.write(body)
        return EXIT_OK
    Path(a.out_file).write_text(body, encoding="utf-8")
    return show_message(ctx, {"file": a.out_file, "format": a.format}, f"wrote the {a.format} report to {a.out_file}")


def cmd_rotate_forwarder_secret(ctx: Ctx) -> int:
    out = api(ctx).post(f"/v1/audit/forwarders/{ctx.args.forwarder_id}/rotate-secret")
    return show_new_credential(ctx, out, "secret", "the forwarder's new signing secret")


# --- registration --------------------------------------------------------------------------------


def add_audit(cli: Commands) -> None:
    g = cli.noun("audit", "Read and verify the tenant's audit chain.")
    p = g.action("list", cmd_audit_list, "List audit records.")
    for flag in ("--action", "--actor", "--resource", "--outcome", "--since", "--until"):
        p.add_argument(flag)
    p.add_argument("--limit", type=positive_int)
    p.add_argument("--after", type=non_negative_int, help="cursor: the previous page's next")
    p = g.action("verify", cmd_audit_verify, "Verify the whole hash chain, its signed checkpoints and its tail locally.")
    p.add_argument("--from-file", metavar="FILE", help="verify a records export (.jsonl) or an archive instead")
    p.add_argument("--trusted-key", metavar="PEM", help="the audit signing public key checkpoints must match")
    p.add_argument("--trusted-checkpoint", metavar="FILE",
                   help="a signed checkpoint kept elsewhere (JSON, as `audit checkpoints` lists it) the chain must reach")
    g.action("checkpoints", cmd_audit_checkpoints, "List the chain's signed checkpoints.")
    p = g.action("export", cmd_audit_export, "Export a time range as CEF, LEEF, syslog, JSON lines or records.")
    p.add_argument("--format", required=True, choices=export_formats.NAMES)
    p.add_argument("--since", help="RFC 3339 start time (inclusive)")
    p.add_argument("--until", help="RFC 3339 end time (inclusive)")
    p.add_argument("-o", "--out", dest="out_file", required=True, metavar="FILE")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    g.action("status", cmd_audit_status, "Show the audit chain head, checkpoints, lag and queue depth.")
    p = g.action("rotate-forwarder-secret", cmd_rotate_forwarder_secret,
                 "Give a webhook forwarder a new signing secret; prints it once.")
    p.add_argument("forwarder_id")


def add_report(cli: Commands) -> None:
    p = cli.command("report", cmd_report,
                    "Compliance report: releases and denials by device, key and policy, approvals, keys, devices.")
    p.add_argument("--since", help="RFC 3339 start time")
    p.add_argument("--until", help="RFC 3339 end time")
    p.add_argument("--format", choices=REPORT_FORMATS, default="json")
    p.add_argument("-o", "--out", dest="out_file", metavar="FILE", help="write here instead of stdout")
