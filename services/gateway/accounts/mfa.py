"""TOTP (RFC 6238, 30 s steps, 6 digits, SHA-1 as authenticator apps expect) and recovery codes.

A code is accepted for the previous, current or next step, and only for a step later than the
last one used: a replayed code is refused. Recovery codes are random, single use, and stored as
SHA-256 digests (they carry 80 bits of entropy, so a slow hash adds nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

import pyotp

STEP_SECONDS = 30
RECOVERY_CODES = 10
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def new_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits, RFC 4226's recommendation


def provisioning_uri(secret: str, *, account: str, issuer: str = "Strongroom") -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def matching_step(secret: str, code: str, now: datetime, *, last_step: int | None) -> int | None:
    """The time step `code` belongs to, if valid, recent and not used before; else None."""
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP_SECONDS
    found = None
    for step in (current - 1, current, current + 1):
        # Every candidate is compared (constant time each) so timing does not reveal which matched.
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    if found is None or (last_step is not None and found <= last_step):
        return None
    return found


def new_recovery_codes() -> list[str]:
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(16))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:12]}-{raw[12:]}")
    return codes


def recovery_digest(code: str) -> str:
    normalized = code.strip().lower().replace("-", "").replace(" ", "")
    return hashlib.sha256(normalized.encode()).hexdigest()
