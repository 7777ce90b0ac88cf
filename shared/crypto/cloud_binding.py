"""How cloud identity evidence is bound to an agent's enrolment key and the server's challenge.

The agent and the gateway both derive these values, so they are defined once, here. A document
requested with them names one challenge and one public key: lifted from one VM, it cannot enrol
another (whose key differs), nor be replayed (the challenge is single-use).

* GCP identity token: ``aud = "strongroom:<challenge>:<hex SHA-256(public key)>"``.
* Azure attested document: ``nonce = hex(SHA-256(challenge ‖ public key))[:32]`` (Azure takes at
  most 32 alphanumeric characters).

`public_key` is the agent's raw public key (32 bytes for Ed25519); `challenge` is the server's
single-use challenge, URL-safe characters only.
"""

from __future__ import annotations

import hashlib
import re

_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{16,128}")
AUDIENCE_PREFIX = "strongroom"


def _checked(challenge: str, public_key: bytes) -> bytes:
    if not isinstance(challenge, str) or not _CHALLENGE.fullmatch(challenge):
        raise ValueError("challenge must be 16 to 128 URL-safe characters")
    if not isinstance(public_key, bytes) or not 16 <= len(public_key) <= 1024:
        raise ValueError("public key must be raw bytes")
    return challenge.encode("ascii")


def key_digest(public_key: bytes) -> str:
    """Hex SHA-256 of the raw public key: how evidence names the key it is bound to."""
    return hashlib.sha256(public_key).hexdigest()


def gcp_audience(challenge: str, public_key: bytes) -> str:
    """The audience an agent asks Google's metadata server to put in its identity token."""
    _checked(challenge, public_key)
    return f"{AUDIENCE_PREFIX}:{challenge}:{key_digest(public_key)}"


def azure_nonce(challenge: str, public_key: bytes) -> str:
    """The nonce an agent asks Azure's metadata service to sign into its attested document."""
    return hashlib.sha256(_checked(challenge, public_key) + public_key).hexdigest()[:32]
