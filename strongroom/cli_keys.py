"""Operator commands for volume keys and enrolled devices: `strongroom key ...`, `strongroom device ...`."""

from __future__ import annotations

from typing import Any

from shared.key_states import OPERATOR_ACTIONS
from strongroom.cli_common import Column, Commands, Ctx, api, positive_int, show_list, show_message, show_object
from strongroom.client import quote_id

ALGORITHMS = ("AES-128", "AES-192", "AES-256")

DEVICE_COLUMNS: list[Column] = [
    ("ID", "device_id"), ("NAME", "name"), ("HOSTNAME", "hostname"), ("STATE", "state"),
    ("STATUS", "status"), ("GROUPS", "groups"), ("ENROLLED", "enrolled_at"),
    ("LAST SEEN", "last_seen_at"),
]
KEY_COLUMNS: list[Column] = [
    ("ID", "key_id"), ("NAME", "name"), ("ALGORITHM", "algorithm"), ("STATE", "state"),
    ("LATEST", "latest_version"), ("VOLUME", "volume"), ("EXPORTABLE", "exportable"),
]


def cmd_device_list(ctx: Ctx) -> int:
    return show_list(ctx, api(ctx).get("/v1/devices"), DEVICE_COLUMNS)


def cmd_device_show(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get(f"/v1/devices/{quote_id(ctx.args.id)}"))


def cmd_device_revoke(ctx: Ctx) -> int:
    resp = api(ctx).post(f"/v1/devices/{quote_id(ctx.args.id)}/revoke", {"reason": ctx.args.reason})
    return show_message(ctx, resp, f"revoked device {ctx.args.id}")


def cmd_key_create(ctx: Ctx) -> int:
    a = ctx.args
    body: dict[str, Any] = {"name": a.name, "algorithm": a.algorithm, "exportable": a.exportable,
                            "activate": not a.inactive}
    if a.volume is not None:
        body["volume"] = a.volume
    if a.rotation_period is not None:
        body["rotation_period_seconds"] = a.rotation_period
    return show_object(ctx, api(ctx).post("/v1/keys", body))


def cmd_key_list(ctx: Ctx) -> int:
    page = api(ctx).get("/v1/keys", query={"limit": ctx.args.limit, "after": ctx.args.after})
    return show_list(ctx, page, KEY_COLUMNS)


def cmd_key_show(ctx: Ctx) -> int:
    return show_object(ctx, api(ctx).get(f"/v1/keys/{quote_id(ctx.args.id)}"))


def cmd_key_rotate(ctx: Ctx) -> int:
    body = {} if ctx.args.reason is None else {"reason": ctx.args.reason}
    return show_object(ctx, api(ctx).post(f"/v1/keys/{quote_id(ctx.args.id)}/rotate", body))


def cmd_key_state(ctx: Ctx) -> int:
    body = {"action": ctx.args.action, "reason": ctx.args.reason}
    return show_object(ctx, api(ctx).post(f"/v1/keys/{quote_id(ctx.args.id)}/state", body))


def add_device(cli: Commands) -> None:
    g = cli.noun("device", "Inspect and revoke enrolled devices.")
    g.action("list", cmd_device_list, "List devices.")
    p = g.action("show", cmd_device_show, "Show one device.")
    p.add_argument("id")
    p = g.action("revoke", cmd_device_revoke, "Revoke a device.")
    p.add_argument("id")
    p.add_argument("--reason", required=True)


def add_key(cli: Commands) -> None:
    g = cli.noun("key", "Manage volume keys.")
    p = g.action("create", cmd_key_create, "Create a key.")
    p.add_argument("name")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="AES-256")
    p.add_argument("--volume")
    p.add_argument("--exportable", action="store_true")
    p.add_argument("--rotation-period", type=positive_int, metavar="SECONDS")
    p.add_argument("--inactive", action="store_true", help="create without activating")
    p = g.action("list", cmd_key_list, "List keys.")
    p.add_argument("--limit", type=positive_int)
    p.add_argument("--after", help="cursor from the previous page")
    p = g.action("show", cmd_key_show, "Show one key and its versions.")
    p.add_argument("id")
    p = g.action("rotate", cmd_key_rotate, "Rotate a key to a new version.")
    p.add_argument("id")
    p.add_argument("--reason")
    p = g.action("state", cmd_key_state, "Change a key's state.")
    p.add_argument("id")
    p.add_argument("action", choices=OPERATOR_ACTIONS)
    p.add_argument("--reason", required=True)
