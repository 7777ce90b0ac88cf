"""Authentication at the edge: operators by bearer token, agents by RFC 9421 signatures.

Failures say only "unauthorized", the same for every cause, so they reveal nothing about
which tokens or devices exist. The cause goes to the log and to the audit trail.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.cache_drops import Drops
from shared.crypto import httpsig, tokens
from shared.events import Actor
from shared.rpc import ProblemError

from .accounts import rules, sessions
from .accounts.store import AccountStore
from .permissions import allowed
from .store import GatewayStore

PROVIDER_TENANT = "provider"
SESSION_PREFIX = "sr_ses"


@dataclass(frozen=True)
class Principal:
    kind: str  # "user", "provider" (a provider-tenant user), "service" (service account), "bootstrap", "device"
    id: str  # the user id for every user credential: one person's sessions and tokens are one actor
    tenant_id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    auth: str = "token"  # password, password+totp, password+recovery_code, oidc, saml, token, ...
    credential_id: str | None = None  # the session or token that authenticated this request
    scopes: frozenset[str] | None = None  # a token's permissions; None: the owner's roles decide
    second_person: bool = False  # a small-team user holding conflicting roles: acts only co-signed
    mfa: bool = False  # the credential is MFA-verified (a session with TOTP, or a token minted from one)
    withheld: frozenset[str] = field(default_factory=frozenset)  # roles held but idle until MFA is verified

    @property
    def actor(self) -> Actor:
        return Actor(kind=self.kind, id=self.id, auth=self.auth)  # type: ignore[arg-type]

    def may(self, permission: str) -> bool:
        return allowed(permission, self.roles) and rules.scope_allows(permission, self.scopes)

    def may_once_mfa(self, permission: str) -> bool:
        """Refused now, but the roles waiting for MFA would allow it: the fix is to enrol or use TOTP."""
        return allowed(permission, self.withheld) and rules.scope_allows(permission, self.scopes)


class Unauthorized(ProblemError):
    """A refused credential or signature. `tenant_id` and `actor` are set only once the device or
    credential the request names was found in that tenant: only then is the refusal that tenant's
    to audit (its actor marked unverified); any other refusal is the provider's (see `app.py`)."""

    def __init__(self, cause: str, *, tenant_id: str | None = None, actor: Actor | None = None):
        super().__init__(401, "Unauthorized", "missing or invalid credentials")
        self.cause = cause
        self.tenant_id, self.actor = tenant_id, actor


UNVERIFIED = "unverified"


def refused(cause: str, tenant_id: str, kind: str, actor_id: str) -> Unauthorized:
    """A refusal of a credential or device found in `tenant_id`: audited there, as unverified."""
    return Unauthorized(cause, tenant_id=tenant_id, actor=Actor(kind=kind, id=actor_id, auth=UNVERIFIED))  # type: ignore[arg-type]


class RateLimited(ProblemError):
    def __init__(self, retry_after: int, detail: str = "too many requests; retry later"):
        super().__init__(429, "Too Many Requests", detail)
        self.headers = {"Retry-After": str(retry_after)}


_CACHE_MAX = 10_000


def _remember(cache: dict, key: Any, value: Any) -> None:
    cache[key] = value
    if len(cache) > _CACHE_MAX:
        cache.pop(next(iter(cache)))


