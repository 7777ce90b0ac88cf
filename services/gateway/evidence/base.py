"""What a verifier of device evidence returns: facts, how far they can be trusted, and about whom."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Provenance = Literal["attested", "cloud", "observed", "claimed"]


@dataclass(frozen=True)
class Verified:
    # e.g. {"integrity": {"pcr": {"0": "<hex>", "7": "<hex>"}, "reset_count": n, "restart_count": n}}
    facts: dict[str, Any]
    provenance: Provenance         # "attested" for a quote bound to our nonce
    subject: str | None = None     # e.g. "tpm:<AK name hex>"


class EvidenceError(Exception):
    """Evidence was refused. `reason` is short, generic and safe to show: it never echoes the input."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
