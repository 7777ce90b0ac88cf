"""OpenID Connect, pure: the authorization request (code flow with PKCE S256, state, nonce) and
the ID token's validation (signature against the provider's JWKS, issuer, audience, expiry,
nonce). Fetching the token and the keys is the view's job."""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

LEEWAY_SECONDS = 60
# Asymmetric only: "none" and HMAC (keyed with a public value) are never accepted.
SIGNING_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]


class InvalidIdToken(ValueError):
    """The ID token is not acceptable; the reason is for the audit log, not the caller."""


@dataclass(frozen=True)
class AuthRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


def authorization_request(config: dict[str, Any], redirect_uri: str) -> AuthRequest:
    state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
    query = {
        "response_type": "code", "client_id": config["client_id"], "redirect_uri": redirect_uri,
        "scope": "openid profile email", "state": state, "nonce": nonce,
        "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256",
    }
    return AuthRequest(f"{config['authorization_endpoint']}?{urllib.parse.urlencode(query)}", state, nonce, verifier)


def token_request(config: dict[str, Any], *, code: str, redirect_uri: str, code_verifier: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "client_id": config["client_id"], "client_secret": config.get("client_secret") or "",
        "code_verifier": code_verifier,
    }


def validate_id_token(id_token: str, jwks: dict[str, Any], *, issuer: str, client_id: str, nonce: str,
                      now: float | None = None) -> dict[str, Any]:
    """The token's claims if its signature, issuer, audience, times and nonce all check out."""
    try:
        keys = KeySet.import_key_set(jwks)
        token = jwt.decode(id_token, keys, algorithms=SIGNING_ALGORITHMS)
        registry = jwt.JWTClaimsRegistry(
            now=int(now if now is not None else time.time()), leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": issuer}, aud={"essential": True, "value": client_id},
            sub={"essential": True}, exp={"essential": True}, nonce={"essential": True, "value": nonce},
        )
        registry.validate(token.claims)
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise InvalidIdToken(f"id token refused: {type(exc).__name__}") from None
    return dict(token.claims)
