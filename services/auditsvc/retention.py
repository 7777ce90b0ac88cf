"""Retention: records older than the tenant's window are archived to a signed file, then removed.

Each archive moves through states kept in its document, so a crash at any point resumes:
`writing` (range fixed, file being written) -> `written` (file on disk, checksum recorded) ->
`done` (records removed, `audit.archived` published through the outbox). Re-running a step is
harmless: the file is rebuilt byte for byte from the same records, deleting deleted records
removes nothing. Records a forwarder has not yet sent are never removed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared import events, rpc
from shared.audit_chain import ChainHead
from shared.commands_audit import (
    ArchiveChunk,
    ArchiveChunkQuery,
    ArchiveInfo,
    ArchivePage,
    ArchiveQuery,
    ArchiveRef,
    NoParams,
    RetentionRun,
    RetentionSetting,
    RetentionWindow,
)
from shared.outbox import Outbox
from shared.service import stop_if_cancelled

from .archive import build_archive, file_sha256
from .store import AuditStore
from .store_archives import ArchiveStore
from .store_checkpoints import CheckpointStore
from .store_forwarders import ForwarderStore

log = structlog.get_logger("strongroom.auditsvc")

MAX_ARCHIVE_RECORDS = 10_000


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def archivable(records: Sequence[dict[str, Any]], *, first: int, cutoff: str) -> list[dict[str, Any]]:
    """The gap-free prefix of the online chain, from seq `first`, whose records are all older than `cutoff`."""
    run: list[dict[str, Any]] = []
    for record in records:
        if record["time"] >= cutoff or record["seq"] != first + len(run):
            break
        run.append(record)
    return run


def new_archive(run: Sequence[dict[str, Any]], *, archive_id: str, now: datetime) -> dict[str, Any]:
    """An archive's document as its range is fixed, before its file is written."""
    return {
        "archive_id": archive_id, "state": "writing", "created_at": _rfc3339(now),
        "from_seq": run[0]["seq"], "to_seq": run[-1]["seq"], "to_hash": run[-1]["hash"],
        "start_seq": run[0]["seq"] - 1, "start_hash": run[0]["prev_hash"], "records": len(run),
    }


