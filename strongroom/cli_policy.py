"""Operator commands of the policy area, registered into `strongroom`'s parser by `register`:
groups, approvals, decisions, the event stream, and policy versions and dry-runs."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from strongroom.client import quote_id

APPROVAL_COLUMNS = [
    ("ID", "approval_id"), ("STATUS", "status"), ("DEVICE", "device_id"), ("KEY", "key_id"),
    ("VOTES", lambda a: f"{a.get('approvals_received', 0)}/{a.get('approvals_required', '?')}"),
    ("EXPIRES", "expires_at"),
]
GROUP_COLUMNS = [("ID", "group_id"), ("NAME", "name"), ("KIND", "kind"),
                 ("MEMBERS", lambda g: len(g.get("members") or [])), ("DYNAMIC", lambda g: g.get("match") is not None)]
DECISION_COLUMNS = [("REQUEST", "request_id"), ("TIME", "decided_at"), ("EFFECT", "effect"), ("DEVICE", "device_id"),
                    ("KEY", "key_id")]
VERSION_COLUMNS = [("VERSION", "version"), ("CURRENT", "current"), ("UPDATED", "updated_at"), ("BY", "updated_by"),
                   ("RESTORED FROM", "restored_from")]
SIMULATION_COLUMNS = [("REQUEST", "request_id"), ("DEVICE", "device_id"), ("KEY", "key_id"), ("CURRENT", "current"),
                      ("CANDIDATE", "candidate")]


def _cli():  # the core CLI module, imported late: it imports this one
    from strongroom import cli

    return cli


def _api(ctx: Any) -> Any:
    return _cli()._require(ctx)


def _document(path: str) -> dict[str, Any]:
    cli = _cli()
    document = cli._read_json_file(path)
    if not isinstance(document, dict):
        raise cli.UsageError(f"{path} must hold a JSON object")
    return document


# --- approvals -----------------------------------------------------------------------------------


def approval_list(ctx: Any) -> int:
    query = {"status": None if ctx.args.all else ctx.args.status}
    return _cli().show_list(ctx, _api(ctx).get("/v1/approvals", query=query), APPROVAL_COLUMNS)


def approval_show(ctx: Any) -> int:
    return _cli().show_object(ctx, _api(ctx).get(f"/v1/approvals/{quote_id(ctx.args.id)}"))


def _vote(ctx: Any, verdict: str) -> int:
    body = {"comment": ctx.args.comment or ""}
    result = _api(ctx).post(f"/v1/approvals/{quote_id(ctx.args.id)}/{verdict}", body)
    received, required = result.get("approvals_received"), result.get("approvals_required")
    message = f"approval {ctx.args.id}: {result.get('status')} ({received} of {required} approvals)"
    return _cli().show_message(ctx, result, message)


def approval_approve(ctx: Any) -> int:
    return _vote(ctx, "approve")


def approval_deny(ctx: Any) -> int:
    return _vote(ctx, "deny")


# --- groups ----------------------------------------------------------------------------------


def group_put(ctx: Any) -> int:
    document = _document(ctx.args.file)
    api = _api(ctx)
    if ctx.args.id is None:
        return _cli().show_object(ctx, api.post("/v1/groups", document))
    return _cli().show_object(ctx, api.put(f"/v1/groups/{quote_id(ctx.args.id)}", document))


def group_list(ctx: Any) -> int:
    return _cli().show_list(ctx, _api(ctx).get("/v1/groups", query={"kind": ctx.args.kind}), GROUP_COLUMNS)


def group_show(ctx: Any) -> int:
    return _cli().show_object(ctx, _api(ctx).get(f"/v1/groups/{quote_id(ctx.args.id)}"))


def group_delete(ctx: Any) -> int:
    result = _api(ctx).delete(f"/v1/groups/{quote_id(ctx.args.id)}")
    return _cli().show_message(ctx, result, f"deleted group {ctx.args.id}")


# --- decisions -------------------------------------------------------------------------------


def decision_list(ctx: Any) -> int:
    query = {"device_id": ctx.args.device, "key_id": ctx.args.key, "effect": ctx.args.effect, "limit": ctx.args.limit}
    return _cli().show_list(ctx, _api(ctx).get("/v1/decisions", query=query), DECISION_COLUMNS)


def decision_show(ctx: Any) -> int:
    return _cli().show_object(ctx, _api(ctx).get(f"/v1/decisions/{quote_id(ctx.args.id)}"))


# --- policy versions and dry-runs ---------------------------------------------------------------


def policy_versions(ctx: Any) -> int:
    return _cli().show_list(ctx, _api(ctx).get(f"/v1/policies/{quote_id(ctx.args.id)}/versions"), VERSION_COLUMNS)


def policy_show_version(ctx: Any) -> int:
    path = f"/v1/policies/{quote_id(ctx.args.id)}/versions/{ctx.args.version}"
    return _cli().show_object(ctx, _api(ctx).get(path))


def policy_restore(ctx: Any) -> int:
    result = _api(ctx).post(f"/v1/policies/{quote_id(ctx.args.id)}/versions/{ctx.args.version}/restore")
    message = f"policy {ctx.args.id}: version {ctx.args.version} restored as version {result.get('version')}"
    return _cli().show_message(ctx, result, message)


def policy_simulate(ctx: Any) -> int:
    """Dry-run FILE (a policy, or {"policy": ..., "requests": [...]}) over given or recorded requests."""
    cli = _cli()
    document = _document(ctx.args.file)
    body: dict[str, Any] = dict(document) if "policy" in document else {"policy": document}
    if ctx.args.replaces:
        body["policy_id"] = ctx.args.replaces
    if ctx.args.days is not None:
        body.pop("requests", None)
        body["recorded_days"] = ctx.args.days
    elif "requests" not in body:
        raise cli.UsageError("give --days N, or put \"requests\" in the file next to \"policy\"")
    result = _api(ctx).post("/v1/policies/simulate", body)
    if ctx.as_json:
        return cli.show_object(ctx, result)
    print(f"{result['requests']} request(s) replayed, {result['changed']} decided differently")
    for label, pairs in (("gain access", result.get("gained", [])), ("lose access", result.get("lost", []))):
        for pair in pairs:
            print(f"would {label}: device {pair['device_id']} key {pair['key_id']}")
    changed = [i for i in result.get("items", []) if i.get("changed")]
    if changed:
        print("\n".join(cli.table_lines(changed, SIMULATION_COLUMNS)))
    return cli.EXIT_OK


# --- the event stream --------------------------------------------------------------------------


def _sse(api: Any, types: str | None, after: str | None = None) -> Iterator[tuple[str, str]]:
    """(event type, data) pairs from the gateway's stream, until it closes; with `after`, first the
    events the gateway still keeps that came after that event id."""
    cli = _cli()
    url = api.url_for("/v1/events/stream", {"types": types, "last_event_id": after})
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {api._token}"}
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        response = api._opener.open(request, timeout=None)
    except urllib.error.HTTPError as exc:
        from strongroom.client import _problem_from

        raise _problem_from(exc.code, exc.reason or "", exc.headers.get("Content-Type", ""), exc.read()) from None
    except urllib.error.URLError as exc:
        raise cli.GatewayUnreachable(api.base_url, str(exc.reason)) from None
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


def events_tail(ctx: Any) -> int:
    """Print the tenant's notification events as they happen (Ctrl-C to stop)."""
    cli = _cli()
    shown = 0
    try:
        for kind, data in _sse(_api(ctx), ",".join(ctx.args.types) if ctx.args.types else None, ctx.args.after):
            if kind == "overflow":
                raise cli.CommandFailed("the stream fell behind and was closed by the gateway; run tail again")
            if kind == "gap":
                print(f"events after {ctx.args.after} are no longer all kept; some may be missing", file=sys.stderr)
                continue
            event = json.loads(data)
            if ctx.as_json:
                print(json.dumps(cli.redact(event)), flush=True)
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
    return cli.EXIT_OK


