"""Passwords: a length-and-blocklist policy (NIST SP 800-63B) and Argon2id hashing (RFC 9106).

The cost is a setting (see `GatewaySettings.password_*`). Hashing is CPU- and memory-bound, so
the gateway runs it in worker threads, a bounded number at a time (argon2-cffi releases the GIL).
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
# Longer inputs are refused before hashing: an oversized password is a denial-of-service lever.
MAX_LENGTH = 128

# The most common passwords that still pass the length rule; a short list kept inline.
_COMMON = frozenset({
    "password1234", "passwordpassword", "123456789012", "qwertyuiopas", "iloveyou1234",
    "letmeinletmein", "administrator", "changemechangeme", "welcome12345", "strongroom123",
    "correcthorsebatterystaple", "aaaaaaaaaaaa", "111111111111", "qwerty123456", "password123!",
})


def weakness(password: str, *, username: str = "") -> str | None:
    """Why a password is refused, or None. Never echoes the password."""
    if len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    lowered = password.lower()
    if lowered in _COMMON or len(set(lowered)) < 4:
        return "is too common or too repetitive"
    if username and username.lower() in lowered:
        return "must not contain the username"
    return None


class Hasher:
    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int):
        self._ph = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        # Verified against when the user does not exist, so both paths cost one Argon2id run.
        self._decoy = self._ph.hash("decoy password that never matches")

    def hash(self, password: str) -> str:
        return self._ph.hash(password)

    def verify(self, encoded: str | None, password: str) -> bool:
        try:
            return self._ph.verify(encoded or self._decoy, password) and encoded is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, encoded: str) -> bool:
        return self._ph.check_needs_rehash(encoded)
