"""Unseal round bookkeeping (pure): when a round is open, a fresh round, how far it got, replays."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .clock import aware

__all__ = ["ROUND_TTL", "is_open", "new_round", "replayed", "submitted", "submitted_by", "transport_held"]

ROUND_TTL = timedelta(minutes=15)


def new_round(round_id: str, fingerprint: str, *, now: datetime) -> dict[str, Any]:
    return {"round_id": round_id, "fingerprint": fingerprint, "entries": [], "started_at": now,
            "expires_at": now + ROUND_TTL}


def is_open(round_doc: dict[str, Any] | None, root_doc: dict[str, Any], *, now: datetime) -> bool:
    """A round counts while it has not expired and is for the root custody records."""
    return (round_doc is not None and aware(round_doc["expires_at"]) > now
            and round_doc.get("fingerprint") == root_doc["fingerprint"])


def submitted(round_doc: dict[str, Any] | None, *, now: datetime) -> int:
    """Shares taken in the round still running (0 once it expired)."""
    if round_doc is None or aware(round_doc["expires_at"]) <= now:
        return 0
    return len(round_doc["entries"])


def replayed(round_doc: dict[str, Any], sealed_digest: str) -> bool:
    """SECURITY: an instance restarted mid-round holds none of the earlier shares, so a captured
    sealed share replayed into the same round would count again; its digest is remembered."""
    return any(e.get("sealed_digest") == sealed_digest for e in round_doc.get("entries", []))


def submitted_by(round_doc: dict[str, Any], by: str) -> bool:
    """SECURITY: each share is sealed to a different custodian, so one person submitting a second
    share holds someone else's; it does not count twice."""
    return any(e.get("by") == by for e in round_doc.get("entries", []))


def transport_held(round_doc: dict[str, Any], live_peers: set[str]) -> bool:
    """Whether a running instance holds a copy of the round's transport key (else no share sealed to it can open)."""
    return not live_peers.isdisjoint((round_doc.get("transport") or {}).get("copies", {}))
