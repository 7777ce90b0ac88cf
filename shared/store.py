"""MongoDB access through PyMongo's asyncio API, with the tenant on every query.

Each service gets its own database (`<prefix><service>`) and owns its collections there;
no service opens another's. `TenantCollection` makes the tenant id part of every filter
and every document, so forgetting it is not possible through this API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError, ExecutionTimeout

from .config import STORE_OPERATION_TIMEOUT_SECONDS, STORE_TIMEOUT_SECONDS, CommonSettings
from .metrics import StoreTimings

__all__ = ["STORE_UNAVAILABLE", "DuplicateKeyError", "ReturnDocument", "TenantCollection", "connect", "connect_with",
           "ping", "service_database", "stored_now", "tenant_key"]

# The store cannot serve a call: no server selected in time, a connection refused, dropped or
# timed out (PyMongo's ServerSelectionTimeoutError, AutoReconnect, NetworkTimeout and the rest
# are all ConnectionFailure), or an operation past its time bound (ExecutionTimeout). Callers
# answer 503 with Retry-After (the gateway's problem middleware, the bus's RPC answer), never 500.
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (ConnectionFailure, ExecutionTimeout)


def stored_now() -> datetime:
    """Now, to the millisecond, as the store keeps a datetime: a time a reply hands out is the one
    a later read of the stored document returns (a redelivered request is answered from it)."""
    at = datetime.now(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def connect(url: str, *, timeout_seconds: float = STORE_TIMEOUT_SECONDS,
            operation_timeout_seconds: float = STORE_OPERATION_TIMEOUT_SECONDS) -> AsyncMongoClient:
    # tz_aware so datetimes come back as aware UTC values, never naive ones; every command is
    # timed for the metrics of the service whose database it touched (`shared/metrics.py`).
    return AsyncMongoClient(url, tz_aware=True, event_listeners=[StoreTimings()],
                            serverSelectionTimeoutMS=int(timeout_seconds * 1000),
                            connectTimeoutMS=int(timeout_seconds * 1000),
                            timeoutMS=int(operation_timeout_seconds * 1000))


def connect_with(url: str, settings: CommonSettings) -> AsyncMongoClient:
    """A client with the store timeouts of a service's settings."""
    return connect(url, timeout_seconds=settings.store_timeout_seconds,
                   operation_timeout_seconds=settings.store_operation_timeout_seconds)


async def ping(db: AsyncDatabase) -> None:
    """Answers once the store does (readiness checks it)."""
    await db.command("ping")


def tenant_key(tenant_id: str, local_id: str) -> str:
    """An `_id` unique per tenant, `<tenant>:<id>` (no tenant id holds ':'): a document keyed by it
    needs no unique index of its own, which on the embedded store costs a write per insert."""
    return f"{tenant_id}:{local_id}"


def service_database(client: AsyncMongoClient, service: str, *, prefix: str = "strongroom_") -> AsyncDatabase:
    return client[f"{prefix}{service}"]


class TenantCollection:
    """A collection whose every read and write is scoped to one tenant id."""

    def __init__(self, collection: AsyncCollection):
        self.raw = collection

    @staticmethod
    def _scoped(tenant_id: str, query: Mapping[str, Any] | None) -> dict[str, Any]:
        if not tenant_id:
            raise ValueError("tenant_id is required on every query")
        return {**(query or {}), "tenant_id": tenant_id}

    async def insert(self, tenant_id: str, doc: Mapping[str, Any]) -> None:
        await self.raw.insert_one(self._scoped(tenant_id, doc))

    async def insert_many(self, tenant_id: str, docs: Sequence[Mapping[str, Any]]) -> None:
        if docs:
            await self.raw.insert_many([self._scoped(tenant_id, d) for d in docs], ordered=False)

    async def find_one(self, tenant_id: str, query: Mapping[str, Any], **kwargs: Any) -> dict[str, Any] | None:
        return await self.raw.find_one(self._scoped(tenant_id, query), **kwargs)

    async def find_by_key(self, tenant_id: str, key: str) -> dict[str, Any] | None:
        """The document whose `_id` is `key`, built from `tenant_id` (`tenant_key`). SECURITY: read by
        `_id` alone (with `tenant_id` in the filter the embedded store scans); its tenant is checked here."""
        doc = await self.raw.find_one({"_id": key})
        return doc if doc is not None and doc.get("tenant_id") == tenant_id else None

    async def find(
        self, tenant_id: str, query: Mapping[str, Any] | None = None, *, sort=None, limit: int = 0, **kwargs: Any
    ) -> list[dict[str, Any]]:
        cursor = self.raw.find(self._scoped(tenant_id, query), sort=sort, limit=limit, **kwargs)
        return await cursor.to_list(None)

    async def update_one(self, tenant_id: str, query: Mapping[str, Any], update: Mapping[str, Any], **kwargs: Any) -> int:
        """Returns the number of matched documents: 0 means the compare-and-swap lost."""
        result = await self.raw.update_one(self._scoped(tenant_id, query), update, **kwargs)
        return result.matched_count

    async def delete_one(self, tenant_id: str, query: Mapping[str, Any]) -> int:
        return (await self.raw.delete_one(self._scoped(tenant_id, query))).deleted_count

    async def count(self, tenant_id: str, query: Mapping[str, Any] | None = None) -> int:
        return await self.raw.count_documents(self._scoped(tenant_id, query))
