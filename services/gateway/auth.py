"""Authentication at the edge: operators by bearer token, agents by RFC 9421 signatures.

Failures say only "unauthorized", the same for every cause, so they reveal nothing about
which tokens or devices exist. The cause goes to the log and to the audit trail.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.crypto import httpsig, tokens
from shared.events import Actor
from shared.rpc import ProblemError

from .store import GatewayStore

PROVIDER_TENANT = "provider"


@dataclass(frozen=True)
class Principal:
    kind: str  # "user" (token holder), "bootstrap", "device"
    id: str
    tenant_id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    auth: str = "token"

    @property
    def actor(self) -> Actor:
        return Actor(kind=self.kind, id=self.id, auth=self.auth)  # type: ignore[arg-type]


class Unauthorized(ProblemError):
    def __init__(self, cause: str):
        super().__init__(401, "Unauthorized", "missing or invalid credentials")
        self.cause = cause


class TokenAuthenticator:
    """Resolves bearer tokens; results are cached briefly and dropped on revocation events."""

    def __init__(self, store: GatewayStore, *, bootstrap_digest: str | None):
        self._store = store
        self._bootstrap_digest = bootstrap_digest
        self._cache: dict[str, dict[str, Any]] = {}

    async def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or len(header) > 512:
            raise Unauthorized("no bearer token")
        digest = tokens.digest(header[7:].strip())
        if self._bootstrap_digest is not None and tokens.same(digest, self._bootstrap_digest):
            return Principal("bootstrap", "bootstrap", PROVIDER_TENANT, frozenset({"provider_admin"}), "bootstrap")
        doc = self._cache.get(digest)
        if doc is None:
            doc = await self._store.token_by_digest(digest)
            if doc is None:
                raise Unauthorized("unknown token")
            self._cache[digest] = doc
            if len(self._cache) > 10_000:
                self._cache.pop(next(iter(self._cache)))
        if doc.get("revoked"):
            raise Unauthorized("revoked token")
        expires = doc.get("expires_at")
        if expires is not None and expires <= datetime.now(UTC):
            raise Unauthorized("expired token")
        return Principal("user", doc["token_id"], doc["tenant_id"], frozenset(doc["roles"]), "token")

    def forget(self, token_id: str) -> None:
        for digest, doc in list(self._cache.items()):
            if doc["token_id"] == token_id:
                del self._cache[digest]


_KEYID = re.compile(r'keyid="([^"]{1,200})"')


class DeviceAuthenticator:
    """Verifies an agent's signed request and refuses stale, replayed or revoked ones."""

    def __init__(self, store: GatewayStore, *, max_age_seconds: int):
        self._store = store
        self._max_age = max_age_seconds
        self._devices: dict[tuple[str, str], dict[str, Any]] = {}

    async def device(self, tenant_id: str, device_id: str) -> dict[str, Any] | None:
        entry = (tenant_id, device_id)
        doc = self._devices.get(entry)
        if doc is None:
            doc = await self._store.devices.find_one(tenant_id, {"device_id": device_id})
            if doc is not None:
                self._devices[entry] = doc
        return doc

    def forget(self, tenant_id: str, device_id: str) -> None:
        self._devices.pop((tenant_id, device_id), None)

    async def authenticate(self, request: web.Request, body: bytes) -> Principal:
        match = _KEYID.search(request.headers.get("Signature-Input", ""))
        if match is None or "/" not in match.group(1):
            raise Unauthorized("no signature key id")
        tenant_id, _, device_id = match.group(1).partition("/")
        device = await self.device(tenant_id, device_id)
        if device is None or device["status"] != "active":
            raise Unauthorized("unknown or revoked device")
        public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(device["public_key"]))
        try:
            verified = httpsig.verify_request(
                method=request.method,
                url=str(request.url),
                headers=request.headers,
                body=body,
                resolve_public_key=lambda kid: public_key if kid == match.group(1) else None,
                max_age_seconds=self._max_age,
            )
        except httpsig.SignatureError as exc:
            raise Unauthorized(f"signature: {exc.reason}") from None
        expires = datetime.fromtimestamp(verified.created, UTC) + timedelta(seconds=self._max_age + 120)
        if not await self._store.remember_nonce(tenant_id, device_id, verified.nonce, expires):
            raise Unauthorized("replayed nonce")
        return Principal("device", device_id, tenant_id, frozenset(), "signature")
