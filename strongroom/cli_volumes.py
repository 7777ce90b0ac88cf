"""Operator commands for LUKS2 volumes: `strongroom volume list|show|recovery`.

`volume recovery` is the whole break-glass flow: a one-time X25519 key made here (never written
anywhere), the request, waiting while two other people approve, collecting the passphrase sealed to
that key, and opening it here, to stdout or a new 0600 file.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared.crypto import escrow
from shared.crypto.release import ReleaseError
from strongroom.cli_common import (
    EXIT_OK,
    Column,
    CommandFailed,
    Commands,
    Ctx,
    UsageError,
    api,
    non_negative_int,
    positive_int,
    show_list,
    show_object,
)
from strongroom.client import quote_id

VOLUME_COLUMNS: list[Column] = [
    ("ID", "volume_id"), ("LUKS UUID", "luks_uuid"), ("KEY", "key_id"), ("DEVICE", "device_path"),
    ("BOUND INSTANCE", "bound.instance"), ("BOUND DEVICE", "bound.device_id"),
    ("LAST UNLOCK", "last_unlock.at"), ("UNLOCKED BY", "last_unlock.device_id"),
]
ATTACHMENT_COLUMNS: list[Column] = [
    ("AT", "at"), ("REQUEST", "request_id"), ("DEVICE", "device_id"), ("INSTANCE", "instance"),
    ("BOUND", "attached_to_bound_instance"), ("OUTCOME", "outcome"),
]
_SETTLED = ("approved", "denied", "expired")


def cmd_volume_list(ctx: Ctx) -> int:
    page = api(ctx).get("/v1/volumes", query={"limit": ctx.args.limit, "after": ctx.args.after})
    return show_list(ctx, page, VOLUME_COLUMNS)


def cmd_volume_show(ctx: Ctx) -> int:
    volume = api(ctx).get(f"/v1/volumes/{quote_id(ctx.args.id)}", query={"history": ctx.args.history})
    if ctx.as_json:
        return show_object(ctx, volume)
    history = volume.pop("attachments", [])
    show_object(ctx, volume)
    print("attachments:")
    return show_list(ctx, {"items": history}, ATTACHMENT_COLUMNS)


def _write_new(path: Path, secret: bytes) -> None:
    """A new 0600 file; an existing one is never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists; name a new file") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(secret)


def cmd_volume_recovery(ctx: Ctx) -> int:
    a, client = ctx.args, api(ctx)
    out = Path(a.out) if a.out else None
    if out is not None and out.exists():
        raise UsageError(f"{out} exists; name a new file")
    volume = quote_id(a.id)
    tenant_id = client.get("/v1/me").get("tenant_id")
    if not tenant_id:
        raise CommandFailed("this credential belongs to no tenant")
    private = X25519PrivateKey.generate()  # one-time: lives only in this process
    asked = client.post(f"/v1/volumes/{volume}/recovery-requests",
                        {"reason": a.reason, "public_key": escrow.public_key_b64(private)})
    request_id = asked["request_id"]
    print(f"recovery request {request_id}: waiting for {asked['approvals_required']} approvals; approvers run "
          f"`strongroom approval approve {asked['approval_id']}`", file=sys.stderr)
    deadline, state = time.monotonic() + a.timeout, asked
    while state["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(min(a.interval, max(deadline - time.monotonic(), 0)))
        state = client.get(f"/v1/volumes/{volume}/recovery-requests/{quote_id(request_id)}")
    if state["status"] != "approved":
        what = "no approval in time" if state["status"] == "pending" else f"the request was {state['status']}"
        raise CommandFailed(f"recovery request {request_id}: {what}; nothing was released")
    released = client.post(f"/v1/volumes/{volume}/recovery-requests/{quote_id(request_id)}/collect")
    info = escrow.recovery_info(tenant_id=tenant_id, volume_id=a.id, request_id=request_id)
    try:
        passphrase = escrow.open_b64(released["sealed_passphrase"], private, info=info)
    except ReleaseError as exc:
        raise CommandFailed(str(exc)) from None
    print(f"released after approval by {', '.join(released.get('approvers', []))}", file=sys.stderr)
    if out is not None:
        _write_new(out, passphrase)
        print(f"wrote the recovery passphrase to {out} (mode 0600)", file=sys.stderr)
    else:
        sys.stdout.buffer.write(passphrase)
        sys.stdout.flush()
    return EXIT_OK


def add_volume(cli: Commands) -> None:
    g = cli.noun("volume", "Inspect LUKS2 volumes and recover their passphrases (break-glass).")
    p = g.action("list", cmd_volume_list, "List volumes with their binding and last unlock.")
    p.add_argument("--limit", type=positive_int, default=100)
    p.add_argument("--after", default=None)
    p = g.action("show", cmd_volume_show, "Show a volume and its attachment history.")
    p.add_argument("id")
    p.add_argument("--history", type=non_negative_int, default=50, help="attachments to show (default 50)")
    p = g.action("recovery", cmd_volume_recovery,
                 "Break-glass: ask for a volume's recovery passphrase, wait for two approvals, print it.")
    p.add_argument("id")
    p.add_argument("--reason", required=True, help="why (shown to approvers, kept in the audit log)")
    p.add_argument("--out", help="write it to this new file (0600) instead of stdout")
    p.add_argument("--timeout", type=positive_int, default=3600, help="seconds to wait for approvals (default 3600)")
    p.add_argument("--interval", type=positive_int, default=5, help="seconds between checks (default 5)")