class Retention:
    def __init__(self, store: AuditStore, archives: ArchiveStore, checkpoints: CheckpointStore,
                 forwarders: ForwarderStore, outbox: Outbox, signing_key: Ed25519PrivateKey, *,
                 archive_dir: str, default_days: float):
        self._store, self._archives, self._checkpoints, self._forwarders = store, archives, checkpoints, forwarders
        self._outbox, self._key = outbox, signing_key
        self._dir = Path(archive_dir)
        self._default_days = default_days

    async def window_days(self, tenant_id: str) -> float:
        days = await self._archives.retention_days(tenant_id)
        return float(self._default_days if days is None else days)

    def _path(self, tenant_id: str, archive_id: str) -> Path:
        return self._dir / tenant_id / f"{archive_id}.json.gz"

    async def run_tenant(self, tenant_id: str) -> list[dict[str, Any] | None]:
        """Archive everything past the window, one archive per at most MAX_ARCHIVE_RECORDS records."""
        finished = []
        while (doc := await self._next(tenant_id)) is not None:
            finished.append(await self._complete(doc))
        return finished

    async def _next(self, tenant_id: str) -> dict[str, Any] | None:
        pending = await self._archives.unfinished_archive(tenant_id)
        if pending:
            return pending  # resume what a crash interrupted
        cutoff = _rfc3339(_now() - timedelta(days=await self.window_days(tenant_id)))
        last = (await self._store.stored_head(tenant_id)).seq
        cursors = await self._forwarders.enabled_cursors(tenant_id)
        if cursors:
            last = min(last, min(cursors))  # a forwarder still owes the rest to its SIEM
        # Only a gap-free prefix of the online chain can go: stop at the first record inside the window.
        first = await self._store.first_seq(tenant_id)
        records = await self._store.read_range(tenant_id, first, min(last, first + MAX_ARCHIVE_RECORDS - 1))
        run = archivable(records, first=first, cutoff=cutoff)
        if not run:
            return None
        # If another run fixed this range first, resume that one.
        await self._archives.insert_archive(tenant_id, new_archive(run, archive_id=events.new_id("arc_"), now=_now()))
        return await self._archives.unfinished_archive(tenant_id)

    async def _write(self, doc: dict[str, Any], path: Path) -> dict[str, Any]:
        tenant_id, archive_id = doc["tenant_id"], doc["archive_id"]
        records = await self._store.read_range(tenant_id, doc["from_seq"], doc["to_seq"])
        if len(records) != doc["records"]:
            raise RuntimeError(f"archive {archive_id}: expected {doc['records']} records, found {len(records)}")
        data = build_archive(
            tenant_id=tenant_id, archive_id=archive_id, created_at=doc["created_at"],
            start=ChainHead(tenant_id, doc["start_seq"], doc["start_hash"]), records=records,
            checkpoints=await self._checkpoints.checkpoints_between(tenant_id, doc["from_seq"], doc["to_seq"]),
            signing_key=self._key,
        )
        await asyncio.to_thread(_write_atomically, path, data)
        written = {"sha256": file_sha256(data), "bytes": len(data), "file": str(path)}
        await self._archives.mark_written(tenant_id, archive_id, written)
        return {**doc, "state": "written", **written}

    async def _complete(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        tenant_id, archive_id = doc["tenant_id"], doc["archive_id"]
        path = self._path(tenant_id, archive_id)
        if doc["state"] == "writing":
            doc = await self._write(doc, path)
        if doc["state"] == "written":
            data = await asyncio.to_thread(path.read_bytes)
            if file_sha256(data) != doc["sha256"]:
                raise RuntimeError(f"archive {archive_id}: file checksum mismatch; records kept")
            # Records leave the online store only once their archive is on disk and checks out.
            await self._store.delete_range(tenant_id, doc["from_seq"], doc["to_seq"])
            event = events.AuditArchived(tenant_id=tenant_id, archive_id=archive_id, from_seq=doc["from_seq"],
                                         to_seq=doc["to_seq"], records=doc["records"], sha256=doc["sha256"])
            if not await self._archives.mark_done(tenant_id, archive_id, at=_now(), event=event):
                return await self._archives.archive(tenant_id, archive_id)  # another instance finished it
            try:
                await self._outbox.publish(self._archives.archive_collection, tenant_id, event)
            except Exception as exc:
                log.warning("archive_event_deferred", error=str(exc))
            log.info("audit_archived", tenant_id=tenant_id, archive_id=archive_id, records=doc["records"])
        return await self._archives.archive(tenant_id, archive_id)

    async def run_all(self) -> None:
        tenants = await self._store.tenants()
        for tenant_id in tenants:
            try:
                await self.run_tenant(tenant_id)
            except Exception:
                stop_if_cancelled()
                log.exception("retention_failed", tenant_id=tenant_id)

    async def loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.run_all()


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Each writer its own temporary file: two instances finishing the same archive write the same
    # bytes, and neither may rename the other's half-written file into place.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# --- RPC handlers --------------------------------------------------------------------------


def _event_fields(request: rpc.RpcRequest) -> dict[str, Any]:
    return {"tenant_id": request.tenant_id, "actor": request.actor, "correlation_id": request.correlation_id,
            "source_ip": request.source_ip}


async def get_retention(request: rpc.RpcRequest, params: NoParams, *, retention: Retention) -> RetentionWindow:
    return RetentionWindow(retention_days=await retention.window_days(request.tenant_id))


async def set_retention(request: rpc.RpcRequest, setting: RetentionSetting, *, archives: ArchiveStore,
                        outbox: Outbox) -> RetentionWindow:
    event = events.AuditRetentionUpdated(**_event_fields(request), retention_days=setting.retention_days)
    await archives.set_retention_days(request.tenant_id, setting.retention_days, event)
    await outbox.publish(archives.settings_collection, request.tenant_id, event)
    return RetentionWindow(retention_days=setting.retention_days)


async def run_retention(request: rpc.RpcRequest, params: NoParams, *, retention: Retention) -> RetentionRun:
    return RetentionRun(archives=await retention.run_tenant(request.tenant_id))


async def list_archives(request: rpc.RpcRequest, q: ArchiveQuery, *, archives: ArchiveStore) -> ArchivePage:
    """A page of the tenant's archives in chain order; `next` is the cursor of the following page."""
    docs = await archives.archives_after(request.tenant_id, q.after, q.limit)
    return ArchivePage(items=docs, next=docs[-1]["to_seq"] if len(docs) == q.limit else None)


async def _done_archive(archives: ArchiveStore, tenant_id: str, archive_id: str) -> dict[str, Any]:
    doc = await archives.done_archive(tenant_id, archive_id)
    if doc is None:
        raise rpc.NotFound("archive", "archive_id")
    return doc


async def get_archive(request: rpc.RpcRequest, ref: ArchiveRef, *, archives: ArchiveStore,
                      chunk_bytes: int) -> ArchiveInfo:
    """What a download needs first: the archive's size, checksum and the size of its chunks
    (whatever an archive's size, no message carries more than a chunk)."""
    doc = await _done_archive(archives, request.tenant_id, ref.archive_id)
    return ArchiveInfo(archive_id=doc["archive_id"], sha256=doc["sha256"], bytes=doc["bytes"], chunk_bytes=chunk_bytes)


def _read_range(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


async def archive_chunk(request: rpc.RpcRequest, q: ArchiveChunkQuery, *, archives: ArchiveStore,
                        chunk_bytes: int) -> ArchiveChunk:
    """One chunk of a finished archive, from `offset` (base64)."""
    doc = await _done_archive(archives, request.tenant_id, q.archive_id)
    if q.offset >= doc["bytes"]:
        raise rpc.ProblemError(400, "Bad Request", f"offset must be below the archive's {doc['bytes']} bytes", "offset")
    data = await asyncio.to_thread(_read_range, doc["file"], q.offset, chunk_bytes)
    return ArchiveChunk(offset=q.offset, data=base64.b64encode(data).decode("ascii"))
