"""`strongroom changes`: small-team co-signing by change id. A change by a user holding conflicting
roles waits (428) for a second person, who lists and confirms it with their own sign-in; the first
person then runs the same command again with `--change ID`, and it is carried out once."""

from __future__ import annotations

import time

from strongroom.cli_common import Column, Commands, Ctx, api, items, show_list, show_message
from strongroom.client import GatewayClient, quote_id

CHANGE_COLUMNS: list[Column] = [
    ("ID", "change_id"), ("METHOD", "method"), ("PATH", "path"), ("REQUESTED BY", "requested_by"),
    ("PERMISSION", "permission"), ("BODY SHA-256", lambda c: (c.get("body_sha256") or "")[:16] + "…"), ("EXPIRES", "expires_at"),
]


def waiting_text(change_id: str, digest: str | None = None) -> str:
    """What to do about a change that waits for a second person."""
    body = f" (its body's SHA-256 begins {digest[:16]}: they compare it)" if digest else ""
    return (f"this change needs a second person: ask someone who holds its permission to sign in and run "
            f"`strongroom changes confirm {change_id}`{body}, then run this same command again with "
            f"`--change {change_id}` (it is carried out once)")


def wait_for_confirmation(client: GatewayClient, change_id: str, *, seconds: int, poll: float = 1.0) -> bool:
    """True once the change no longer waits (confirmed, the gateway will tell if it expired
    instead), False if it still waits after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        waiting = {c.get("change_id") for c in items(client.get("/v1/changes"))}
        if change_id not in waiting:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def cmd_changes_list(ctx: Ctx) -> int:
    return show_list(ctx, api(ctx).get("/v1/changes"), CHANGE_COLUMNS)


def cmd_changes_confirm(ctx: Ctx) -> int:
    resp = api(ctx).post(f"/v1/changes/{quote_id(ctx.args.id)}/confirm", {})
    return show_message(ctx, resp, f"confirmed change {ctx.args.id} ({resp['method']} {resp['path']}, body "
                                   f"sha256 {resp['body_sha256']}): its requester runs it again with "
                                   f"`--change {ctx.args.id}`")


def add_changes(cli: Commands) -> None:
    g = cli.noun("changes", "Small-team changes waiting for a second person: list and confirm them.")
    g.action("list", cmd_changes_list, "List the changes you may confirm, and your own.")
    p = g.action("confirm", cmd_changes_confirm, "Confirm a change by id (with your own sign-in).")
    p.add_argument("id")
