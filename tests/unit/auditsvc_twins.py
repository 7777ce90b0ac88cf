"""Helpers for auditsvc's handler unit tests: memory stores filled through the real ingestion path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.auditsvc import handlers
from services.auditsvc.store_memory import MemoryAuditStore
from shared import events, rpc

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def request(tenant_id: str = "t1") -> rpc.RpcRequest:
    return rpc.RpcRequest(method="test", tenant_id=tenant_id, correlation_id="corr_test")


def key_created(tenant_id: str, i: int, *, at: datetime = T0) -> events.Event:
    return events.KeyCreated(tenant_id=tenant_id, key_id=f"key_{i}", name=f"k{i}", algorithm="AES-256",
                             occurred_at=at + timedelta(seconds=i), actor={"kind": "user", "id": "usr_1"})


async def ingest(store: MemoryAuditStore, batch: list[events.Event], **kwargs: Any) -> None:
    await handlers.ingest(batch, store=store, heads=handlers.ChainHeads(store), **kwargs)


class Outbox:
    """Publishes nowhere; remembers what it was asked to publish."""

    def __init__(self) -> None:
        self.published: list[events.Event] = []

    async def publish(self, collection: Any, tenant_id: str, event: events.Event) -> None:
        self.published.append(event)
