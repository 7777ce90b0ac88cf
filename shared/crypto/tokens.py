"""Bearer credentials: random, prefixed, shown once, stored only as a SHA-256 digest.

The tokens carry 256 bits of entropy, so a plain digest (not a slow hash) is the right
storage: it cannot be brute-forced, and lookup by digest needs no secret comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token(kind: str) -> str:
    """`kind` is a short readable prefix (sr_pat, sr_boot, sr_enr) so leaked tokens are recognisable."""
    return f"{kind}_{secrets.token_urlsafe(32)}"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
