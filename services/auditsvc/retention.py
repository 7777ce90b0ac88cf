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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import events, rpc
from shared.outbox import Outbox, push, staged
from shared.store import DuplicateKeyError

from .archive import build_archive, file_sha256
from .chain import ChainHead
from .store import AuditStore

log = structlog.get_logger("strongroom.auditsvc")

MAX_ARCHIVE_RECORDS = 10_000


class RetentionSetting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Days, fractions allowed (a test's window is seconds); at most a century.
    retention_days: float = Field(gt=0, le=36500)


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Retention:
    def __init__(self, store: AuditStore, outbox: Outbox, signing_key: Ed25519PrivateKey, *,
                 archive_dir: str, default_days: float):
        self._store, self._outbox, self._key = store, outbox, signing_key
        self._dir = Path(archive_dir)
        self._default_days = default_days

    async def window_days(self, tenant_id: str) -> float:
        return float(await self._store.tenant_setting(tenant_id, "retention_days", self._default_days))

    def _path(self, tenant_id: str, archive_id: str) -> Path:
        return self._dir / tenant_id / f"{archive_id}.json.gz"

    async def run_tenant(self, tenant_id: str) -> list[dict[str, Any]]:
        """Archive everything past the window, one archive per at most MAX_ARCHIVE_RECORDS records."""
        finished = []
        while (doc := await self._next(tenant_id)) is not None:
            finished.append(await self._complete(doc))
        return finished

    async def _next(self, tenant_id: str) -> dict[str, Any] | None:
        pending = await self._store.archives.find(tenant_id, {"state": {"$ne": "done"}}, sort=[("to_seq", 1)], limit=1)
        if pending:
            return pending[0]  # resume what a crash interrupted
        cutoff = _rfc3339(_now() - timedelta(days=await self.window_days(tenant_id)))
        last = (await self._store.stored_head(tenant_id)).seq
        cursors = [d.get("cursor", 0) for d in await self._store.forwarders.find(tenant_id, {"enabled": True})]
        if cursors:
            last = min(last, min(cursors))  # a forwarder still owes the rest to its SIEM
        # Only a gap-free prefix of the online chain can go: stop at the first record inside the window.
        first = await self._store.first_seq(tenant_id)
        run = []
        for record in await self._store.read_range(tenant_id, first, min(last, first + MAX_ARCHIVE_RECORDS - 1)):
            if record["time"] >= cutoff or record["seq"] != first + len(run):
                break
            run.append(record)
        if not run:
            return None
        doc = {
            "archive_id": events.new_id("arc_"), "state": "writing", "created_at": _rfc3339(_now()),
            "from_seq": run[0]["seq"], "to_seq": run[-1]["seq"], "to_hash": run[-1]["hash"],
            "start_seq": run[0]["seq"] - 1, "start_hash": run[0]["prev_hash"], "records": len(run),
        }
        try:
            await self._store.archives.insert(tenant_id, doc)
        except DuplicateKeyError:
            pass  # another run fixed this range first: resume that one
        found = await self._store.archives.find(tenant_id, {"state": {"$ne": "done"}}, sort=[("to_seq", 1)], limit=1)
        return found[0] if found else None

    async def _complete(self, doc: dict[str, Any]) -> dict[str, Any]:
        tenant_id, archive_id = doc["tenant_id"], doc["archive_id"]
        span = {"seq": {"$gte": doc["from_seq"], "$lte": doc["to_seq"]}}  # of checkpoints
        path = self._path(tenant_id, archive_id)
        if doc["state"] == "writing":
            records = await self._store.read_range(tenant_id, doc["from_seq"], doc["to_seq"])
            if len(records) != doc["records"]:
                raise RuntimeError(f"archive {archive_id}: expected {doc['records']} records, found {len(records)}")
            checkpoints = await self._store.checkpoints.find(tenant_id, span, sort=[("seq", 1)],
                                                             projection={"_id": 0, "_outbox": 0})
            data = build_archive(
                tenant_id=tenant_id, archive_id=archive_id, created_at=doc["created_at"],
                start=ChainHead(tenant_id, doc["start_seq"], doc["start_hash"]),
                records=records, checkpoints=checkpoints, signing_key=self._key,
            )
            await asyncio.to_thread(_write_atomically, path, data)
            digest = file_sha256(data)
            await self._store.archives.update_one(tenant_id, {"archive_id": archive_id, "state": "writing"},
                                                  {"$set": {"state": "written", "sha256": digest, "bytes": len(data),
                                                            "file": str(path)}})
            doc = {**doc, "state": "written", "sha256": digest, "bytes": len(data), "file": str(path)}
        if doc["state"] == "written":
            data = await asyncio.to_thread(path.read_bytes)
            if file_sha256(data) != doc["sha256"]:
                raise RuntimeError(f"archive {archive_id}: file checksum mismatch; records kept")
            # Records leave the online store only once their archive is on disk and checks out.
            await self._store.delete_range(tenant_id, doc["from_seq"], doc["to_seq"])
            event = events.AuditArchived(tenant_id=tenant_id, archive_id=archive_id, from_seq=doc["from_seq"],
                                         to_seq=doc["to_seq"], records=doc["records"], sha256=doc["sha256"])
            await self._store.archives.update_one(tenant_id, {"archive_id": archive_id, "state": "written"},
                                                  {"$set": {"state": "done", "archived_at": _now()}, **push(event)})
            try:
                await self._outbox.publish(self._store.archives.raw, tenant_id, event)
            except Exception as exc:
                log.warning("archive_event_deferred", error=str(exc))
            log.info("audit_archived", tenant_id=tenant_id, archive_id=archive_id, records=doc["records"])
        return await self._store.archives.find_one(tenant_id, {"archive_id": archive_id}, projection={"_id": 0, "_outbox": 0})

    async def run_all(self) -> None:
        tenants = await self._store.tenants()
        for tenant_id in tenants:
            try:
                await self.run_tenant(tenant_id)
            except Exception:
                log.exception("retention_failed", tenant_id=tenant_id)

    async def loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.run_all()


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# --- RPC handlers --------------------------------------------------------------------------


def _event_fields(request: rpc.RpcRequest) -> dict[str, Any]:
    return {"tenant_id": request.tenant_id, "actor": request.actor, "correlation_id": request.correlation_id,
            "source_ip": request.source_ip}


async def get_retention(request: rpc.RpcRequest, params: dict[str, Any], *, retention: Retention) -> dict[str, Any]:
    return {"retention_days": await retention.window_days(request.tenant_id)}


async def set_retention(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore,
                        outbox: Outbox) -> dict[str, Any]:
    try:
        setting = RetentionSetting.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise rpc.ProblemError(422, "Unprocessable Content", f"{field}: {err['msg']}", field) from None
    event = events.AuditRetentionUpdated(**_event_fields(request), retention_days=setting.retention_days)
    updated = await store.settings.update_one(request.tenant_id, {}, {"$set": {"retention_days": setting.retention_days},
                                                                       **push(event)})
    if not updated:
        try:
            await store.settings.insert(request.tenant_id, staged({"retention_days": setting.retention_days}, event))
        except DuplicateKeyError:
            await store.settings.update_one(request.tenant_id, {}, {"$set": {"retention_days": setting.retention_days},
                                                                   **push(event)})
    await outbox.publish(store.settings.raw, request.tenant_id, event)
    return {"retention_days": setting.retention_days}


async def run_retention(request: rpc.RpcRequest, params: dict[str, Any], *, retention: Retention) -> dict[str, Any]:
    done = await retention.run_tenant(request.tenant_id)
    return {"archives": done}


class ArchivePage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after: int = Field(default=0, ge=0)  # the last to_seq of the previous page
    limit: int = Field(default=100, ge=1, le=1000)


class ArchiveChunk(BaseModel):
    model_config = ConfigDict(extra="forbid")
    archive_id: str = Field(max_length=100)
    offset: int = Field(ge=0)


def _validated(model: type[BaseModel], params: dict[str, Any]) -> Any:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise rpc.ProblemError(400, "Bad Request", f"{field}: {err['msg']}", field) from None


async def list_archives(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore) -> dict[str, Any]:
    """A page of the tenant's archives in chain order; `next` is the cursor of the following page."""
    q: ArchivePage = _validated(ArchivePage, params)
    docs = await store.archives.find(request.tenant_id, {"to_seq": {"$gt": q.after}}, sort=[("to_seq", 1)],
                                     limit=q.limit, projection={"_id": 0, "_outbox": 0, "file": 0})
    return {"items": docs, "next": docs[-1]["to_seq"] if len(docs) == q.limit else None}


async def _done_archive(store: AuditStore, tenant_id: str, archive_id: str) -> dict[str, Any]:
    doc = await store.archives.find_one(tenant_id, {"archive_id": archive_id, "state": "done"})
    if doc is None:
        raise rpc.NotFound("archive", "archive_id")
    return doc


async def get_archive(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore,
                      chunk_bytes: int) -> dict[str, Any]:
    """What a download needs first: the archive's size, checksum and the size of its chunks
    (whatever an archive's size, no message carries more than a chunk)."""
    doc = await _done_archive(store, request.tenant_id, str(params.get("archive_id")))
    return {"archive_id": doc["archive_id"], "sha256": doc["sha256"], "bytes": doc["bytes"],
            "chunk_bytes": chunk_bytes}


def _read_range(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


async def archive_chunk(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore,
                        chunk_bytes: int) -> dict[str, Any]:
    """One chunk of a finished archive, from `offset` (base64)."""
    q: ArchiveChunk = _validated(ArchiveChunk, params)
    doc = await _done_archive(store, request.tenant_id, q.archive_id)
    if q.offset >= doc["bytes"]:
        raise rpc.ProblemError(400, "Bad Request", f"offset must be below the archive's {doc['bytes']} bytes", "offset")
    data = await asyncio.to_thread(_read_range, doc["file"], q.offset, chunk_bytes)
    return {"offset": q.offset, "data": base64.b64encode(data).decode("ascii")}
