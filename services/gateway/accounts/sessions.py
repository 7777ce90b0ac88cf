"""Credentials, pure: when a session or an API token has ended (idle or absolute timeout, logout,
expiry, revocation, the tenant's token lifetime cap, or a change to its user that ends every
credential issued before it) and when to record a session's use."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

# Last use is written at most this often, so an authenticated request is usually read-only.
TOUCH_EVERY = timedelta(seconds=30)
# No API token outlives this many days from its creation, unless the tenant sets another cap
# (tenant setting `token_max_days`, 1 to 365); a lowered cap also shortens tokens already minted.
DEFAULT_TOKEN_MAX_DAYS = 90


def ended(doc: dict[str, Any], now: datetime, *, idle_seconds: int, absolute_seconds: int) -> str | None:
    """Why a session is over, or None while it is alive."""
    if doc.get("ended_at") is not None:
        return "session ended"
    if now >= doc["created_at"] + timedelta(seconds=absolute_seconds):
        return "session absolute timeout"
    if now >= doc["last_seen"] + timedelta(seconds=idle_seconds):
        return "session idle timeout"
    return None


def should_touch(doc: dict[str, Any], now: datetime) -> bool:
    return now - doc["last_seen"] >= TOUCH_EVERY


def token_max_days(tenant: dict[str, Any] | None) -> int:
    return int(((tenant or {}).get("settings") or {}).get("token_max_days") or DEFAULT_TOKEN_MAX_DAYS)


def token_ended(doc: dict[str, Any], now: datetime, *, max_days: int) -> str | None:
    """Why an API token no longer works, or None while it does."""
    if doc.get("revoked"):
        return "revoked token"
    expires = doc.get("expires_at")
    if expires is not None and expires <= now:
        return "expired token"
    if doc["created_at"] + timedelta(days=max_days) <= now:
        return "token older than the tenant's token lifetime cap"
    return None


def ended_by_user_change(issued_at: datetime, user: dict[str, Any]) -> str | None:
    """SECURITY: a password change, MFA reset, disabling or a role revocation sets the user's
    `credentials_after`; every session and API token issued before it has ended."""
    after = user.get("credentials_after")
    if after is not None and issued_at < after:
        return "credential ended by a change to its user"
    return None
