"""Tenant KEK rotation, the pure part: the rotation record, which versions a page still holds to
re-wrap, and what a re-wrap step does next (advance, sweep again, or finish)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["Next", "Rewrap", "final_count", "kek_id", "new_rotation", "next_step", "status_view", "to_rewrap"]


class Next(StrEnum):
    ADVANCE = "advance"  # the page was walked: save the cursor and go on
    SWEEP_AGAIN = "sweep_again"  # the walk ended but versions were written behind the cursor meanwhile
    FINISH = "finish"  # nothing left under an older KEK: retire the old versions


@dataclass(frozen=True)
class Rewrap:
    """One version's data key re-wrapped: a compare-and-swap from `old` to `new` (ciphertexts only)."""

    doc_id: Any
    key_id: str
    version: int
    from_version: int
    old: bytes
    new: bytes

    def __repr__(self) -> str:
        return f"Rewrap(key_id={self.key_id}, version={self.version}, kek {self.from_version} -> new)"


def kek_id(tenant_id: str, version: int) -> str:
    return f"{tenant_id}/kek/{version}"


def new_rotation(*, rotation_id: str, from_version: int, total: int, now: datetime, actor: str) -> dict[str, Any]:
    return {"rotation_id": rotation_id, "from_version": from_version, "to_version": from_version + 1,
            "status": "running", "cursor": None, "rewrapped": 0, "total": total, "started_at": now, "started_by": actor}


def to_rewrap(page: list[dict[str, Any]], to_version: int) -> list[dict[str, Any]]:
    """The versions of a walked page still wrapped under an older KEK (done or destroyed ones skipped)."""
    return [d for d in page if d["kek_version"] < to_version and d.get("wrapped") is not None]


def next_step(*, page_size: int, left: int) -> Next:
    """After a page: a non-empty one advances; an empty one finishes unless versions remain behind the cursor."""
    if page_size:
        return Next.ADVANCE
    return Next.SWEEP_AGAIN if left else Next.FINISH


def final_count(recorded: int, counted: int) -> int:
    # The running count can fall short by a batch that a crash re-wrapped before its count was
    # saved (the repeat finds nothing left to do there), so the figure read off the store wins.
    return max(recorded, counted)


def status_view(rotation: dict[str, Any] | None) -> dict[str, Any] | None:
    """What operators see of a rotation: the record without its internal cursor."""
    if rotation is None:
        return None
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in rotation.items()
            if k not in ("_id", "_outbox", "tenant_id", "cursor")}