class TokenAuthenticator:
    """Resolves bearer credentials (sessions, personal and service tokens, the bootstrap
    credential) to a principal whose id is the owning user. Documents are cached briefly and
    dropped on revocation, role and tenant events (see `app.py`).

    SECURITY: a read in flight when such an event arrives is not cached (`shared.cache_drops`):
    the credential it read may have just been revoked, and caching it would keep it usable here."""

    def __init__(self, store: AccountStore, *, bootstrap_digest: str | None,
                 idle_seconds: int = 900, absolute_seconds: int = 8 * 3600):
        self._store = store
        self._bootstrap_digest = bootstrap_digest
        self._idle, self._absolute = idle_seconds, absolute_seconds
        self._cache: dict[str, dict[str, Any]] = {}  # token digest -> token doc
        self._sessions: dict[str, dict[str, Any]] = {}  # session digest -> session doc
        self._users: dict[tuple[str, str], dict[str, Any]] = {}
        self._tenants: dict[str, dict[str, Any]] = {}
        self._drops = Drops()
        self._bootstrapped = False
        # Told of every dropped credential, user or tenant (the tenant when known): open event
        # streams re-check their credential at once (bound in `app.py`).
        self.on_change: Callable[[str | None], None] = lambda tenant_id: None

    async def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or len(header) > 512:
            raise Unauthorized("no bearer token")
        return await self.resolve(header[7:].strip())

    async def resolve(self, credential: str) -> Principal:
        digest = tokens.digest(credential)
        if self._bootstrap_digest is not None and tokens.same(digest, self._bootstrap_digest):
            # SECURITY: the bootstrap credential creates the first admin, then never works again.
            if self._bootstrapped or await self._store.bootstrapped():
                self._bootstrapped = True
                raise refused("bootstrap credential used after bootstrap", PROVIDER_TENANT, "bootstrap", "bootstrap")
            return Principal("bootstrap", "bootstrap", PROVIDER_TENANT, frozenset({"bootstrap"}), "bootstrap")
        if credential.startswith(SESSION_PREFIX):
            return await self._session(digest)
        return await self._token(digest)

    def mark_bootstrapped(self) -> None:
        self._bootstrapped = True

    async def _session(self, digest: str) -> Principal:
        doc = self._sessions.get(digest)
        if doc is None:
            mark = self._drops.mark()
            doc = await self._store.session_by_digest(digest)
            if doc is None:
                raise Unauthorized("unknown session")
            if self._drops.unchanged(mark):
                _remember(self._sessions, digest, doc)
        now = datetime.now(UTC)
        reason = sessions.ended(doc, now, idle_seconds=self._idle, absolute_seconds=self._absolute)
        if reason is not None:
            self._sessions.pop(digest, None)
            raise refused(reason, doc["tenant_id"], "user", doc["user_id"])
        if sessions.should_touch(doc, now):
            doc["last_seen"] = now
            await self._store.touch_session(doc["tenant_id"], doc["session_id"], now)
        return await self._principal(doc["tenant_id"], doc["user_id"], auth=doc["auth"], mfa=doc["mfa"],
                                     credential_id=doc["session_id"], scopes=None, issued_at=doc["created_at"])

    async def _token(self, digest: str) -> Principal:
        doc = self._cache.get(digest)
        if doc is None:
            mark = self._drops.mark()
            doc = await self._store.token_by_digest(digest)
            if doc is None:
                raise Unauthorized("unknown token")
            if self._drops.unchanged(mark):
                _remember(self._cache, digest, doc)
        holder = doc.get("user_id") or doc["token_id"]
        reason = sessions.token_ended(doc, datetime.now(UTC),
                                      max_days=sessions.token_max_days(await self.tenant(doc["tenant_id"])))
        if reason is not None:
            raise refused(reason, doc["tenant_id"], "user", holder)
        if not doc.get("user_id"):
            raise refused("token without an owner", doc["tenant_id"], "user", holder)
        owner = await self.user(doc["tenant_id"], doc["user_id"])
        if owner is not None and not rules.token_may_act(doc, owner):
            raise refused("service token without a second admin's confirmation", doc["tenant_id"], "user", holder)
        scopes = frozenset(doc["scopes"]) if doc.get("scopes") else None
        # A token is MFA-verified only if minted from an MFA-verified credential; a service
        # account's names its admins in `actor.auth`.
        return await self._principal(doc["tenant_id"], doc["user_id"], auth=rules.token_auth(doc),
                                     mfa=bool(doc.get("mfa")), credential_id=doc["token_id"], scopes=scopes,
                                     issued_at=doc["created_at"])

    async def _principal(self, tenant_id: str, user_id: str, *, auth: str, mfa: bool,
                         credential_id: str, scopes: frozenset[str] | None, issued_at: datetime) -> Principal:
        tenant = await self.tenant(tenant_id)
        if tenant is None or tenant.get("status", "active") != "active":
            raise refused("tenant not active", tenant_id, "user", user_id)
        user = await self.user(tenant_id, user_id)
        if user is None or user.get("status") != "active":
            raise refused("user not active", tenant_id, "user", user_id)
        ended = sessions.ended_by_user_change(issued_at, user)
        if ended is not None:
            raise refused(ended, tenant_id, "user", user_id)
        roles = frozenset(user.get("roles", ()))
        small_team = bool(tenant.get("settings", {}).get("small_team"))
        kind = "provider" if tenant.get("kind") == "provider" else "user"
        if user.get("account") == "service":
            kind = "service"
        return Principal(
            kind, user_id, tenant_id, rules.effective_roles(roles, mfa_satisfied=mfa), auth,
            credential_id=credential_id, scopes=scopes,
            second_person=rules.needs_second_person(roles, small_team=small_team), mfa=mfa,
            withheld=roles if rules.needs_mfa(roles) and not mfa else frozenset(),
        )

    async def user(self, tenant_id: str, user_id: str) -> dict[str, Any] | None:
        doc = self._users.get((tenant_id, user_id))
        if doc is None:
            mark = self._drops.mark()
            doc = await self._store.user(tenant_id, user_id)
            if doc is not None and self._drops.unchanged(mark):
                _remember(self._users, (tenant_id, user_id), doc)
        return doc

    async def tenant(self, tenant_id: str) -> dict[str, Any] | None:
        doc = self._tenants.get(tenant_id)
        if doc is None:
            mark = self._drops.mark()
            doc = await self._store.tenant(tenant_id)
            if doc is not None and self._drops.unchanged(mark):
                _remember(self._tenants, tenant_id, doc)
        return doc

    def forget(self, token_id: str) -> None:
        self._drops.note()
        for digest, doc in list(self._cache.items()):
            if doc["token_id"] == token_id:
                del self._cache[digest]
        self.on_change(None)

    def forget_session(self, session_id: str) -> None:
        self._drops.note()
        for digest, doc in list(self._sessions.items()):
            if doc["session_id"] == session_id:
                del self._sessions[digest]
        self.on_change(None)

    def forget_user(self, tenant_id: str, user_id: str) -> None:
        self._drops.note()
        self._users.pop((tenant_id, user_id), None)
        self.on_change(tenant_id)

    def forget_tenant(self, tenant_id: str) -> None:
        self._drops.note()
        self._tenants.pop(tenant_id, None)
        self.on_change(tenant_id)