# --- registration --------------------------------------------------------------------------------


def register(leaf: Any, noun: Any) -> None:
    """Adds this area's nouns and actions; `leaf` and `noun` are `build_parser`'s helpers."""
    cli = _cli()
    g = noun("approval", "List, approve and deny key requests waiting for approval.")
    p = leaf(g, "list", approval_list, "List approvals (pending unless --status or --all).")
    p.add_argument("--status", choices=("pending", "approved", "denied", "expired"), default="pending")
    p.add_argument("--all", action="store_true", help="every status")
    p = leaf(g, "show", approval_show, "Show one approval and its votes.")
    p.add_argument("id")
    for name, func, help_ in (("approve", approval_approve, "Approve a pending request (one vote)."),
                              ("deny", approval_deny, "Deny a pending request.")):
        p = leaf(g, name, func, help_)
        p.add_argument("id")
        p.add_argument("--comment", help="why (kept in the audit log)")

    g = noun("group", "Manage device groups and key groups that policies target.")
    p = leaf(g, "put", group_put, "Create a group from FILE.json, or with --id replace one.")
    p.add_argument("file", metavar="FILE.json")
    p.add_argument("--id", help="existing group to replace")
    p = leaf(g, "list", group_list, "List groups.")
    p.add_argument("--kind", choices=("device", "key"))
    p = leaf(g, "show", group_show, "Show one group.")
    p.add_argument("id")
    p = leaf(g, "delete", group_delete, "Delete a group.")
    p.add_argument("id")

    g = noun("decision", "Inspect policy decisions with their full trace.")
    p = leaf(g, "list", decision_list, "List recent decisions.")
    p.add_argument("--device")
    p.add_argument("--key")
    p.add_argument("--effect", choices=("allow", "deny", "require_approval"))
    p.add_argument("--limit", type=cli._positive_int)
    p = leaf(g, "show", decision_show, "Show one decision: reasons, trace, facts.")
    p.add_argument("id", metavar="REQUEST_ID")

    g = noun("events", "Watch the tenant's notification events.")
    p = leaf(g, "tail", events_tail, "Print approvals, denials and posture events as they happen.")
    p.add_argument("--type", dest="types", action="append", help="event type or pattern, e.g. approval.* (repeatable)")
    p.add_argument("--count", type=cli._positive_int, help="stop after this many events")
    p.add_argument("--after", metavar="EVENT_ID", help="first replay the kept events after this one (resume a tail)")


def add_policy_actions(leaf: Any, group: Any) -> None:
    """Actions added to the core `policy` noun: versions, show-version, restore, simulate."""
    cli = _cli()
    p = leaf(group, "versions", policy_versions, "List a policy's versions.")
    p.add_argument("id")
    p = leaf(group, "show-version", policy_show_version, "Show one version of a policy.")
    p.add_argument("id")
    p.add_argument("version", type=cli._positive_int)
    p = leaf(group, "restore", policy_restore, "Restore an older version (it becomes the newest).")
    p.add_argument("id")
    p.add_argument("version", type=cli._positive_int)
    p = leaf(group, "simulate", policy_simulate,
             "Dry-run a candidate policy: decisions under current and candidate, who gains or loses access.")
    p.add_argument("file", metavar="FILE.json", help='a policy, or {"policy": ..., "requests": [...]}')
    p.add_argument("--days", type=cli._positive_int, help="replay the recorded requests of the last N days")
    p.add_argument("--replaces", metavar="POLICY_ID", help="the candidate replaces this policy (else it is added)")
