"""keysvc's clock: aware UTC now (to the millisecond the store keeps), and stored datetimes made aware."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.store import stored_now


def now() -> datetime:
    return stored_now()


def aware(at: datetime) -> datetime:
    """Stores may hand back naive UTC datetimes."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)
