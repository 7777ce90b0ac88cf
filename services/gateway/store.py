"""The gateway's collections: tenants, API tokens (digests only), enrollments, devices, nonces."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared import outbox
from shared.events import Event
from shared.group_insert import GroupInserter
from shared.store import DuplicateKeyError, TenantCollection


class GatewayStore:
    def __init__(self, db: AsyncDatabase):
        self.tenants = TenantCollection(db["tenants"])
        self.tokens = TenantCollection(db["tokens"])
        self.enrollments = TenantCollection(db["enrollments"])
        self.devices = TenantCollection(db["devices"])
        self.nonces = TenantCollection(db["nonces"])
        self._nonce_inserts = GroupInserter(self.nonces.raw)
        # --- accounts and sign-in ---
        self.users = TenantCollection(db["users"])
        self.sessions = TenantCollection(db["sessions"])
        self.login_attempts = TenantCollection(db["login_attempts"])
        self.sso_states = TenantCollection(db["sso_states"])
        self.saml_assertions = TenantCollection(db["saml_assertions"])  # ids seen, until they expire
        self.state = db["state"]  # gateway-wide facts (bootstrap done), not tenant data

    @property
    def outbox_collections(self):
        return [self.tenants.raw, self.tokens.raw, self.enrollments.raw, self.devices.raw, self.users.raw]

    async def create_indexes(self) -> None:
        await self.tenants.raw.create_index([("tenant_id", ASCENDING)], unique=True)
        await self.tokens.raw.create_index([("digest", ASCENDING)], unique=True)
        await self.tokens.raw.create_index([("tenant_id", ASCENDING), ("token_id", ASCENDING)], unique=True)
        await self.enrollments.raw.create_index([("digest", ASCENDING)], unique=True)
        await self.devices.raw.create_index([("tenant_id", ASCENDING), ("device_id", ASCENDING)], unique=True)
        await self.nonces.raw.create_index(
            [("tenant_id", ASCENDING), ("device_id", ASCENDING), ("nonce", ASCENDING)], unique=True
        )
        await self.nonces.raw.create_index([("expires_at", ASCENDING)])
        await self.users.raw.create_index([("tenant_id", ASCENDING), ("user_id", ASCENDING)], unique=True)
        await self.users.raw.create_index([("tenant_id", ASCENDING), ("username", ASCENDING)], unique=True)
        await self.users.raw.create_index([("setup_digest", ASCENDING)], unique=True, sparse=True)
        await self.sessions.raw.create_index([("digest", ASCENDING)], unique=True)
        await self.sessions.raw.create_index([("tenant_id", ASCENDING), ("session_id", ASCENDING)], unique=True)
        await self.login_attempts.raw.create_index([("tenant_id", ASCENDING), ("username", ASCENDING)], unique=True)
        await self.sso_states.raw.create_index([("state", ASCENDING)], unique=True)
        await self.saml_assertions.raw.create_index([("tenant_id", ASCENDING), ("assertion_id", ASCENDING)], unique=True)

    # Tokens and enrollment tokens are looked up by digest before the tenant is known: the
    # digest is the credential. Everything found that way then carries its tenant id.
    async def token_by_digest(self, digest: str) -> dict[str, Any] | None:
        return await self.tokens.raw.find_one({"digest": digest})

    async def session_by_digest(self, digest: str) -> dict[str, Any] | None:
        return await self.sessions.raw.find_one({"digest": digest})

    async def user_by_setup_digest(self, digest: str) -> dict[str, Any] | None:
        return await self.users.raw.find_one({"setup_digest": digest})

    async def sso_state(self, state: str) -> dict[str, Any] | None:
        """Takes a single-use SSO state (the state value is the lookup key, like a token digest)."""
        return await self.sso_states.raw.find_one_and_delete({"state": state})

    async def first_use_of_assertion(self, tenant_id: str, assertion_id: str, until: datetime) -> bool:
        """False when this SAML assertion was consumed before: a replay (the insert is the check)."""
        try:
            await self.saml_assertions.insert(tenant_id, {"assertion_id": assertion_id, "expires_at": until})
        except DuplicateKeyError:
            return False
        return True

    async def bootstrapped(self) -> bool:
        return await self.state.find_one({"_id": "bootstrap"}) is not None

    async def mark_bootstrapped(self, tenant_id: str, user_id: str, at: datetime) -> bool:
        """False if another request bootstrapped first (the insert is the compare-and-swap)."""
        try:
            await self.state.insert_one({"_id": "bootstrap", "tenant_id": tenant_id, "user_id": user_id, "at": at})
        except DuplicateKeyError:
            return False
        return True

    async def take_enrollment(self, digest: str, now: datetime) -> dict[str, Any] | None:
        """Consumes a single-use enrollment token atomically (compare-and-swap on `used`)."""
        doc = await self.enrollments.raw.find_one({"digest": digest})
        if doc is None or doc["used"] or doc["expires_at"] <= now:
            return None
        result = await self.enrollments.raw.update_one(
            {"digest": digest, "tenant_id": doc["tenant_id"], "used": False}, {"$set": {"used": True, "used_at": now}}
        )
        return doc if result.modified_count == 1 else None

    async def insert_with_event(self, collection: TenantCollection, tenant_id: str, doc: dict[str, Any], event: Event) -> None:
        await collection.insert(tenant_id, outbox.staged(doc, event))

    async def remember_nonce(self, tenant_id: str, device_id: str, nonce: str, expires_at: datetime) -> bool:
        """False when the nonce was seen before: a replay."""
        return await self._nonce_inserts.insert(
            tenant_id, {"device_id": device_id, "nonce": nonce, "expires_at": expires_at}
        )

    async def forget_expired_nonces(self, now: datetime) -> int:
        # Housekeeping across tenants by expiry only; it reads nothing back.
        return (await self.nonces.raw.delete_many({"expires_at": {"$lt": now}})).deleted_count
