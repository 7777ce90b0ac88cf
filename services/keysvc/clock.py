"""keysvc's clock: aware UTC now, and stored datetimes made aware."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def aware(at: datetime) -> datetime:
    """Stores may hand back naive UTC datetimes."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)
