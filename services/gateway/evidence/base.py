"""What every evidence verifier returns, and how it refuses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Provenance = Literal["attested", "cloud", "observed", "claimed"]


@dataclass(frozen=True)
class Verified:
    """Facts established by one piece of evidence, how far they can be trusted, and whose they are."""

    facts: dict[str, Any]
    provenance: Provenance
    subject: str | None = None


class EvidenceError(Exception):
    """Evidence refused. `reason` is short, generic and safe to show: it never echoes the input."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
