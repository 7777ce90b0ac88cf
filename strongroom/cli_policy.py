"""Operator commands of the policy area: policies with their versions and dry-runs, groups,
approvals, decisions and the event stream."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from strongroom.cli_common import (
    EXIT_OK,
    Column,
    CommandFailed,
    Commands,
    Ctx,
    UsageError,
    api,
    positive_int,
    print_table,
    read_json_object,
    redact,
    show_list,
    show_message,
    show_object,
)
from strongroom.client import GatewayClient, quote_id

POLICY_COLUMNS: list[Column] = [
    ("ID", "policy_id"), ("NAME", "name"), ("VERSION", "version"), ("EFFECT", "effect"),
    ("UPDATED", "updated_at"), ("CREATED", "created_at"),
]
APPROVAL_COLUMNS: list[Column] = [
    ("ID", "approval_id"), ("STATUS", "status"), ("DEVICE", "device_id"), ("KEY", "key_id"),
    ("VOTES", lambda a: f"{a.get('approvals_received', 0)}/{a.get('approvals_required', '?')}"),
    ("EXPIRES", "expires_at"),
]
GROUP_COLUMNS: list[Column] = [
    ("ID", "group_id"), ("NAME", "name"), ("KIND", "kind"),
    ("MEMBERS", lambda g: len(g.get("members") or [])), ("DYNAMIC", lambda g: g.get("match") is not None),
]
DECISION_COLUMNS: list[Column] = [
    ("REQUEST", "request_id"), ("TIME", "decided_at"), ("EFFECT", "effect"), ("DEVICE", "device_id"), ("KEY", "key_id"),
]
VERSION_COLUMNS: list[Column] = [
    ("VERSION", "version"), ("CURRENT", "current"), ("UPDATED", "updated_at"), ("BY", "updated_by"),
    ("RESTORED FROM", "restored_from"),
]
def _provenance(item: Mapping[str, Any]) -> str:
    """The facts the candidate tested, each with where it came from: identity.region=claimed, ..."""
    return ", ".join(f"{fact}={source or 'missing'}" for fact, source in (item.get("provenance") or {}).items())


SIMULATION_COLUMNS: list[Column] = [
    ("REQUEST", "request_id"), ("DEVICE", "device_id"), ("KEY", "key_id"), ("CURRENT", "current"),
    ("CANDIDATE", "candidate"), ("FACTS TESTED", _provenance),
]


# --- policies ------------------------------------------------------------------------------------


def policy_put(ctx: Ctx) -> int:
    document = read_json_object(ctx.args.file)
    client = api(ctx)
    if ctx.args.id is None:
        resp = client.post("/v1/policies", document)
    else:
        resp = client.put(f"/v1/policies/{quote_id(ctx.args.id)}", document)
    return show_object(ctx, resp)


def policy_list(ctx: Ctx) -> int:
    return show_list(ctx, api(ctx).get("/v1/policies"), POLICY_COLUMNS)


def policy_show(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get(f"/v1/policies/{quote_id(ctx.args.id)}"))


def policy_delete(ctx: Ctx) -> int:
    resp = api(ctx).delete(f"/v1/policies/{quote_id(ctx.args.id)}")
    return show_message(ctx, resp, f"deleted policy {ctx.args.id}")


# --- approvals -----------------------------------------------------------------------------------


def approval_list(ctx: Ctx) -> int:
    query = {"status": None if ctx.args.all else ctx.args.status}
    return show_list(ctx, api(ctx).get("/v1/approvals", query=query), APPROVAL_COLUMNS)


def approval_show(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get(f"/v1/approvals/{quote_id(ctx.args.id)}"))


def _vote(ctx: Ctx, verdict: str) -> int:
    body = {"comment": ctx.args.comment or ""}
    result = api(ctx).post(f"/v1/approvals/{quote_id(ctx.args.id)}/{verdict}", body)
    received, required = result.get("approvals_received"), result.get("approvals_required")
    message = f"approval {ctx.args.id}: {result.get('status')} ({received} of {required} approvals)"
    return show_message(ctx, result, message)


def approval_approve(ctx: Ctx) -> int:
    return _vote(ctx, "approve")


def approval_deny(ctx: Ctx) -> int:
    return _vote(ctx, "deny")


# --- groups ----------------------------------------------------------------------------------


def group_put(ctx: Ctx) -> int:
    document = read_json_object(ctx.args.file)
    client = api(ctx)
    if ctx.args.id is None:
        return show_object(ctx, client.post("/v1/groups", document))
    return show_object(ctx, client.put(f"/v1/groups/{quote_id(ctx.args.id)}", document))


def group_list(ctx: Ctx) -> int:
    return show_list(ctx, api(ctx).get("/v1/groups", query={"kind": ctx.args.kind}), GROUP_COLUMNS)


def group_show(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get(f"/v1/groups/{quote_id(ctx.args.id)}"))


def group_delete(ctx: Ctx) -> int:
    result = api(ctx).delete(f"/v1/groups/{quote_id(ctx.args.id)}")
    return show_message(ctx, result, f"deleted group {ctx.args.id}")


# --- decisions -------------------------------------------------------------------------------


def decision_list(ctx: Ctx) -> int:
    query = {"device_id": ctx.args.device, "key_id": ctx.args.key, "effect": ctx.args.effect, "limit": ctx.args.limit}
    return show_list(ctx, api(ctx).get("/v1/decisions", query=query), DECISION_COLUMNS)


def decision_show(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get(f"/v1/decisions/{quote_id(ctx.args.id)}"))


# --- policy versions and dry-runs ---------------------------------------------------------------


def policy_versions(ctx: Ctx) -> int:
    return show_list(ctx, api(ctx).get(f"/v1/policies/{quote_id(ctx.args.id)}/versions"), VERSION_COLUMNS)


def policy_show_version(ctx: Ctx) -> int:
    path = f"/v1/policies/{quote_id(ctx.args.id)}/versions/{ctx.args.version}"
    return show_object(ctx, api(ctx).get(path))


def policy_restore(ctx: Ctx) -> int:
    result = api(ctx).post(f"/v1/policies/{quote_id(ctx.args.id)}/versions/{ctx.args.version}/restore")
    message = f"policy {ctx.args.id}: version {ctx.args.version} restored as version {result.get('version')}"
    return show_message(ctx, result, message)


def policy_simulate(ctx: Ctx) -> int:
    """Dry-run FILE (a policy, or {"policy": ..., "requests": [...]}) over given or recorded requests."""
    document = read_json_object(ctx.args.file)
    body: dict[str, Any] = dict(document) if "policy" in document else {"policy": document}
    if ctx.args.replaces:
        body["policy_id"] = ctx.args.replaces
    if ctx.args.days is not None:
        body.pop("requests", None)
        body["recorded_days"] = ctx.args.days
    elif "requests" not in body:
        raise UsageError("give --days N, or put \"requests\" in the file next to \"policy\"")
    result = api(ctx).post("/v1/policies/simulate", body)
    if ctx.as_json:
        return show_object(ctx, result)
    print(f"{result['requests']} request(s) replayed, {result['changed']} decided differently")
    for label, pairs in (("gain access", result.get("gained", [])), ("lose access", result.get("lost", []))):
        for pair in pairs:
            print(f"would {label}: device {pair['device_id']} key {pair['key_id']}")
    changed = [i for i in result.get("items", []) if i.get("changed")]
    if changed:
        print_table(changed, SIMULATION_COLUMNS)
    return EXIT_OK


# --- the event stream --------------------------------------------------------------------------


def _sse(client: GatewayClient, types: str | None, after: str | None = None) -> Iterator[tuple[str, str]]:
    """(event type, data) pairs from the gateway's stream, until it closes; with `after`, first the
    events the gateway still keeps that came after that event id."""
    response = client.open_stream("/v1/events/stream", query={"types": types, "last_event_id": after},
                                  accept="text/event-stream", endless=True)
    print("watching events (Ctrl-C to stop)", file=sys.stderr, flush=True)
    kind, data = "message", []
    with response:
        for raw in response:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if data:
                    yield kind, "\n".join(data)
                kind, data = "message", []
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())


def events_tail(ctx: Ctx) -> int:
    """Print the tenant's notification events as they happen (Ctrl-C to stop)."""
    shown = 0
    try:
        for kind, data in _sse(api(ctx), ",".join(ctx.args.types) if ctx.args.types else None, ctx.args.after):
            if kind == "overflow":
                raise CommandFailed("the stream fell behind and was closed by the gateway; run tail again")
            if kind == "end":
                raise CommandFailed("the gateway ended the stream: its credential has ended (signed out, revoked "
                                    "or expired); sign in again")
            if kind == "gap":
                print(f"events after {ctx.args.after} are no longer all kept; some may be missing", file=sys.stderr)
                continue
            event = json.loads(data)
            if ctx.as_json:
                print(json.dumps(redact(event)), flush=True)
            else:
                what = next((event[f] for f in ("approval_id", "request_id", "device_id", "group_id", "policy_id")
                             if event.get(f)), "")
                extra = event.get("effect") or event.get("reason") or event.get("comment") or ""
                print(f"{event.get('occurred_at', '')}  {kind:28}  {what}  {extra}".rstrip(), flush=True)
            shown += 1
            if ctx.args.count and shown >= ctx.args.count:
                break
    except KeyboardInterrupt:
        print(file=sys.stderr)
    return EXIT_OK


