"""auditsvc's handlers: append batches of events to the tenants' chains, answer queries of records and checkpoints.

Ingestion is batched (one write per collection per batch, whatever the tenants), pipelined (the
next batch is linked while this one is written) and idempotent by event id, so a redelivered
batch after a crash neither loses nor duplicates a record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from shared import export_formats, rpc
from shared.audit_chain import ChainHead
from shared.commands_audit import (
    REPORT_FORMATS,
    AuditQuery,
    AuditStatus,
    CheckpointPage,
    CheckpointQuery,
    ExportPage,
    ExportQuery,
    NoParams,
    RecordPage,
    ReportQuery,
    ReportReply,
    SigningKeys,
)
from shared.events import Event

from . import reports, siem
from .checkpoints import CHECKPOINT_TYPE, Checkpointer
from .records import record_from_event
from .search import Criteria, criteria, rfc3339
from .store import AuditStore
from .store_checkpoints import CheckpointStore

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
        # The latest batch, whatever its tenant: when it was taken and how old its oldest event was.
        self.last_at: datetime | None = None
        self.last_lag_seconds = 0.0


def link(head: ChainHead, events: Sequence[dict[str, Any]], known: set[str]) -> tuple[list[dict[str, Any]], ChainHead, int]:
    """Chain the records of events not yet `known` onto `head`: the records, the new head, and how
    many of them count towards the next checkpoint (checkpoint events do not). Adds to `known`."""
    linked = []
    counted = 0
    for event in events:
        if event["event_id"] in known:
            continue
        known.add(event["event_id"])
        record, head = head.append(record_from_event(event))
        linked.append(record)
        counted += event["type"] != CHECKPOINT_TYPE
    return linked, head, counted


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
            linked, head, counted = link(head, dumped, known)
            if self._stats is not None:
                oldest = min(e.occurred_at for e in tenant_events)
                self._stats.lag_seconds[tenant_id] = max(0.0, (now - oldest).total_seconds())
                self._stats.ingested_at[tenant_id] = now
                if self._stats.last_at != now:
                    self._stats.last_at, self._stats.last_lag_seconds = now, 0.0
                self._stats.last_lag_seconds = max(self._stats.last_lag_seconds, self._stats.lag_seconds[tenant_id])
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


def _page_end(items: list[dict[str, Any]], limit: int, key: str = "seq") -> int | None:
    """The cursor of the next page: the last item's, when the page is full."""
    return items[-1][key] if len(items) == limit else None


async def list_records(request: rpc.RpcRequest, q: AuditQuery, *, store: AuditStore) -> RecordPage:
    items = await store.query(request.tenant_id, criteria(q), after_seq=q.after, limit=q.limit)
    return RecordPage(items=items, next=_page_end(items, q.limit))


async def list_checkpoints(request: rpc.RpcRequest, q: CheckpointQuery, *, checkpoints: CheckpointStore) -> CheckpointPage:
    items = await checkpoints.checkpoints_after(request.tenant_id, q.after, q.limit)
    return CheckpointPage(items=items, next=_page_end(items, q.limit))


async def signing_keys(request: rpc.RpcRequest, params: NoParams, *, checkpoints: CheckpointStore,
                       current_key_id: str) -> SigningKeys:
    keys = await checkpoints.signing_keys_in_use_order()
    return SigningKeys(current=next((k for k in keys if k["key_id"] == current_key_id), None), keys=keys)


async def status(request: rpc.RpcRequest, params: NoParams, *, store: AuditStore, checkpoints: CheckpointStore,
                 stats: IngestStats, queue_depth: Callable[[], Awaitable[int | None]]) -> AuditStatus:
    """The tenant's view of audit health: chain head, last checkpoint, ingestion lag, queue depth."""
    tenant_id = request.tenant_id
    head = await store.head(tenant_id)
    last = await store.read_range(tenant_id, head.seq, head.seq)
    checkpoint = await checkpoints.last_checkpoint(tenant_id)
    ingested_at = stats.ingested_at.get(tenant_id)
    archived = await store.last_done_archive(tenant_id)
    return AuditStatus(
        tenant_id=tenant_id,
        last_seq=head.seq,
        last_hash=head.hash,
        last_record_time=last[0]["time"] if last else None,
        last_checkpoint_seq=checkpoint["seq"] if checkpoint else None,
        last_checkpoint_time=checkpoint["time"] if checkpoint else None,
        ingestion_lag_seconds=stats.lag_seconds.get(tenant_id),
        last_ingested_at=rfc3339(ingested_at) if ingested_at else None,
        # The online chain continues from here; older records are in signed archives.
        archived_seq=archived["to_seq"] if archived else None,
        archived_hash=archived["to_hash"] if archived else None,
        # Shared by every tenant: records waiting in the broker for auditsvc.
        queue_depth=await queue_depth(),
    )


async def export_page(request: rpc.RpcRequest, q: ExportQuery, *, store: AuditStore) -> ExportPage:
    """A page of a batch export, rendered; the first page also counts what the whole export holds."""
    if q.format not in export_formats.BY_NAME:
        raise rpc.ProblemError(400, "Bad Request",
                               f"format must be one of {', '.join(export_formats.NAMES)}", "format")
    query = criteria(q)
    items = await store.query(request.tenant_id, query, after_seq=q.after, limit=q.limit)
    total = await store.count(request.tenant_id, query) if q.after == 0 else None
    return ExportPage(lines=[siem.render(r, q.format) for r in items], next=_page_end(items, q.limit), total=total)


_REPORT_PAGE = 5000


async def _each_record(store: AuditStore, tenant_id: str, query: Criteria, visit: Callable[[Any], None]) -> None:
    """Every record a query matches, in sequence order, page by page."""
    after = 0
    while True:
        page = await store.query(tenant_id, query, after_seq=after, limit=_REPORT_PAGE)
        for record in page:
            visit(record)
        if len(page) < _REPORT_PAGE:
            return
        after = page[-1]["seq"]


async def report(request: rpc.RpcRequest, q: ReportQuery, *, store: AuditStore) -> ReportReply:
    """A tenant's compliance report over a time range, as JSON, CSV or self-contained HTML."""
    if q.format not in REPORT_FORMATS:
        raise rpc.ProblemError(400, "Bad Request", f"format must be one of {', '.join(REPORT_FORMATS)}", "format")
    query = criteria(AuditQuery(since=q.since, until=q.until))
    builder = reports.ReportBuilder(tenant_id=request.tenant_id, since=query.since, until=query.until,
                                    now=datetime.now(UTC))
    if query.since:  # names given before the range still name what the range shows
        for action in reports.NAMED:
            naming = criteria(AuditQuery(action=action, until=q.since))
            await _each_record(store, request.tenant_id, naming, builder.learn)
    await _each_record(store, request.tenant_id, query, builder.add)
    result = builder.result()
    if q.format == "csv":
        return ReportReply(content_type="text/csv", body=reports.to_csv(result))
    if q.format == "html":
        return ReportReply(content_type="text/html", body=reports.to_html(result))
    return ReportReply(content_type="application/json", report=result)
