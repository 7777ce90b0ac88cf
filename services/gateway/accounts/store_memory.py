"""An in-memory twin of `AccountStore` (plain dicts) for fast view tests; same methods, same answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from copy import deepcopy
from datetime import datetime
from typing import Any

from shared.events import Event

from ..ratelimit import ALL_SOURCES

Publish = Callable[[Event], Awaitable[None]]


def _copy(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    return deepcopy(doc) if doc is not None else None


class MemoryAccountStore:
    def __init__(self, *, publish: Publish):
        self._publish = publish
        self.tenants: dict[str, dict[str, Any]] = {}
        self.users: dict[tuple[str, str], dict[str, Any]] = {}
        self.tokens: dict[tuple[str, str], dict[str, Any]] = {}
        self.sessions: dict[tuple[str, str], dict[str, Any]] = {}
        self.attempts: dict[tuple[str, str, str], dict[str, Any]] = {}  # (tenant, username, source)
        self.sso_states: dict[str, dict[str, Any]] = {}
        self.assertions: set[tuple[str, str]] = set()
        self.mail_outbox: dict[tuple[str, str], dict[str, Any]] = {}
        self.bootstrap: dict[str, Any] | None = None

    async def _emit(self, *evts: Event) -> None:
        for event in evts:
            await self._publish(event)

    async def create_indexes(self) -> None:
        return None

    # --- bootstrap ---

    async def bootstrapped(self) -> bool:
        return self.bootstrap is not None

    async def bootstrap_tenant(self) -> str | None:
        return self.bootstrap["tenant_id"] if self.bootstrap else None

    async def mark_bootstrapped(self, tenant_id: str, user_id: str, at: datetime) -> bool:
        if self.bootstrap is not None:
            return False
        self.bootstrap = {"tenant_id": tenant_id, "user_id": user_id, "at": at}
        return True

    # --- tenants ---

    async def insert_tenant(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        self.tenants[tenant_id] = {**deepcopy(doc), "tenant_id": tenant_id}
        await self._emit(event)

    async def tenant(self, tenant_id: str) -> dict[str, Any] | None:
        return _copy(self.tenants.get(tenant_id))

    async def sign_in_tenants(self, tenant: str) -> list[str]:
        if tenant in self.tenants:
            return [tenant]
        return [tid for tid, doc in self.tenants.items() if doc.get("name") == tenant][:2]

    async def customer_tenant(self, tenant_id: str) -> dict[str, Any] | None:
        doc = self.tenants.get(tenant_id)
        return _copy(doc) if doc is not None and doc.get("kind") != "provider" else None

    async def customer_tenants(self) -> list[dict[str, Any]]:
        docs = [d for d in self.tenants.values() if d.get("kind") != "provider"]
        return deepcopy(sorted(docs, key=lambda d: d["created_at"]))

    async def change_tenant_status(self, tenant_id: str, *, was: str, now: str, at: datetime, event: Event) -> bool:
        doc = self.tenants.get(tenant_id)
        if doc is None or doc["status"] != was:
            return False
        doc.update({"status": now, f"{now}_at": at})
        await self._emit(event)
        return True

    async def apply_settings(self, tenant_id: str, settings: dict[str, Any], event: Event) -> None:
        doc = self.tenants.get(tenant_id)
        if doc is not None:
            doc.setdefault("settings", {}).update(deepcopy(settings))
            await self._emit(event)

    async def hold_settings_change(self, tenant_id: str, change: dict[str, Any], event: Event) -> None:
        doc = self.tenants.get(tenant_id)
        if doc is not None:
            doc.setdefault("pending_settings", []).append(deepcopy(change))
            await self._emit(event)

    async def confirm_settings_change(self, tenant_id: str, change_id: str, settings: dict[str, Any],
                                      event: Event) -> bool:
        doc = self.tenants.get(tenant_id)
        pending = (doc or {}).get("pending_settings", [])
        if doc is None or not any(c["change_id"] == change_id for c in pending):
            return False
        doc.setdefault("settings", {}).update(deepcopy(settings))
        doc["pending_settings"] = [c for c in pending if c["change_id"] != change_id]
        await self._emit(event)
        return True

    # --- users ---

    async def insert_user(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        self.users[(tenant_id, doc["user_id"])] = {**deepcopy(doc), "tenant_id": tenant_id}
        await self._emit(event)

    def _find_user(self, tenant_id: str, **match: Any) -> dict[str, Any] | None:
        return next((u for (t, _), u in self.users.items()
                     if t == tenant_id and all(u.get(k) == v for k, v in match.items())), None)

    async def user(self, tenant_id: str, user_id: str) -> dict[str, Any] | None:
        return _copy(self.users.get((tenant_id, user_id)))

    async def user_by_username(self, tenant_id: str, username: str) -> dict[str, Any] | None:
        return _copy(self._find_user(tenant_id, username=username))

    async def user_by_external_id(self, tenant_id: str, source: str, external_id: str) -> dict[str, Any] | None:
        return _copy(self._find_user(tenant_id, source=source, external_id=external_id))

    async def user_by_setup_digest(self, digest: str) -> dict[str, Any] | None:
        return _copy(next((u for u in self.users.values() if u.get("setup_digest") == digest), None))

    async def active_service_account(self, tenant_id: str, user_id: str) -> dict[str, Any] | None:
        return _copy(self._find_user(tenant_id, user_id=user_id, account="service", status="active"))

    async def list_users(self, tenant_id: str) -> list[dict[str, Any]]:
        docs = [u for (t, _), u in self.users.items() if t == tenant_id]
        return deepcopy(sorted(docs, key=lambda d: d["created_at"]))

    async def active_users(self, tenant_id: str) -> list[dict[str, Any]]:
        return [u for u in await self.list_users(tenant_id) if u.get("status") == "active"]

    async def count_active_users(self, tenant_id: str) -> int:
        return len(await self.active_users(tenant_id))

    async def _change_user(self, tenant_id: str, user_id: str, changes: dict[str, Any], *evts: Event,
                           rev: int | None = None, bump: bool = False, **match: Any) -> bool:
        doc = self.users.get((tenant_id, user_id))
        if doc is None or (rev is not None and doc.get("rev") != rev) or any(doc.get(k) != v for k, v in match.items()):
            return False
        doc.update(deepcopy(changes))
        if bump:
            doc["rev"] = doc.get("rev", 0) + 1
        await self._emit(*evts)
        return True

    async def set_roles(self, tenant_id: str, user_id: str, *, rev: int, roles: list[str],
                        pending: list[dict[str, Any]], evts: tuple[Event, ...],
                        since: dict[str, Any] | None = None) -> bool:
        return await self._change_user(tenant_id, user_id, {"roles": roles, "pending": pending, **(since or {})}, *evts,
                                       rev=rev, bump=True)

    async def sync_roles(self, tenant_id: str, user_id: str, roles: list[str], event: Event,
                         since: dict[str, Any] | None = None) -> None:
        await self._change_user(tenant_id, user_id, {"roles": roles, **(since or {})}, event, bump=True)

    async def queue_mail(self, tenant_id: str, doc: dict[str, Any]) -> None:
        self.mail_outbox[(tenant_id, doc["mail_id"])] = {**deepcopy(doc), "tenant_id": tenant_id}

    async def claim_mail(self, now: datetime, retry_at: datetime) -> dict[str, Any] | None:
        doc = next((d for d in self.mail_outbox.values() if d["next_at"] <= now), None)
        if doc is None:
            return None
        doc.update(next_at=retry_at, attempts=doc.get("attempts", 0) + 1)
        return deepcopy(doc)

    async def drop_mail(self, tenant_id: str, mail_id: str) -> None:
        self.mail_outbox.pop((tenant_id, mail_id), None)

    async def set_invitation(self, tenant_id: str, user_id: str, invitation: str,
                             setup: dict[str, Any] | None = None) -> None:
        user = self.users.get((tenant_id, user_id))
        if user is not None:
            user.update({"invitation": invitation, **deepcopy(setup or {})})

    async def disable_user(self, tenant_id: str, user_id: str, event: Event) -> None:
        await self._change_user(tenant_id, user_id, {"status": "disabled", "roles": [], "pending": []}, event, bump=True)

    async def end_credentials(self, tenant_id: str, user_id: str, at: datetime) -> None:
        doc = self.users.get((tenant_id, user_id))
        if doc is not None and (doc.get("credentials_after") is None or doc["credentials_after"] < at):
            doc["credentials_after"] = at

    async def set_first_password(self, tenant_id: str, user_id: str, setup_digest: str, encoded: str,
                                 event: Event) -> bool:
        if not await self._change_user(tenant_id, user_id, {"password_hash": encoded}, event, setup_digest=setup_digest):
            return False
        for name in ("setup_digest", "setup_expires_at"):
            self.users[(tenant_id, user_id)].pop(name, None)
        return True

    async def set_password(self, tenant_id: str, user_id: str, encoded: str, at: datetime, event: Event) -> None:
        await self._change_user(tenant_id, user_id, {"password_hash": encoded, "credentials_after": at}, event, bump=True)

    async def rehash_password(self, tenant_id: str, user_id: str, *, old: str, new: str) -> bool:
        return await self._change_user(tenant_id, user_id, {"password_hash": new}, password_hash=old)

    async def request_mfa_reset(self, tenant_id: str, user_id: str, *, rev: int, pending: dict[str, Any],
                                event: Event) -> bool:
        return await self._change_user(tenant_id, user_id, {"mfa_reset": pending}, event, rev=rev, bump=True)

    async def confirm_mfa_reset(self, tenant_id: str, user_id: str, *, rev: int, at: datetime, event: Event) -> bool:
        if not await self._change_user(tenant_id, user_id, {"mfa": None, "recovery": [], "credentials_after": at}, event,
                                       rev=rev, bump=True):
            return False
        self.users[(tenant_id, user_id)].pop("mfa_reset", None)
        return True

    async def begin_mfa(self, tenant_id: str, user_id: str, sealed_secret: str) -> None:
        await self._change_user(tenant_id, user_id, {"mfa": {"secret": sealed_secret, "confirmed": False, "last_step": None}})

    async def confirm_mfa(self, tenant_id: str, user_id: str, *, sealed_secret: str, step: int,
                          recovery: list[str], event: Event) -> bool:
        doc = self.users.get((tenant_id, user_id))
        mfa = (doc or {}).get("mfa") or {}
        if doc is None or mfa.get("confirmed") is not False or mfa.get("secret") != sealed_secret:
            return False
        doc["mfa"] = {**mfa, "confirmed": True, "last_step": step}
        doc["recovery"] = list(recovery)
        await self._emit(event)
        return True

    async def advance_totp_step(self, tenant_id: str, user_id: str, step: int) -> bool:
        doc = self.users.get((tenant_id, user_id))
        mfa = (doc or {}).get("mfa") or {}
        if doc is None or (mfa.get("last_step") is not None and mfa["last_step"] >= step):
            return False
        doc["mfa"] = {**mfa, "last_step": step}
        return True

    async def use_recovery_code(self, tenant_id: str, user_id: str, digest: str, event: Event) -> bool:
        doc = self.users.get((tenant_id, user_id))
        if doc is None or digest not in doc.get("recovery", []):
            return False
        doc["recovery"] = [d for d in doc["recovery"] if d != digest]
        await self._emit(event)
        return True

    # --- failed sign-ins ---

    async def sign_in_counters(self, tenant_id: str, username: str, source: str, now: datetime) -> list[dict[str, Any]]:
        return [deepcopy(doc) for key in ((tenant_id, username, source), (tenant_id, username, ALL_SOURCES))
                if (doc := self.attempts.get(key)) is not None and doc["expires_at"] > now]

    async def count_failed_sign_in(self, tenant_id: str, username: str, source: str, *, now: datetime,
                                   window_ends: datetime) -> dict[str, Any]:
        doc = self.attempts.get((tenant_id, username, source))
        if doc is None or doc["expires_at"] <= now:
            doc = self.attempts[(tenant_id, username, source)] = {
                "tenant_id": tenant_id, "username": username, "source": source, "failures": 0,
                "expires_at": window_ends, "locked_until": None}
        doc["failures"] += 1
        return deepcopy(doc)

    async def lock_sign_in(self, tenant_id: str, username: str, source: str, *, until: datetime,
                           expires_at: datetime) -> None:
        if (doc := self.attempts.get((tenant_id, username, source))) is not None:
            doc.update(locked_until=until, expires_at=expires_at)

    async def clear_failed_sign_ins(self, tenant_id: str, username: str, source: str, now: datetime) -> None:
        for key in [k for k, d in self.attempts.items()
                    if k[:2] == (tenant_id, username) and (k[2] == source or d["expires_at"] <= now)]:
            del self.attempts[key]

    # --- sessions ---

    async def insert_session(self, tenant_id: str, doc: dict[str, Any], *evts: Event) -> None:
        self.sessions[(tenant_id, doc["session_id"])] = {**deepcopy(doc), "tenant_id": tenant_id}
        await self._emit(*evts)

    async def session_by_digest(self, digest: str) -> dict[str, Any] | None:
        return _copy(next((s for s in self.sessions.values() if s["digest"] == digest), None))

    async def touch_session(self, tenant_id: str, session_id: str, at: datetime) -> None:
        if (tenant_id, session_id) in self.sessions:
            self.sessions[(tenant_id, session_id)]["last_seen"] = at

    async def end_session(self, tenant_id: str, session_id: str, at: datetime, *evts: Event) -> bool:
        doc = self.sessions.get((tenant_id, session_id))
        if doc is None or doc.get("ended_at") is not None:
            return False
        doc["ended_at"] = at
        await self._emit(*evts)
        return True

    async def upgrade_session_mfa(self, tenant_id: str, session_id: str, auth: str) -> None:
        if (tenant_id, session_id) in self.sessions:
            self.sessions[(tenant_id, session_id)].update(mfa=True, auth=auth)

    # --- API tokens ---

    async def insert_token(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        self.tokens[(tenant_id, doc["token_id"])] = {**deepcopy(doc), "tenant_id": tenant_id}
        await self._emit(event)

    async def token_by_digest(self, digest: str) -> dict[str, Any] | None:
        return _copy(next((t for t in self.tokens.values() if t["digest"] == digest), None))

    async def list_tokens(self, tenant_id: str, *, owner: str | None) -> list[dict[str, Any]]:
        docs = [t for (tid, _), t in self.tokens.items() if tid == tenant_id and owner in (None, t["user_id"])]
        return deepcopy(sorted(docs, key=lambda d: d["created_at"]))

    async def count_live_tokens(self, tenant_id: str) -> int:
        return sum(1 for (tid, _), t in self.tokens.items() if tid == tenant_id and not t["revoked"])

    async def revoke_token(self, tenant_id: str, token_id: str, *, owner: str | None, at: datetime,
                           event: Event) -> bool:
        doc = self.tokens.get((tenant_id, token_id))
        if doc is None or doc["revoked"] or owner not in (None, doc["user_id"]):
            return False
        doc.update(revoked=True, revoked_at=at)
        await self._emit(event)
        return True

    # --- single sign-on ---

    async def insert_sso_state(self, tenant_id: str, doc: dict[str, Any]) -> None:
        self.sso_states[doc["state"]] = {**deepcopy(doc), "tenant_id": tenant_id}

    async def take_sso_state(self, state: str) -> dict[str, Any] | None:
        return self.sso_states.pop(state, None)

    async def first_use_of_assertion(self, tenant_id: str, assertion_id: str, until: datetime) -> bool:
        if (tenant_id, assertion_id) in self.assertions:
            return False
        self.assertions.add((tenant_id, assertion_id))
        return True

    # --- service-account tokens waiting for a second admin ---

    async def token_requests(self, tenant_id: str) -> list[dict[str, Any]]:
        docs = [u for u in await self.active_users(tenant_id) if u.get("account") == "service"]
        return [{**r, "user_id": d["user_id"]} for d in docs for r in d.get("token_requests", [])]

    async def save_token_requests(self, tenant_id: str, user_id: str, *, rev: int, requests: list[dict[str, Any]],
                                  event: Event) -> bool:
        return await self._change_user(tenant_id, user_id, {"token_requests": requests}, event, rev=rev, bump=True,
                                       account="service", status="active")

    async def collect_token_request(self, tenant_id: str, user_id: str, *, rev: int, requests: list[dict[str, Any]],
                                    token: dict[str, Any], event: Event) -> bool:
        if not await self._change_user(tenant_id, user_id, {"token_requests": requests}, rev=rev, bump=True,
                                       account="service", status="active"):
            return False
        await self.insert_token(tenant_id, token, event)
        return True
