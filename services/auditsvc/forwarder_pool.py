"""The pool that runs continuous forwarders: one task per enabled forwarder, each a loop of batches.

Each forwarder keeps a durable cursor (the last sequence number it forwarded) in its document.
A task reads records after the cursor, sends the selected ones, and moves the cursor only once
the destination took them (compare-and-swap on the old cursor). A failure keeps the cursor,
records the error for operators and retries with exponential backoff; a restart resumes from the
stored cursor. A lease per forwarder keeps a second auditsvc instance from sending the same batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import structlog

from shared import events
from shared.crypto.envelope import UnwrapError
from shared.crypto.sealing import SecretSealer
from shared.service import stop_if_cancelled

from .destinations import Allowed
from .forwarders import open_secret
from .forwarding import backoff_seconds, failed_state, payload, sealed_elsewhere_state, selected
from .search import Criteria
from .senders import Sender, SendError, SyslogSender, WebhookSender, tls_context
from .settings import AuditSettings
from .store import AuditStore
from .store_forwarders import ForwarderStore

log = structlog.get_logger("strongroom.auditsvc")


def _now() -> datetime:
    return datetime.now(UTC)


def _age(time: str) -> float:
    return max(0.0, (_now() - datetime.fromisoformat(time.replace("Z", "+00:00"))).total_seconds())


def _sender_for(doc: dict[str, Any], sealer: SecretSealer, allow: tuple[Allowed, ...]) -> Sender:
    if doc["kind"] == "webhook":
        return WebhookSender(doc["url"], open_secret(sealer, doc), forwarder_id=doc["forwarder_id"], allow=allow)
    tls = tls_context(doc.get("tls_ca_pem")) if doc["kind"] == "syslog_tls" else None
    return SyslogSender(doc["host"], doc["port"], tls=tls, server_name=doc.get("tls_server_name"), allow=allow)


def _fingerprint(doc: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(doc.get(k) for k in ("kind", "host", "port", "url", "tls_ca_pem", "tls_server_name", "secret"))


async def forward_batch(doc: dict[str, Any], sender: Sender, *, store: AuditStore, forwarders: ForwarderStore,
                        batch_size: int, hostname: str, failures: int, max_backoff: float,
                        behind: Callable[[float], None] | None = None) -> tuple[int, float | None]:
    """Send the next batch after the forwarder's cursor and move the cursor past it; `behind`
    hears how old the oldest unsent record is (0 when none waits).

    Returns the consecutive failures so far and how long to wait before the next batch: the
    backoff after a failure, None when nothing was waiting (poll), 0 when a batch went out.
    """
    tenant_id, forwarder_id, cursor = doc["tenant_id"], doc["forwarder_id"], doc.get("cursor", 0)
    records = await store.query(tenant_id, Criteria(), after_seq=cursor, limit=batch_size)
    if behind is not None:
        behind(_age(records[0]["time"]) if records else 0.0)
    if not records:
        return failures, None
    chosen = [r for r in records if selected(r["action"], doc.get("event_types") or [])]
    try:
        if chosen:
            await sender.send(payload(doc, chosen, hostname=hostname))
    except SendError as exc:
        failures += 1
        delay = backoff_seconds(failures, cap=max_backoff)
        await forwarders.record_state(tenant_id, forwarder_id, failed_state(failures, str(exc), now=_now(), delay=delay))
        # The tenant sees the generic message; what failed, and where, is for the provider's log.
        log.warning("forwarder_send_failed", tenant_id=tenant_id, forwarder_id=forwarder_id, failures=failures,
                    error=str(exc), detail=exc.detail)
        return failures, delay
    if not await forwarders.advance_cursor(tenant_id, forwarder_id, cursor=cursor, to=records[-1]["seq"],
                                           delivered=len(chosen), at=_now()):
        log.warning("forwarder_cursor_moved", forwarder_id=forwarder_id)  # lease lost: re-read before sending more
    return 0, 0.0


class ForwarderPool:
    """Runs one task per enabled forwarder; `stop` lets each finish its batch before it ends."""

    def __init__(self, store: AuditStore, forwarders: ForwarderStore, settings: AuditSettings, sealer: SecretSealer):
        self._store = store
        self._forwarders = forwarders
        self._settings = settings
        self._sealer = sealer
        self._allow = settings.forwarder_allowlist
        self._owner = events.new_id("fwdpool_")
        self._hostname = socket.gethostname()
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        # How old each running forwarder's oldest unsent record was at its last batch (forwarder lag).
        self.behind: dict[tuple[str, str], float] = {}
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                wanted = set(await self._forwarders.enabled_forwarders())
                for key in wanted - set(self._tasks):
                    self._tasks[key] = asyncio.create_task(self._forward(*key))
                for key, task in list(self._tasks.items()):
                    if task.done():
                        del self._tasks[key]
            except Exception:
                stop_if_cancelled()
                log.exception("forwarder_pool_failed")
            await self._pause(self._settings.forwarder_poll_seconds)

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _lease(self, tenant_id: str, forwarder_id: str) -> bool:
        now = _now()
        return await self._forwarders.take_lease(tenant_id, forwarder_id, owner=self._owner, now=now,
                                                 until=now + timedelta(seconds=self._settings.forwarder_lease_seconds))

    async def _forward(self, tenant_id: str, forwarder_id: str) -> None:
        settings = self._settings
        sender: Sender | None = None
        fingerprint: tuple[Any, ...] = ()
        failures = 0
        try:
            while not self._stopping.is_set():
                doc = await self._forwarders.forwarder(tenant_id, forwarder_id)
                if doc is None or not doc.get("enabled"):
                    return
                if not await self._lease(tenant_id, forwarder_id):
                    await self._pause(settings.forwarder_lease_seconds / 3)
                    continue
                if sender is None or _fingerprint(doc) != fingerprint:
                    if sender is not None:
                        await sender.close()
                        sender = None
                    try:
                        sender, fingerprint = _sender_for(doc, self._sealer, self._allow), _fingerprint(doc)
                    except UnwrapError:  # sealed under another data key: only a rotation helps
                        await self._forwarders.record_state(tenant_id, forwarder_id, sealed_elsewhere_state(_now()))
                        await self._pause(settings.forwarder_max_backoff_seconds)
                        continue
                failures, pause = await forward_batch(
                    doc, sender, store=self._store, forwarders=self._forwarders, batch_size=settings.forwarder_batch_size,
                    hostname=self._hostname, failures=failures, max_backoff=settings.forwarder_max_backoff_seconds,
                    behind=partial(self.behind.__setitem__, (tenant_id, forwarder_id)))
                if pause is None or pause > 0:
                    await self._pause(settings.forwarder_poll_seconds if pause is None else pause)
        except asyncio.CancelledError:
            raise
        except Exception:
            stop_if_cancelled()
            log.exception("forwarder_failed", forwarder_id=forwarder_id)
        finally:
            self.behind.pop((tenant_id, forwarder_id), None)
            if sender is not None:
                await sender.close()
            await self._forwarders.release_lease(tenant_id, forwarder_id, owner=self._owner)