# --- registration --------------------------------------------------------------------------------


def add_policy(cli: Commands) -> None:
    g = cli.noun("policy", "Manage key-release policies.")
    p = g.action("put", policy_put, "Create a policy, or with --id add a new version of it.")
    p.add_argument("file", metavar="FILE.json")
    p.add_argument("--id", help="existing policy to version")
    g.action("list", policy_list, "List policies.")
    for name, func, help_ in (("show", policy_show, "Show one policy."), ("delete", policy_delete, "Delete a policy."),
                              ("versions", policy_versions, "List a policy's versions.")):
        p = g.action(name, func, help_)
        p.add_argument("id")
    for name, func, help_ in (("show-version", policy_show_version, "Show one version of a policy."),
                              ("restore", policy_restore, "Restore an older version (it becomes the newest).")):
        p = g.action(name, func, help_)
        p.add_argument("id")
        p.add_argument("version", type=positive_int)
    p = g.action("simulate", policy_simulate,
                 "Dry-run a candidate policy: decisions under current and candidate, who gains or loses access.")
    p.add_argument("file", metavar="FILE.json", help='a policy, or {"policy": ..., "requests": [...]}')
    p.add_argument("--days", type=positive_int, help="replay the recorded requests of the last N days")
    p.add_argument("--replaces", metavar="POLICY_ID", help="the candidate replaces this policy (else it is added)")


