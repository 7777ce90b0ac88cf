"""keysvc's clock: aware UTC now, and stored datetimes made aware."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """To the millisecond, as the store keeps it: a time a reply hands out is the one a later read
    of the same document returns (a redelivered request is answered from the stored key)."""
    at = datetime.now(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def aware(at: datetime) -> datetime:
    """Stores may hand back naive UTC datetimes."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)
