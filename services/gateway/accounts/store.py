"""The accounts store: tenants, users, API tokens, sessions, sign-in attempts and SSO state.

Every query the accounts views and the authenticators run is a method here, named for what it
does. Tokens, sessions, setup tokens and SSO states are looked up by digest or state before the
tenant is known (the digest is the credential); everything found that way carries its tenant id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from shared.events import Event
from shared.outbox import Outbox
from shared.store import DuplicateKeyError, TenantCollection

from ..ratelimit import ALL_SOURCES
from ..store_outbox import insert_staged, update_staged

_NOT_PROVIDER = {"kind": {"$ne": "provider"}}


class AccountStore:
    def __init__(self, db: AsyncDatabase, *, outbox: Outbox):
        self._outbox = outbox
        self.tenants = TenantCollection(db["tenants"])
        self.tokens = TenantCollection(db["tokens"])
        self.users = TenantCollection(db["users"])
        self.sessions = TenantCollection(db["sessions"])
        # One failure counter per (username, source address) and one per username (ALL_SOURCES).
        self.attempts = TenantCollection(db["sign_in_failures"])
        self.sso_states = TenantCollection(db["sso_states"])
        self.saml_assertions = TenantCollection(db["saml_assertions"])  # ids seen, until they expire
        self.mail_outbox = TenantCollection(db["mail_outbox"])  # admin notices the mail server did not take yet
        self.state = db["state"]  # gateway-wide facts (bootstrap done), not tenant data

    async def create_indexes(self) -> None:
        await self.tenants.raw.create_index([("tenant_id", ASCENDING)], unique=True)
        await self.tokens.raw.create_index([("digest", ASCENDING)], unique=True)
        await self.tokens.raw.create_index([("tenant_id", ASCENDING), ("token_id", ASCENDING)], unique=True)
        await self.users.raw.create_index([("tenant_id", ASCENDING), ("user_id", ASCENDING)], unique=True)
        await self.users.raw.create_index([("tenant_id", ASCENDING), ("username", ASCENDING)], unique=True)
        await self.users.raw.create_index([("setup_digest", ASCENDING)], unique=True, sparse=True)
        await self.sessions.raw.create_index([("digest", ASCENDING)], unique=True)
        await self.sessions.raw.create_index([("tenant_id", ASCENDING), ("session_id", ASCENDING)], unique=True)
        await self.attempts.raw.create_index([("tenant_id", ASCENDING), ("username", ASCENDING), ("source", ASCENDING)],
                                             unique=True)
        await self.sso_states.raw.create_index([("state", ASCENDING)], unique=True)
        await self.saml_assertions.raw.create_index([("tenant_id", ASCENDING), ("assertion_id", ASCENDING)], unique=True)
        await self.mail_outbox.raw.create_index([("next_at", ASCENDING)])

    # --- bootstrap ---

    async def bootstrapped(self) -> bool:
        return await self.state.find_one({"_id": "bootstrap"}) is not None

    async def bootstrap_tenant(self) -> str | None:
        """The tenant the bootstrap created (an enterprise deployment's only tenant)."""
        marker = await self.state.find_one({"_id": "bootstrap"})
        return marker["tenant_id"] if marker else None

    async def mark_bootstrapped(self, tenant_id: str, user_id: str, at: datetime) -> bool:
        """False if another request bootstrapped first (the insert is the compare-and-swap)."""
        try:
            await self.state.insert_one({"_id": "bootstrap", "tenant_id": tenant_id, "user_id": user_id, "at": at})
        except DuplicateKeyError:
            return False
        return True

    # --- tenants ---

    async def insert_tenant(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        await insert_staged(self._outbox, self.tenants, tenant_id, doc, event)

    async def tenant(self, tenant_id: str) -> dict[str, Any] | None:
        return await self.tenants.find_one(tenant_id, {})

    async def sign_in_tenants(self, tenant: str) -> list[str]:
        """The tenants a sign-in names: by id, else by name, at most two (two: the name is
        ambiguous). Deliberately across tenants, for sign-in only; the caller answers one id or a
        refusal, never the list."""
        if await self.tenants.find_one(tenant, {}) is not None:
            return [tenant]
        found = await self.tenants.raw.find({"name": tenant}, projection={"tenant_id": 1}, limit=2).to_list(2)
        return [doc["tenant_id"] for doc in found]

    async def customer_tenant(self, tenant_id: str) -> dict[str, Any] | None:
        return await self.tenants.find_one(tenant_id, _NOT_PROVIDER)

    async def customer_tenants(self) -> list[dict[str, Any]]:
        # Deliberately across tenants: the provider's view of its customers reads tenant documents only.
        return await self.tenants.raw.find(_NOT_PROVIDER, sort=[("created_at", 1)]).to_list(None)

    async def change_tenant_status(self, tenant_id: str, *, was: str, now: str, at: datetime, event: Event) -> bool:
        """Compare-and-swap on the status; False when the tenant changed meanwhile."""
        return await update_staged(self._outbox, self.tenants, tenant_id, {"status": was},
                                   {"$set": {"status": now, f"{now}_at": at}}, event)

    async def apply_settings(self, tenant_id: str, settings: dict[str, Any], event: Event) -> None:
        await update_staged(self._outbox, self.tenants, tenant_id, {},
                            {"$set": {f"settings.{k}": v for k, v in settings.items()}}, event)

    async def hold_settings_change(self, tenant_id: str, change: dict[str, Any], event: Event) -> None:
        await update_staged(self._outbox, self.tenants, tenant_id, {}, {"$push": {"pending_settings": change}}, event)

    async def confirm_settings_change(self, tenant_id: str, change_id: str, settings: dict[str, Any],
                                      event: Event) -> bool:
        """The pull is the compare-and-swap: two confirmations of one change apply it once."""
        return await update_staged(self._outbox, self.tenants, tenant_id, {"pending_settings.change_id": change_id},
                                   {"$set": {f"settings.{k}": v for k, v in settings.items()},
                                    "$pull": {"pending_settings": {"change_id": change_id}}}, event)

    # --- users ---

    async def insert_user(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        await insert_staged(self._outbox, self.users, tenant_id, doc, event)

    async def user(self, tenant_id: str, user_id: str) -> dict[str, Any] | None:
        return await self.users.find_one(tenant_id, {"user_id": user_id})

    async def user_by_username(self, tenant_id: str, username: str) -> dict[str, Any] | None:
        return await self.users.find_one(tenant_id, {"username": username})

    async def user_by_external_id(self, tenant_id: str, source: str, external_id: str) -> dict[str, Any] | None:
        return await self.users.find_one(tenant_id, {"source": source, "external_id": external_id})

    async def user_by_setup_digest(self, digest: str) -> dict[str, Any] | None:
        return await self.users.raw.find_one({"setup_digest": digest})

    async def active_service_account(self, tenant_id: str, user_id: str) -> dict[str, Any] | None:
        return await self.users.find_one(tenant_id, {"user_id": user_id, "account": "service", "status": "active"})

    async def list_users(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self.users.find(tenant_id, {}, sort=[("created_at", 1)])

    async def active_users(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self.users.find(tenant_id, {"status": "active"})

    async def count_active_users(self, tenant_id: str) -> int:
        return await self.users.count(tenant_id, {"status": "active"})

    async def set_roles(self, tenant_id: str, user_id: str, *, rev: int, roles: list[str],
                        pending: list[dict[str, Any]], evts: tuple[Event, ...],
                        since: dict[str, Any] | None = None) -> bool:
        """Roles and pending grants (and when an admin role took effect), compare-and-swap on the
        user's revision."""
        return await update_staged(self._outbox, self.users, tenant_id, {"user_id": user_id, "rev": rev},
                                   {"$set": {"roles": roles, "pending": pending, **(since or {})}, "$inc": {"rev": 1}},
                                   *evts)

    async def sync_roles(self, tenant_id: str, user_id: str, roles: list[str], event: Event,
                         since: dict[str, Any] | None = None) -> None:
        """Roles an identity provider's groups decide at sign-in."""
        await update_staged(self._outbox, self.users, tenant_id, {"user_id": user_id},
                            {"$set": {"roles": roles, **(since or {})}, "$inc": {"rev": 1}}, event)

    # --- mail outbox: admin notices to retry (never an invitation: it carries a setup token) ---

    async def queue_mail(self, tenant_id: str, doc: dict[str, Any]) -> None:
        await self.mail_outbox.insert(tenant_id, doc)

    async def claim_mail(self, now: datetime, retry_at: datetime) -> dict[str, Any] | None:
        """One notice due by `now`, claimed until `retry_at` (so one gateway instance sends it)."""
        return await self.mail_outbox.raw.find_one_and_update(
            {"next_at": {"$lte": now}}, {"$set": {"next_at": retry_at}, "$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER)

    async def drop_mail(self, tenant_id: str, mail_id: str) -> None:
        await self.mail_outbox.delete_one(tenant_id, {"mail_id": mail_id})

    async def set_invitation(self, tenant_id: str, user_id: str, invitation: str,
                             setup: dict[str, Any] | None = None) -> None:
        """An invitation's delivery state; with `setup`, a new setup token's digest and expiry
        replace the old one (which stops working)."""
        await self.users.update_one(tenant_id, {"user_id": user_id}, {"$set": {"invitation": invitation, **(setup or {})}})

    async def disable_user(self, tenant_id: str, user_id: str, event: Event) -> None:
        await update_staged(self._outbox, self.users, tenant_id, {"user_id": user_id},
                            {"$set": {"status": "disabled", "roles": [], "pending": []}, "$inc": {"rev": 1}}, event)

    async def end_credentials(self, tenant_id: str, user_id: str, at: datetime) -> None:
        """Every session and API token of the user issued before `at` ends (see `sessions.py`)."""
        await self.users.update_one(tenant_id, {"user_id": user_id}, {"$set": {"credentials_after": at}})

    async def set_first_password(self, tenant_id: str, user_id: str, setup_digest: str, encoded: str,
                                 event: Event) -> bool:
        """Consumes the setup token with the write; False if it was used meanwhile."""
        return await update_staged(self._outbox, self.users, tenant_id, {"user_id": user_id, "setup_digest": setup_digest},
                                   {"$set": {"password_hash": encoded},
                                    "$unset": {"setup_digest": "", "setup_expires_at": ""}}, event)

    async def set_password(self, tenant_id: str, user_id: str, encoded: str, at: datetime, event: Event) -> None:
        """A new password ends every session and API token issued before `at`."""
        await update_staged(self._outbox, self.users, tenant_id, {"user_id": user_id},
                            {"$set": {"password_hash": encoded, "credentials_after": at}, "$inc": {"rev": 1}}, event)

    async def rehash_password(self, tenant_id: str, user_id: str, *, old: str, new: str) -> bool:
        """The same password under raised hashing parameters; no-op if it changed meanwhile."""
        return bool(await self.users.update_one(tenant_id, {"user_id": user_id, "password_hash": old},
                                                {"$set": {"password_hash": new}}))

    async def request_mfa_reset(self, tenant_id: str, user_id: str, *, rev: int, pending: dict[str, Any],
                                event: Event) -> bool:
        return await update_staged(self._outbox, self.users, tenant_id, {"user_id": user_id, "rev": rev},
                                   {"$set": {"mfa_reset": pending}, "$inc": {"rev": 1}}, event)

    async def confirm_mfa_reset(self, tenant_id: str, user_id: str, *, rev: int, at: datetime, event: Event) -> bool:
        return await update_staged(self._outbox, self.users, tenant_id, {"user_id": user_id, "rev": rev},
                                   {"$set": {"mfa": None, "recovery": [], "credentials_after": at},
                                    "$unset": {"mfa_reset": ""}, "$inc": {"rev": 1}}, event)

    async def begin_mfa(self, tenant_id: str, user_id: str, sealed_secret: str) -> None:
        await self.users.update_one(tenant_id, {"user_id": user_id},
                                    {"$set": {"mfa": {"secret": sealed_secret, "confirmed": False, "last_step": None}}})

    async def confirm_mfa(self, tenant_id: str, user_id: str, *, sealed_secret: str, step: int,
                          recovery: list[str], event: Event) -> bool:
        """False when the enrolment changed meanwhile (another secret, or already confirmed)."""
        return await update_staged(self._outbox, self.users, tenant_id,
                                   {"user_id": user_id, "mfa.confirmed": False, "mfa.secret": sealed_secret},
                                   {"$set": {"mfa.confirmed": True, "mfa.last_step": step, "recovery": recovery}}, event)

    async def advance_totp_step(self, tenant_id: str, user_id: str, step: int) -> bool:
        """SECURITY: the step only moves forward, atomically: a code is good once, even under a race."""
        return bool(await self.users.update_one(
            tenant_id, {"user_id": user_id, "$or": [{"mfa.last_step": None}, {"mfa.last_step": {"$lt": step}}]},
            {"$set": {"mfa.last_step": step}}))

    async def use_recovery_code(self, tenant_id: str, user_id: str, digest: str, event: Event) -> bool:
        """Each recovery code works once: the pull is the compare-and-swap."""
        return await update_staged(self._outbox, self.users, tenant_id, {"user_id": user_id, "recovery": digest},
                                   {"$pull": {"recovery": digest}}, event)

    # --- failed sign-ins ---

    async def sign_in_counters(self, tenant_id: str, username: str, source: str, now: datetime) -> list[dict[str, Any]]:
        """The live failure counters that bear on `username` signing in from `source`: that
        pair's, and the name's across every source."""
        return await self.attempts.find(tenant_id, {"username": username, "source": {"$in": [source, ALL_SOURCES]},
                                                    "expires_at": {"$gt": now}})

    async def count_failed_sign_in(self, tenant_id: str, username: str, source: str, *, now: datetime,
                                   window_ends: datetime) -> dict[str, Any]:
        """One more failure on the counter of (`username`, `source`); a counter whose window has
        passed starts again at one, ending at `window_ends`. Returns the counter."""
        key = {"tenant_id": tenant_id, "username": username, "source": source}
        count = {"$inc": {"failures": 1}, "$setOnInsert": {"expires_at": window_ends, "locked_until": None}}
        try:
            return await self.attempts.raw.find_one_and_update({**key, "expires_at": {"$gt": now}}, count, upsert=True,
                                                               return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:  # an expired counter holds the key (or a concurrent failure made it)
            pass
        restarted = await self.attempts.raw.find_one_and_update(
            {**key, "expires_at": {"$lte": now}},
            {"$set": {"failures": 1, "expires_at": window_ends, "locked_until": None}},
            return_document=ReturnDocument.AFTER)
        return restarted or await self.attempts.raw.find_one_and_update(key, {"$inc": {"failures": 1}},
                                                                         return_document=ReturnDocument.AFTER)

    async def lock_sign_in(self, tenant_id: str, username: str, source: str, *, until: datetime,
                           expires_at: datetime) -> None:
        await self.attempts.update_one(tenant_id, {"username": username, "source": source},
                                       {"$set": {"locked_until": until, "expires_at": expires_at}})

    async def clear_failed_sign_ins(self, tenant_id: str, username: str, source: str, now: datetime) -> None:
        """A good sign-in forgives its own address (the name's count across addresses runs out its
        window) and sweeps the name's expired counters."""
        await self.attempts.raw.delete_many({"tenant_id": tenant_id, "username": username,
                                             "$or": [{"source": source}, {"expires_at": {"$lte": now}}]})

    # --- sessions ---

    async def insert_session(self, tenant_id: str, doc: dict[str, Any], *evts: Event) -> None:
        """A new session, with its sign-in event staged in the same write (the outbox)."""
        await insert_staged(self._outbox, self.sessions, tenant_id, doc, *evts)

    async def session_by_digest(self, digest: str) -> dict[str, Any] | None:
        return await self.sessions.raw.find_one({"digest": digest})

    async def touch_session(self, tenant_id: str, session_id: str, at: datetime) -> None:
        await self.sessions.update_one(tenant_id, {"session_id": session_id}, {"$set": {"last_seen": at}})

    async def end_session(self, tenant_id: str, session_id: str, at: datetime, *evts: Event) -> bool:
        """Ends a live session, with its logout event staged in the same write; False if it had ended."""
        return await update_staged(self._outbox, self.sessions, tenant_id, {"session_id": session_id, "ended_at": None},
                                   {"$set": {"ended_at": at}}, *evts)

    async def upgrade_session_mfa(self, tenant_id: str, session_id: str, auth: str) -> None:
        await self.sessions.update_one(tenant_id, {"session_id": session_id}, {"$set": {"mfa": True, "auth": auth}})

    # --- API tokens ---

    async def insert_token(self, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        await insert_staged(self._outbox, self.tokens, tenant_id, doc, event)

    async def token_by_digest(self, digest: str) -> dict[str, Any] | None:
        return await self.tokens.raw.find_one({"digest": digest})

    async def list_tokens(self, tenant_id: str, *, owner: str | None) -> list[dict[str, Any]]:
        """Every token of the tenant, or only `owner`'s."""
        return await self.tokens.find(tenant_id, {} if owner is None else {"user_id": owner}, sort=[("created_at", 1)])

    async def count_live_tokens(self, tenant_id: str) -> int:
        return await self.tokens.count(tenant_id, {"revoked": False})

    async def revoke_token(self, tenant_id: str, token_id: str, *, owner: str | None, at: datetime,
                           event: Event) -> bool:
        """False when no unrevoked token has this id (and, if given, this owner)."""
        query: dict[str, Any] = {"token_id": token_id, "revoked": False}
        if owner is not None:
            query["user_id"] = owner
        return await update_staged(self._outbox, self.tokens, tenant_id, query,
                                   {"$set": {"revoked": True, "revoked_at": at}}, event)

    # --- single sign-on ---

    async def insert_sso_state(self, tenant_id: str, doc: dict[str, Any]) -> None:
        await self.sso_states.insert(tenant_id, doc)

    async def take_sso_state(self, state: str) -> dict[str, Any] | None:
        """Takes a single-use SSO state (the state value is the lookup key, like a token digest)."""
        return await self.sso_states.raw.find_one_and_delete({"state": state})

    async def first_use_of_assertion(self, tenant_id: str, assertion_id: str, until: datetime) -> bool:
        """False when this SAML assertion was consumed before: a replay (the insert is the check)."""
        try:
            await self.saml_assertions.insert(tenant_id, {"assertion_id": assertion_id, "expires_at": until})
        except DuplicateKeyError:
            return False
        return True

    # --- service-account tokens waiting for a second admin (kept on the account, like pending roles) ---

    async def token_requests(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every token request of the tenant's active service accounts, each with its account's id."""
        docs = await self.users.find(tenant_id, {"account": "service", "status": "active"}, sort=[("created_at", 1)])
        return [{**r, "user_id": d["user_id"]} for d in docs for r in d.get("token_requests", [])]

    async def save_token_requests(self, tenant_id: str, user_id: str, *, rev: int, requests: list[dict[str, Any]],
                                  event: Event) -> bool:
        """An active service account's token requests, compare-and-swap on its revision."""
        return await update_staged(self._outbox, self.users, tenant_id,
                                   {"user_id": user_id, "account": "service", "status": "active", "rev": rev},
                                   {"$set": {"token_requests": requests}, "$inc": {"rev": 1}}, event)

    async def collect_token_request(self, tenant_id: str, user_id: str, *, rev: int, requests: list[dict[str, Any]],
                                    token: dict[str, Any], event: Event) -> bool:
        """Takes a confirmed request off the account, then stores its token. The compare-and-swap on the
        revision comes first: a request is collected once, even under a race."""
        if not await self.users.update_one(tenant_id, {"user_id": user_id, "account": "service", "status": "active",
                                                       "rev": rev},
                                           {"$set": {"token_requests": requests}, "$inc": {"rev": 1}}):
            return False
        await self.insert_token(tenant_id, token, event)
        return True
