"""Local metadata servers with the clouds' real paths, headers and token flows, on loopback.

* `AwsImds`: IMDSv2 only. `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds`
  (1–21600) and returns a session token; the identity document and its `rsa2048` signature are
  served only with a live `X-aws-ec2-metadata-token`, else 401, as IMDS does with v1 disabled.
* `GcpMetadata`: the identity endpoint needs `Metadata-Flavor: Google` (else 403) and an
  `audience`; it mints a token for that audience (claims per `format=full`) and answers with
  `Metadata-Flavor: Google`.
* `AzureImds`: the attested document needs `Metadata: true` and an `api-version` (else 400); it
  signs the requested nonce into the document and replies `{"encoding": "pkcs7", "signature"}`.

Each serves what the test sets (`document`, `rsa2048`, `token_for`, `sign`), so a test can hand
the agent a tampered, foreign or replayed piece of evidence.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

from aiohttp import web

from tests import cloud_fixtures as fx
from tests.e2e.local_http import LocalHttpServer


class AwsImds(LocalHttpServer):
    def __init__(self, document: bytes | None = None, rsa2048: str | None = None) -> None:
        self.document = document if document is not None else fx.aws_document()
        self.rsa2048 = rsa2048 if rsa2048 is not None else fx.aws_sign(self.document)
        self.tokens: set[str] = set()
        self.issue_live_tokens = True  # False: tokens are handed out but never accepted (expired at once)
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, carried a live token)

    def routes(self, app: web.Application) -> None:
        app.router.add_put("/latest/api/token", self._token)
        app.router.add_get("/latest/dynamic/instance-identity/document", self._document)
        app.router.add_get("/latest/dynamic/instance-identity/rsa2048", self._rsa2048)

    async def _token(self, request: web.Request) -> web.Response:
        ttl = request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return web.Response(status=400)
        token = secrets.token_urlsafe(32)
        if self.issue_live_tokens:
            self.tokens.add(token)
        self.requests.append(("PUT", request.path, False))
        return web.Response(text=token, headers={"X-aws-ec2-metadata-token-ttl-seconds": ttl})

    def _authorised(self, request: web.Request) -> bool:
        live = request.headers.get("X-aws-ec2-metadata-token", "") in self.tokens
        self.requests.append((request.method, request.path, live))
        return live

    async def _document(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=401)
        return web.Response(body=self.document, content_type="text/plain")

    async def _rsa2048(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=401)
        folded = "\n".join(self.rsa2048[i:i + 64] for i in range(0, len(self.rsa2048), 64))
        return web.Response(text=folded)


class GcpMetadata(LocalHttpServer):
    def __init__(self, token_for: Callable[[str], str] | None = None) -> None:
        self.token_for = token_for or (lambda audience: fx.gcp_token(audience))
        self.audiences: list[str] = []
        self.flavor_header = True  # False: answer as something that is not Google's metadata server

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/computeMetadata/v1/instance/service-accounts/default/identity", self._identity)

    async def _identity(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403, text="Missing Metadata-Flavor:Google header.")
        audience = request.query.get("audience", "")
        if not audience or request.query.get("format") != "full":
            return web.Response(status=400, text="non-empty audience and format=full required")
        self.audiences.append(audience)
        headers = {"Metadata-Flavor": "Google"} if self.flavor_header else {}
        return web.Response(text=self.token_for(audience), headers=headers)


class AzureImds(LocalHttpServer):
    def __init__(self, sign: Callable[[str], str] | None = None) -> None:
        self.sign = sign or (lambda nonce: fx.azure_sign(fx.azure_document(nonce)))
        self.nonces: list[str] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/metadata/attested/document", self._attested)

    async def _attested(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata") != "true" or not request.query.get("api-version"):
            return web.json_response({"error": "Bad request"}, status=400)
        nonce = request.query.get("nonce", "")
        if len(nonce) > 32 or not nonce.isalnum():
            return web.json_response({"error": "Bad request. Invalid nonce"}, status=400)
        self.nonces.append(nonce)
        return web.Response(text=json.dumps({"encoding": "pkcs7", "signature": self.sign(nonce)}),
                            content_type="application/json")
