"""What the accounts views share: their dependencies, event fields, new users, user views, and
the two ends of every sign-in (a counted failure, a started session)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from shared import events
from shared.crypto import tokens
from shared.rpc import NotFound, ProblemError

from ..auth import SESSION_PREFIX
from ..datakey import SecretSealer, load_data_key
from ..mail import Mailer
from ..ratelimit import ALL_SOURCES, RateLimiter, SignInLimits
from ..settings import GatewaySettings
from ..state import CORRELATION_ID, GATEWAY, PRINCIPAL, REFUSAL_RECORDED, Gateway, _now
from . import mfa, passwords
from .store import AccountStore

log = structlog.get_logger("strongroom.gateway.accounts")


@dataclass
class Accounts:
    """The accounts area's own dependencies, bound once in `app.py`."""

    hasher: passwords.Hasher
    hash_slots: asyncio.Semaphore
    login_by_address: RateLimiter
    sealer: SecretSealer  # TOTP and SSO client secrets are stored sealed under the data key
    mailer: Mailer  # invitations to invitees, notices to admins

    @classmethod
    def from_settings(cls, s: GatewaySettings) -> Accounts:
        return cls(
            hasher=passwords.Hasher(time_cost=s.password_time_cost, memory_kib=s.password_memory_kib,
                                    parallelism=s.password_parallelism),
            hash_slots=asyncio.Semaphore(s.password_hash_concurrency),
            login_by_address=RateLimiter(burst=s.login_rate_burst, per_second=s.login_rate_per_second),
            sealer=SecretSealer(load_data_key(s.data_key_file)),
            mailer=Mailer(s),
        )

    def seal_totp(self, secret: str, *, tenant_id: str, user_id: str) -> str:
        return self.sealer.seal(secret, purpose="totp", tenant_id=tenant_id, owner=user_id)

    def open_totp(self, sealed: str, *, tenant_id: str, user_id: str) -> str:
        return self.sealer.open(sealed, purpose="totp", tenant_id=tenant_id, owner=user_id)

    async def hash(self, password: str) -> str:
        async with self.hash_slots:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, encoded: str | None, password: str) -> bool:
        async with self.hash_slots:
            return await asyncio.to_thread(self.hasher.verify, encoded, password)


ACCOUNTS = web.AppKey("accounts", Accounts)


def context(request: web.Request) -> tuple[Gateway, Accounts]:
    return request.app[GATEWAY], request.app[ACCOUNTS]


def account_store(gw: Gateway) -> AccountStore:
    return gw.store.accounts


def event_fields(request: web.Request, tenant_id: str, actor: events.Actor | None = None) -> dict[str, Any]:
    principal = request.get(PRINCIPAL)
    return {
        "tenant_id": tenant_id,
        "actor": actor or (principal.actor if principal else events.Actor(kind="user", id="anonymous")),
        "correlation_id": request[CORRELATION_ID],
        "source_ip": request.remote,
    }


def check_password(password: str, username: str) -> None:
    reason = passwords.weakness(password, username=username)
    if reason is not None:
        raise ProblemError(422, "Unprocessable Content", f"password {reason}", "password")


def new_setup_token(gw: Gateway) -> tuple[str, dict[str, Any]]:
    token = tokens.new_token("sr_setup")
    expires = _now() + timedelta(seconds=gw.settings.setup_token_ttl_seconds)
    return token, {"setup_digest": tokens.digest(token), "setup_expires_at": expires}


def new_user(*, username: str, roles: list[str], account: str = "person", source: str = "local",
              pending: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": events.new_id("usr_"), "username": username, "account": account, "roles": roles,
        "pending": pending or [], "status": "active", "source": source, "created_at": _now(), "rev": 0,
        "mfa": None, "recovery": [], **extra,
    }


def user_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": doc["user_id"], "username": doc["username"], "account": doc.get("account", "person"),
        "roles": doc.get("roles", []), "status": doc.get("status"), "source": doc.get("source"),
        "pending_roles": [{"role": p["role"], "granted_by": p["granted_by"]} for p in doc.get("pending", [])],
        "mfa_enrolled": bool((doc.get("mfa") or {}).get("confirmed")),
        "password_set": bool(doc.get("password_hash")), "created_at": doc.get("created_at"),
        "email": doc.get("email"), "invitation": doc.get("invitation"),
    }


