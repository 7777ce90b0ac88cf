"""Sessions, pure: when one has ended (idle or absolute timeout, logout) and when to record use."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

# Last use is written at most this often, so an authenticated request is usually read-only.
TOUCH_EVERY = timedelta(seconds=30)


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
