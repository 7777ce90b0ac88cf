"""auditsvc's handlers: append batches of events to the tenants' chains, answer queries.

Ingestion is batched (one write per collection per batch, whatever the tenants), pipelined (the
next batch is linked while this one is written) and idempotent by event id, so a redelivered
batch after a crash neither loses nor duplicates a record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import rpc
from shared.events import Event

from . import reports, siem
from .chain import ChainHead, canonical_bytes
from .checkpoints import CHECKPOINT_TYPE, Checkpointer
from .records import record_from_event
from .search import Criteria
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

    def clear(self) -> None:
        self._heads.clear()


class IngestStats:
    """What operators see as lag: how old events were when they were stored, per tenant."""

    def __init__(self) -> None:
        self.lag_seconds: dict[str, float] = {}
        self.ingested_at: dict[str, datetime] = {}


class Ingestor:
    """Appends batches of events to their tenants' chains, in two steps (see `StagedBatchHandler`).

    `prepare` links a batch onto the heads the previous batch left, before that batch is written,
    so hashing the next batch overlaps the store's writes of this one. Event ids of batches not
    yet written are kept here: a duplicate arriving in the very next batch is caught before the
    store can see the first copy.
    """

    def __init__(self, store: AuditStore, heads: ChainHeads, *, checkpointer: Checkpointer | None = None,
                 stats: IngestStats | None = None):
        self._store = store
        self._heads = heads
        self._checkpointer = checkpointer
        self._stats = stats
        self._unwritten: dict[str, set[str]] = {}

    async def prepare(self, batch: Sequence[Event]) -> Callable[[], Awaitable[None]]:
        by_tenant: dict[str, list[Event]] = {}
        for event in batch:
            by_tenant.setdefault(event.tenant_id, []).append(event)
        now = datetime.now(UTC)
        runs: dict[str, list[dict[str, Any]]] = {}
        new_heads: dict[str, tuple[ChainHead, int]] = {}
        ids: dict[str, set[str]] = {}
        for tenant_id, tenant_events in by_tenant.items():
            head = await self._heads.get(tenant_id)  # first: loading a head indexes records a crash left unindexed
            dumped = [e.model_dump(mode="json") for e in tenant_events]
            known = await self._store.known_event_ids(tenant_id, [(d["event_id"], d["occurred_at"]) for d in dumped])
            known |= self._unwritten.get(tenant_id, set())
            linked = []
            counted = 0
            for event in dumped:
                if event["event_id"] in known:
                    continue
                known.add(event["event_id"])
                record, head = head.append(record_from_event(event))
                linked.append(record)
                counted += event["type"] != CHECKPOINT_TYPE
            if self._stats is not None:
                oldest = min(e.occurred_at for e in tenant_events)
                self._stats.lag_seconds[tenant_id] = max(0.0, (now - oldest).total_seconds())
                self._stats.ingested_at[tenant_id] = now
            if linked:
                runs[tenant_id] = linked
                new_heads[tenant_id] = (head, counted)
                ids[tenant_id] = {r["event_id"] for r in linked}
        # The next batch links onto these heads; `abandon` puts the stored ones back if this write fails.
        for tenant_id, (head, _) in new_heads.items():
            self._heads.set(head)
            self._unwritten.setdefault(tenant_id, set()).update(ids[tenant_id])

        async def write() -> None:
            await self._store.append(runs)
            for tenant_id, (head, counted) in new_heads.items():
                self._unwritten[tenant_id] -= ids[tenant_id]
                if self._checkpointer is not None:
                    await self._checkpointer.appended(head, counted)
            log.debug("audit_batch_ingested", events=len(batch))

        return write

    def abandon(self) -> None:
        """A write failed, perhaps halfway: heads are re-read from the store (which finds and
        indexes a half-written run), and what was never written may come again."""
        self._heads.clear()
        self._unwritten.clear()

    async def __call__(self, batch: Sequence[Event]) -> None:
        """Both steps at once (tests, tools)."""
        write = await self.prepare(batch)
        try:
            await write()
        except Exception:
            self.abandon()
            raise


async def ingest(batch: Sequence[Event], *, store: AuditStore, heads: ChainHeads,
                 checkpointer: Checkpointer | None = None, stats: IngestStats | None = None) -> None:
    await Ingestor(store, heads, checkpointer=checkpointer, stats=stats)(batch)


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
    device: str | None = Field(default=None, max_length=200)
    key: str | None = Field(default=None, max_length=200)
    after: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=1000)


def _bad_request(exc: ValidationError) -> rpc.ProblemError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"])
    return rpc.ProblemError(400, "Bad Request", f"{field}: {err['msg']}", field)


def _rfc3339(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def criteria(q: AuditQuery) -> Criteria:
    """The search criteria of a query; raises a 400 problem naming the field for a bad range."""
    if q.since and q.until and q.since > q.until:
        raise rpc.ProblemError(400, "Bad Request", "since must not be after until", "since")
    return Criteria(action=q.action, actor=q.actor, resource=q.resource, outcome=q.outcome,
                    correlation_id=q.correlation_id, device=q.device, key=q.key,
                    since=_rfc3339(q.since) if q.since else None, until=_rfc3339(q.until) if q.until else None)


def parse_query(params: dict[str, Any], model: type[AuditQuery] = AuditQuery) -> AuditQuery:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise _bad_request(exc) from None


async def list_records(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore) -> dict[str, Any]:
    q = parse_query(params)
    items = await store.query(request.tenant_id, criteria(q), after_seq=q.after, limit=q.limit)
    return {"items": items, "next": items[-1]["seq"] if len(items) == q.limit else None}


class CheckpointQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after: int = Field(default=0, ge=0)
    limit: int = Field(default=1000, ge=1, le=10000)


async def list_checkpoints(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore) -> dict[str, Any]:
    try:
        q = CheckpointQuery.model_validate(params)
    except ValidationError as exc:
        raise _bad_request(exc) from None
    items = await store.checkpoints.find(request.tenant_id, {"seq": {"$gt": q.after}}, sort=[("seq", 1)],
                                         limit=q.limit, projection={"_id": 0, "_outbox": 0})
    return {"items": items, "next": items[-1]["seq"] if len(items) == q.limit else None}


async def signing_keys(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore,
                       current_key_id: str) -> dict[str, Any]:
    keys = await store.signing_keys.find({}, {"_id": 0}).sort("first_used", 1).to_list(None)
    current = next((k for k in keys if k["key_id"] == current_key_id), None)
    return {"current": current, "keys": keys}


async def status(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore, stats: IngestStats,
                 queue_depth: Any) -> dict[str, Any]:
    """The tenant's view of audit health: chain head, last checkpoint, ingestion lag, queue depth."""
    tenant_id = request.tenant_id
    head = await store.head(tenant_id)
    last = await store.read_range(tenant_id, head.seq, head.seq)
    checkpoint = await store.last_checkpoint(tenant_id)
    ingested_at = stats.ingested_at.get(tenant_id)
    archived = await store.archives.find(tenant_id, {"state": "done"}, sort=[("to_seq", -1)], limit=1)
    return {
        "tenant_id": tenant_id,
        "last_seq": head.seq,
        "last_hash": head.hash,
        "last_record_time": last[0]["time"] if last else None,
        "last_checkpoint_seq": checkpoint["seq"] if checkpoint else None,
        "last_checkpoint_time": checkpoint["time"] if checkpoint else None,
        "ingestion_lag_seconds": stats.lag_seconds.get(tenant_id),
        "last_ingested_at": _rfc3339(ingested_at) if ingested_at else None,
        # The online chain continues from here; older records are in signed archives.
        "archived_seq": archived[0]["to_seq"] if archived else None,
        "archived_hash": archived[0]["to_hash"] if archived else None,
        # Shared by every tenant: records waiting in the broker for auditsvc.
        "queue_depth": await queue_depth(),
    }


