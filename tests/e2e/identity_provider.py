"""A local OpenID provider for tests: authorization code flow with PKCE (S256 checked), ID
tokens signed with a test RSA key, a JWKS endpoint. Knobs let a test tamper with what it sends."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import urllib.parse
from typing import Any

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey

from .local_http import LocalHttpServer


class LocalOpenIdProvider(LocalHttpServer):
    def __init__(self, client_id: str = "strongroom", client_secret: str = "idp-client-secret"):
        self.client_id, self.client_secret = client_id, client_secret
        self.key = RSAKey.generate_key(2048, {"kid": "test-idp-1"})
        self.user: dict[str, Any] = {"sub": "u-1", "preferred_username": "sso-olga", "groups": ["sec-team"], "amr": ["pwd", "mfa"]}
        self.tamper = False
        self.audience: str | None = None
        self._codes: dict[str, dict[str, Any]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        app.router.add_get("/jwks", self.jwks)

    def settings(self, group_roles: dict[str, list[str]]) -> dict[str, Any]:
        return {"protocol": "oidc", "issuer": self.url, "client_id": self.client_id, "client_secret": self.client_secret,
                "authorization_endpoint": self.url + "/authorize", "token_endpoint": self.url + "/token",
                "jwks_uri": self.url + "/jwks", "group_roles": group_roles}

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != self.client_id or q.get("code_challenge_method") != "S256":
            raise web.HTTPBadRequest(text="bad authorization request")
        code = secrets.token_urlsafe(16)
        self._codes[code] = {"challenge": q["code_challenge"], "nonce": q["nonce"], "redirect_uri": q["redirect_uri"]}
        raise web.HTTPFound(f"{q['redirect_uri']}?{urllib.parse.urlencode({'code': code, 'state': q['state']})}")

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = self._codes.pop(str(form.get("code")), None)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if (grant is None or challenge != grant["challenge"] or form.get("client_secret") != self.client_secret
                or form.get("redirect_uri") != grant["redirect_uri"]):
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        claims = {**self.user, "iss": self.url, "aud": self.audience or self.client_id, "nonce": grant["nonce"],
                  "iat": now, "exp": now + 300}
        id_token = jwt.encode({"alg": "RS256", "kid": "test-idp-1"}, claims, self.key)
        if self.tamper:  # the payload changed after signing: a group the provider never asserted
            header, payload, signature = id_token.split(".")
            body = base64.urlsafe_b64decode(payload + "==").replace(b"sec-team", b"admins!!")
            id_token = ".".join([header, base64.urlsafe_b64encode(body).rstrip(b"=").decode(), signature])
        return web.json_response({"id_token": id_token, "access_token": "opaque", "token_type": "Bearer"})

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.key.as_dict(private=False)]})
