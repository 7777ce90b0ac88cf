"""GCP: the Compute Engine instance identity token, verified against the configured JWKS.

The agent asks its metadata server for an identity token with `format=full` and an audience
derived from the server's challenge and the agent's enrolment key (`gcp_audience`). The token
is an RS256 JWT; it is verified against the JWKS pinned in tenant settings (Google's
`https://www.googleapis.com/oauth2/v3/certs`, refreshed by the operator), with issuer
`https://accounts.google.com`, the exact audience expected, and an expiry in the future and at
most one hour after issue. The challenge makes it fresh and the key digest binds it to one
agent, so facts from it have provenance "attested".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from shared.crypto.cloud_binding import gcp_audience

from .base import EvidenceError, Verified

__all__ = ["ISSUER", "gcp_audience", "verify_gcp"]

ISSUER = "https://accounts.google.com"
MAX_TOKEN_CHARS = 8 * 1024
MAX_LIFETIME_SECONDS = 3600
CLOCK_SKEW_SECONDS = 60
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_INSTANCE_FIELDS = ("project_id", "project_number", "zone", "instance_id", "instance_name")


def verify_gcp(token: str, *, jwks: Mapping[str, Any], audience: str, now: datetime) -> Verified:
    """Verify an instance identity token for `audience`; return the instance's identity."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not _JWT.fullmatch(token):
        raise EvidenceError("identity token missing or malformed")
    try:
        decoded = jwt.decode(token, _key_set(json.dumps(jwks, sort_keys=True)), algorithms=["RS256"])
    except EvidenceError:
        raise
    except Exception:  # JoseError, or whatever a hostile header makes the library raise: never a 500
        raise EvidenceError("identity token signature does not verify") from None
    claims = decoded.claims
    if not isinstance(claims, dict):
        raise EvidenceError("identity token claims are not an object")
    _check_claims(claims, audience, int(now.timestamp()))
    instance = _instance(claims)
    identity = {"cloud": "gcp", "account_id": instance["project_id"], "region": instance["zone"].rpartition("-")[0],
                **instance, "service_account": claims.get("email") or claims.get("sub")}
    return Verified(facts={"identity": identity}, provenance="attested",
                    subject=f"gcp:{instance['project_id']}/{instance['instance_id']}")


@lru_cache(maxsize=16)
def _key_set(canonical_jwks: str) -> KeySet:
    """Tenants' JWKS change rarely: parse each distinct one once. Only public RSA keys are kept."""
    keys = json.loads(canonical_jwks).get("keys")
    if not isinstance(keys, list):
        raise EvidenceError("configured JWKS has no keys")
    public = [k for k in keys if isinstance(k, dict) and k.get("kty") == "RSA" and "d" not in k]
    try:
        return KeySet.import_key_set({"keys": public})
    except (JoseError, ValueError, TypeError):
        raise EvidenceError("configured JWKS is unreadable") from None


def _check_claims(claims: Mapping[str, Any], audience: str, now: int) -> None:
    if claims.get("iss") != ISSUER:
        raise EvidenceError("identity token issuer is not Google")
    if claims.get("aud") != audience:  # a single audience, exactly ours: never a list
        raise EvidenceError("identity token audience does not match the challenge")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int) or isinstance(exp, bool) or isinstance(iat, bool):
        raise EvidenceError("identity token lacks exp or iat")
    if exp <= now - CLOCK_SKEW_SECONDS:
        raise EvidenceError("identity token expired")
    if iat > now + CLOCK_SKEW_SECONDS or exp - iat > MAX_LIFETIME_SECONDS or exp <= iat:
        raise EvidenceError("identity token lifetime is not valid")
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, int) or nbf > now + CLOCK_SKEW_SECONDS):
        raise EvidenceError("identity token not yet valid")


def _instance(claims: Mapping[str, Any]) -> dict[str, Any]:
    google = claims.get("google")
    engine = google.get("compute_engine") if isinstance(google, dict) else None
    if not isinstance(engine, dict):
        raise EvidenceError("identity token lacks instance details (format=full)")
    instance: dict[str, Any] = {}
    for name in _INSTANCE_FIELDS:
        value = engine.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not 0 < len(value) <= 128:
            raise EvidenceError(f"identity token field {name} missing or malformed")
        instance[name] = value
    created = engine.get("instance_creation_timestamp")
    if isinstance(created, int) and not isinstance(created, bool):
        instance["instance_creation_timestamp"] = created
    return instance