EXPORT_FORMATS = ("cef", "leef", "syslog", "jsonl", "records")


class ExportQuery(AuditQuery):
    format: str = Field(max_length=20)
    limit: int = Field(default=1000, ge=1, le=5000)


def render_line(record: dict[str, Any], fmt: str) -> str:
    """One record in an export format; "records" is the chained record itself (verifiable offline)."""
    if fmt == "records":
        return canonical_bytes(record).decode("utf-8")
    return siem.render(record, fmt)


async def export_page(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore) -> dict[str, Any]:
    """A page of a batch export, rendered; the first page also counts what the whole export holds."""
    q = parse_query(params, ExportQuery)
    if q.format not in EXPORT_FORMATS:
        raise rpc.ProblemError(400, "Bad Request",
                               f"format must be one of {', '.join(EXPORT_FORMATS)}", "format")
    query = criteria(q)
    items = await store.query(request.tenant_id, query, after_seq=q.after, limit=q.limit)
    page: dict[str, Any] = {
        "lines": [render_line(r, q.format) for r in items],
        "next": items[-1]["seq"] if len(items) == q.limit else None,
    }
    if q.after == 0:
        page["total"] = await store.count(request.tenant_id, query)
    return page


class ReportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: datetime | None = None
    until: datetime | None = None
    format: str = Field(default="json", max_length=10)


async def report(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore) -> dict[str, Any]:
    """A tenant's compliance report over a time range, as JSON, CSV or self-contained HTML."""
    try:
        q = ReportQuery.model_validate(params)
    except ValidationError as exc:
        raise _bad_request(exc) from None
    if q.format not in ("json", "csv", "html"):
        raise rpc.ProblemError(400, "Bad Request", "format must be one of json, csv, html", "format")
    query = criteria(AuditQuery(since=q.since, until=q.until))
    builder = reports.ReportBuilder(tenant_id=request.tenant_id, since=_rfc3339(q.since) if q.since else None,
                                    until=_rfc3339(q.until) if q.until else None, now=datetime.now(UTC))
    after = 0
    while True:
        page = await store.query(request.tenant_id, query, after_seq=after, limit=5000)
        for record in page:
            builder.add(record)
        if len(page) < 5000:
            break
        after = page[-1]["seq"]
    result = builder.result()
    if q.format == "csv":
        return {"content_type": "text/csv", "body": reports.to_csv(result)}
    if q.format == "html":
        return {"content_type": "text/html", "body": reports.to_html(result)}
    return {"content_type": "application/json", "report": result}