def add_approval(cli: Commands) -> None:
    g = cli.noun("approval", "List, approve and deny key requests waiting for approval.")
    p = g.action("list", approval_list, "List approvals (pending unless --status or --all).")
    p.add_argument("--status", choices=("pending", "approved", "denied", "expired"), default="pending")
    p.add_argument("--all", action="store_true", help="every status")
    p = g.action("show", approval_show, "Show one approval and its votes.")
    p.add_argument("id")
    for name, func, help_ in (("approve", approval_approve, "Approve a pending request (one vote)."),
                              ("deny", approval_deny, "Deny a pending request.")):
        p = g.action(name, func, help_)
        p.add_argument("id")
        p.add_argument("--comment", help="why (kept in the audit log)")


def add_group(cli: Commands) -> None:
    g = cli.noun("group", "Manage device groups and key groups that policies target.")
    p = g.action("put", group_put, "Create a group from FILE.json, or with --id replace one.")
    p.add_argument("file", metavar="FILE.json")
    p.add_argument("--id", help="existing group to replace")
    p = g.action("list", group_list, "List groups.")
    p.add_argument("--kind", choices=("device", "key"))
    p = g.action("show", group_show, "Show one group.")
    p.add_argument("id")
    p = g.action("delete", group_delete, "Delete a group.")
    p.add_argument("id")


def add_decision(cli: Commands) -> None:
    g = cli.noun("decision", "Inspect policy decisions with their full trace.")
    p = g.action("list", decision_list, "List recent decisions.")
    p.add_argument("--device")
    p.add_argument("--key")
    p.add_argument("--effect", choices=("allow", "deny", "require_approval"))
    p.add_argument("--limit", type=positive_int)
    p = g.action("show", decision_show, "Show one decision: reasons, trace, facts.")
    p.add_argument("id", metavar="REQUEST_ID")


def add_events(cli: Commands) -> None:
    g = cli.noun("events", "Watch the tenant's notification events.")
    p = g.action("tail", events_tail, "Print approvals, denials and posture events as they happen.")
    p.add_argument("--type", dest="types", action="append", help="event type or pattern, e.g. approval.* (repeatable)")
    p.add_argument("--count", type=positive_int, help="stop after this many events")
    p.add_argument("--after", metavar="EVENT_ID", help="first replay the kept events after this one (resume a tail)")