_KEYID = re.compile(r'keyid="([^"]{1,200})"')


@functools.lru_cache(maxsize=_CACHE_MAX)
def _public_key(encoded: str) -> Ed25519PublicKey:
    """A device's key, decoded once per key (whether the device may still use it is checked apart)."""
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded))


class DeviceAuthenticator:
    """Verifies an agent's signed request and refuses stale, replayed or revoked ones.

    SECURITY: a device read in flight when its revocation arrives is not cached (see
    `shared.cache_drops`), or the revoked device would stay usable on this replica."""

    def __init__(self, store: GatewayStore, *, max_age_seconds: int):
        self._store = store
        self._max_age = max_age_seconds
        self._devices: dict[tuple[str, str], dict[str, Any]] = {}
        self._drops = Drops()

    async def device(self, tenant_id: str, device_id: str) -> dict[str, Any] | None:
        entry = (tenant_id, device_id)
        doc = self._devices.get(entry)
        if doc is None:
            mark = self._drops.mark()
            doc = await self._store.device(tenant_id, device_id)
            if doc is not None and self._drops.unchanged(mark):
                self._devices[entry] = doc
        return doc

    def forget(self, tenant_id: str, device_id: str) -> None:
        self._drops.note()
        self._devices.pop((tenant_id, device_id), None)

    async def authenticate(self, request: web.Request, body: bytes) -> Principal:
        match = _KEYID.search(request.headers.get("Signature-Input", ""))
        if match is None or "/" not in match.group(1):
            raise Unauthorized("no signature key id")
        tenant_id, _, device_id = match.group(1).partition("/")
        device = await self.device(tenant_id, device_id)
        if device is None:
            raise Unauthorized("unknown device")  # the key id names nothing: not that tenant's to audit
        if device["status"] != "active":
            raise refused("revoked device", tenant_id, "device", device_id)
        public_key = _public_key(device["public_key"])
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
            raise refused(f"signature: {exc.reason}", tenant_id, "device", device_id) from None
        expires = datetime.fromtimestamp(verified.created, UTC) + timedelta(seconds=self._max_age + 120)
        if not await self._store.remember_nonce(tenant_id, device_id, verified.nonce, expires):
            raise refused("replayed nonce", tenant_id, "device", device_id)
        return Principal("device", device_id, tenant_id, frozenset(), "signature")
