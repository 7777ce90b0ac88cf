"""Co-signing by change id, pure: in small-team mode a user holding conflicting roles asks for a
change, a second person confirms exactly that change, and the asker's repeated request runs it once.

Nothing here does I/O; `views_changes.py` loads and saves. No credential ever passes between the
two people: each acts with their own.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from typing import Any

from shared import events

from .accounts.rules import ALLOW, Decision

CHANGE_HEADER = "X-Strongroom-Change"
CHANGE_ID = re.compile(r"^chg_[0-9a-f]{32}$")


def body_sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def new_change(*, requested_by: str, method: str, path: str, digest: str, permission: str, now: datetime,
               ttl_seconds: int) -> dict[str, Any]:
    """A change waiting for a second person: who asked, for which request (method, path with its
    query, SHA-256 of the body), under which permission, until when."""
    return {"change_id": events.new_id("chg_"), "requested_by": requested_by, "method": method, "path": path,
            "body_sha256": digest, "permission": permission, "status": "pending", "created_at": now,
            "expires_at": now + timedelta(seconds=ttl_seconds), "confirmed_by": None, "confirmed_at": None}


def check_confirmation(change: dict[str, Any], *, confirmer_id: str, may: bool, signed_in: bool,
                       now: datetime) -> Decision:
    """A second person confirms: not the asker, signed in with a session (not an API token), and
    holding the change's permission (MFA included where their role requires it)."""
    if change["status"] != "pending":
        return Decision.deny("this change is no longer waiting for confirmation")
    if change["expires_at"] <= now:
        return Decision.deny("this change has expired; the requester asks again")
    if confirmer_id == change["requested_by"]:
        return Decision.deny("the person who asked for a change cannot also confirm it")
    if not signed_in:
        return Decision.deny("a change is confirmed by a person signed in with a session, not with an API token")
    if not may:
        return Decision.deny(f"confirming this change requires permission {change['permission']}")
    return ALLOW


def why_unusable(change: dict[str, Any] | None, *, requester: str, method: str, path: str, digest: str,
                 now: datetime) -> tuple[int, str]:
    """Why a repeated request may not run under this change id: (status, reason)."""
    if change is None or change["requested_by"] != requester:
        return 404, "no change of yours has this id"
    if change["status"] == "used":
        return 409, "this change has already been carried out"
    if change["expires_at"] <= now:
        return 409, "this change has expired; ask again"
    if change["status"] == "pending":
        return 409, "this change has not been confirmed by a second person yet"
    if (change["method"], change["path"], change["body_sha256"]) != (method, path, digest):
        return 409, f"this change was confirmed for {change['method']} {change['path']} with another body"
    return 409, "this change cannot be used"


def view(change: dict[str, Any]) -> dict[str, Any]:
    return {k: change.get(k) for k in ("change_id", "requested_by", "method", "path", "body_sha256", "permission",
                                       "status", "created_at", "expires_at", "confirmed_by", "confirmed_at")}
