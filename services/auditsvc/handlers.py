"""auditsvc's handlers: append batches of events to the tenants' chains, answer queries.

Ingestion is batched (one insert per tenant per batch) and idempotent by event id, so a
redelivered batch after a crash neither loses nor duplicates a record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import rpc
from shared.events import Event

from .chain import ChainHead
from .records import record_from_event
from .store import AuditStore

log = structlog.get_logger("strongroom.auditsvc")


class ChainHeads:
    """Each tenant's chain head, kept in memory; re-read from the store after any failure."""

    def __init__(self, store: AuditStore):
        self._store = store
        self._heads: dict[str, ChainHead] = {}

    async def get(self, tenant_id: str) -> ChainHead:
        head = self._heads.get(tenant_id)
        if head is None:
            head = self._heads[tenant_id] = await self._store.head(tenant_id)
        return head

    def set(self, head: ChainHead) -> None:
        self._heads[head.tenant_id] = head

    def forget(self, tenant_id: str) -> None:
        self._heads.pop(tenant_id, None)


async def ingest(batch: Sequence[Event], *, store: AuditStore, heads: ChainHeads) -> None:
    by_tenant: dict[str, list[Event]] = {}
    for event in batch:
        by_tenant.setdefault(event.tenant_id, []).append(event)
    for tenant_id, tenant_events in by_tenant.items():
        known = await store.known_event_ids(tenant_id, [e.event_id for e in tenant_events])
        head = await heads.get(tenant_id)
        linked = []
        for event in tenant_events:
            if event.event_id in known:
                continue
            known.add(event.event_id)
            record, head = head.append(record_from_event(event.model_dump(mode="json")))
            linked.append(record)
        if not linked:
            continue
        try:
            await store.append(tenant_id, linked)
        except Exception:
            heads.forget(tenant_id)  # part of the batch may be stored: re-read the head
            raise
        heads.set(head)
    log.debug("audit_batch_ingested", events=len(batch))


class AuditQuery(BaseModel):
    """Filters of `GET /v1/audit`; all optional, combined with AND, paged by sequence number."""

    model_config = ConfigDict(extra="forbid")
    since: datetime | None = None
    until: datetime | None = None
    action: str | None = Field(default=None, max_length=100)
    actor: str | None = Field(default=None, max_length=200)
    resource: str | None = Field(default=None, max_length=200)
    outcome: str | None = Field(default=None, max_length=20)
    correlation_id: str | None = Field(default=None, max_length=100)
    after: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=1000)


async def list_records(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore) -> dict[str, Any]:
    try:
        q = AuditQuery.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise rpc.ProblemError(400, "Bad Request", f"{field}: {err['msg']}", field) from None
    if q.since and q.until and q.since > q.until:
        raise rpc.ProblemError(400, "Bad Request", "since must not be after until", "since")
    query: dict[str, Any] = {}
    for name, field in (("action", "action"), ("actor", "actor.id"), ("resource", "resource.id"),
                        ("outcome", "outcome"), ("correlation_id", "correlation_id")):
        if (value := getattr(q, name)) is not None:
            query[field] = value
    if q.since or q.until:
        # Records keep RFC 3339 UTC strings, which sort in time order.
        window: dict[str, str] = {}
        if q.since:
            window["$gte"] = q.since.astimezone().isoformat().replace("+00:00", "Z")
        if q.until:
            window["$lte"] = q.until.astimezone().isoformat().replace("+00:00", "Z")
        query["time"] = window
    items = await store.query(request.tenant_id, query, after_seq=q.after, limit=q.limit)
    return {"items": items, "next": items[-1]["seq"] if len(items) == q.limit else None}
