"""Root custodians (pure): who receives the shares of a new root, and the layout rules.

Share i is sealed to custodian i's own enrolled X25519 key, so nobody but that custodian can open
it. A layout needs a threshold of at least 2 and one distinct, currently eligible custodian with an
enrolled key per share; 1-of-1 only where keysvc's explicit dev setting allows it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

__all__ = ["CustodianError", "Recipient", "choose", "key_id"]


class CustodianError(ValueError):
    """The requested custodians or share layout are not allowed; `field` names the input at fault."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Recipient:
    custodian_id: str
    number: int
    public_key: str  # base64 raw X25519
    key_id: str


def key_id(public_b64: str) -> str:
    """A short fingerprint of a custodian's public key, safe to show and compare out of band."""
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]


def choose(*, named: list[str] | None, shares: int | None, threshold: int, enrolled: list[dict[str, Any]],
           eligible: set[str], allow_single: bool) -> list[Recipient]:
    """The custodians who receive shares 1..n, in order; CustodianError when the layout is refused."""
    keys = {d["custodian_id"]: d["public_key"] for d in enrolled if d["custodian_id"] in eligible}
    if named is None:
        chosen = list(keys)
        if shares is not None and shares != len(chosen):
            raise CustodianError(f"{shares} shares need {shares} root custodians with an enrolled key; "
                                 f"{len(chosen)} have one (name them, or enrol more)", "shares")
    else:
        chosen = list(named)
        if len(set(chosen)) != len(chosen):
            raise CustodianError("each custodian may be named once: one share per person", "custodians")
        if shares is not None and shares != len(chosen):
            raise CustodianError(f"shares ({shares}) must equal the number of custodians named ({len(chosen)})", "shares")
        missing = [c for c in chosen if c not in eligible]
        if missing:
            raise CustodianError(f"{len(missing)} of the named users do not hold root_custodian", "custodians")
        unenrolled = [c for c in chosen if c not in keys]
        if unenrolled:
            raise CustodianError(f"{len(unenrolled)} of the named custodians have not enrolled a key "
                                 "(`strongroom operator enrol-key`)", "custodians")
    single = threshold == 1 and len(chosen) == 1
    if threshold < 2 and not (single and allow_single):
        raise CustodianError("the threshold must be at least 2 (1-of-1 only with keysvc's dev setting "
                             "STRONGROOM_KEYSVC_ALLOW_SINGLE_CUSTODIAN)", "threshold")
    if not chosen:
        raise CustodianError("no root custodian has enrolled a key yet", "custodians")
    if threshold > len(chosen):
        raise CustodianError(f"the threshold ({threshold}) exceeds the {len(chosen)} custodians", "threshold")
    return [Recipient(c, n, keys[c], key_id(keys[c])) for n, c in enumerate(chosen, start=1)]