async def user_or_404(gw: Gateway, tenant_id: str, user_id: str) -> dict[str, Any]:
    doc = await account_store(gw).user(tenant_id, user_id)
    if doc is None:
        raise NotFound("user", "user_id")
    return doc


async def acting_user(gw: Gateway, principal: Any) -> dict[str, Any] | None:
    """The acting principal's own user document (None for a credential that is no user)."""
    return await account_store(gw).user(principal.tenant_id, principal.id)


async def tenant_kind(gw: Gateway, tenant_id: str) -> tuple[str, bool]:
    doc = await account_store(gw).tenant(tenant_id)
    return (doc or {}).get("kind", "customer"), bool((doc or {}).get("settings", {}).get("small_team"))


async def sign_in_failed(request: web.Request, gw: Gateway, tenant_id: str, username: str, user: dict | None,
                  method: str, reason: str, *, count: bool = True) -> None:
    if count:
        await _count_failure(gw, tenant_id, username, source_address(request))
    user_id = user["user_id"] if user else None
    request[REFUSAL_RECORDED] = True  # this failure's audit record is the one below
    await gw.store.record_event(tenant_id, events.UserLoginFailed(
        **event_fields(request, tenant_id, events.Actor(kind="user", id=user_id or "unknown", auth=method)),
        user_id=user_id, username=username, method=method, reason=reason))
    log.info("login_failed", tenant_id=tenant_id, reason=reason)


def source_address(request: web.Request) -> str:
    """The socket peer: sign-in failures are counted per (username, this address)."""
    return request.remote or "unknown"


async def _count_failure(gw: Gateway, tenant_id: str, username: str, source: str) -> None:
    """One failure on the (name, address) counter and on the name's counter across addresses;
    either locks at its threshold (see `SignInLimits`)."""
    limits = SignInLimits.from_settings(gw.settings)
    now = _now()
    store = account_store(gw)
    counters = await asyncio.gather(*(store.count_failed_sign_in(tenant_id, username, counter_source, now=now,
                                                                 window_ends=now + limits.window)
                                      for counter_source in (source, ALL_SOURCES)))
    for counter in counters:
        until = limits.lock_after(counter, now)
        if until is not None:
            await store.lock_sign_in(tenant_id, username, counter["source"], until=until,
                                     expires_at=max(until, counter["expires_at"]))


async def start_session(request: web.Request, gw: Gateway, user: dict, *, method: str, mfa: bool) -> dict[str, Any]:
    token = tokens.new_token(SESSION_PREFIX)
    now = _now()
    doc = {"session_id": events.new_id("ses_"), "digest": tokens.digest(token), "user_id": user["user_id"],
           "auth": method, "mfa": mfa, "created_at": now, "last_seen": now, "ended_at": None}
    await account_store(gw).insert_session(user["tenant_id"], doc, events.UserLoggedIn(
        **event_fields(request, user["tenant_id"], events.Actor(kind="user", id=user["user_id"], auth=method)),
        user_id=user["user_id"], method=method, session_id=doc["session_id"]))
    return {
        "session_token": token, "session_id": doc["session_id"], "tenant_id": user["tenant_id"],
        "user_id": user["user_id"], "username": user["username"], "roles": user["roles"], "auth": method,
        "idle_timeout_seconds": gw.settings.session_idle_seconds,
        "expires_at": (now + timedelta(seconds=gw.settings.session_absolute_seconds)).isoformat(),
    }


async def fresh_totp(request: web.Request, user: dict[str, Any], code: str, method: str) -> bool:
    """Step-up: whether `code` is a current TOTP code of `user` (tenant_id set) not used before. A
    wrong or replayed code is audited and counts toward the sign-in lockout like a failed sign-in."""
    gw, acc = context(request)
    tenant_id, user_id = user["tenant_id"], user["user_id"]
    secret = acc.open_totp(user["mfa"]["secret"], tenant_id=tenant_id, user_id=user_id)
    step = mfa.matching_step(secret, code, _now(), last_step=user["mfa"].get("last_step"))
    # SECURITY: as at sign-in, the step only moves forward: a code is good once.
    if step is not None and await account_store(gw).advance_totp_step(tenant_id, user_id, step):
        return True
    await sign_in_failed(request, gw, tenant_id, user["username"], user, method, "bad or replayed TOTP code")
    return False
