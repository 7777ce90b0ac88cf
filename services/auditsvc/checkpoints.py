"""Signed checkpoints of each tenant's chain head: every N records or T seconds, stored and published.

A checkpoint is stored with its `audit.checkpointed` event staged in the same write (outbox), so
a broker outage delays its publication but never loses it. The event is itself audited; it does
not count towards the next checkpoint, or an idle tenant would checkpoint its own checkpoints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.audit_chain import ChainHead
from shared.events import AuditCheckpointed
from shared.outbox import Outbox
from shared.service import stop_if_cancelled
from shared.signatures import key_fingerprint

from .chain import make_checkpoint
from .search import Criteria
from .signing import public_pem
from .store import AuditStore
from .store_checkpoints import CheckpointStore

log = structlog.get_logger("strongroom.auditsvc")

CHECKPOINT_TYPE = "audit.checkpointed"


class Checkpointer:
    def __init__(self, store: AuditStore, checkpoints: CheckpointStore, outbox: Outbox, signing_key: Ed25519PrivateKey,
                 *, every_records: int, every_seconds: float, clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._checkpoints = checkpoints
        self._outbox = outbox
        self._key = signing_key
        self.key_id = key_fingerprint(signing_key.public_key())
        self._every_records = max(1, every_records)
        self._every_seconds = every_seconds
        self._clock = clock
        self._pending: dict[str, int] = {}  # records since the tenant's last checkpoint
        self._last_at: dict[str, float] = {}
        self._heads: dict[str, ChainHead] = {}

    async def register_key(self) -> None:
        doc = {"key_id": self.key_id, "algorithm": "Ed25519", "public_key_pem": public_pem(self._key.public_key()),
               "first_used": datetime.now(UTC)}
        await self._checkpoints.register_signing_key(doc)

    async def load(self) -> None:
        """Pick up where the last process stopped: each tenant's records since its last checkpoint,
        and how long ago that was, from the store (a restart must not restart the interval)."""
        now_wall, now = datetime.now(UTC), self._clock()
        for tenant in await self._store.tenants():
            head = await self._store.stored_head(tenant)
            last = await self._checkpoints.last_checkpoint(tenant)
            since = last["seq"] if last else 0
            # Checkpoint records themselves do not count (see the module docstring).
            own = await self._store.query(tenant, Criteria(action=CHECKPOINT_TYPE), after_seq=since, limit=10_000)
            self._heads[tenant] = head
            self._pending[tenant] = max(0, head.seq - since - len(own))
            # The interval runs from the last checkpoint, or from the first record never signed.
            if last is not None:
                since_time = last["time"]
            else:
                first = await self._store.query(tenant, Criteria(), after_seq=0, limit=1)
                if not first:
                    continue
                since_time = first[0]["time"]
            age = (now_wall - datetime.fromisoformat(since_time)).total_seconds()
            self._last_at[tenant] = now - max(0.0, age)

    async def appended(self, head: ChainHead, counted: int) -> None:
        """After a batch: `counted` records (checkpoint events excluded) joined `head`'s chain."""
        tenant = head.tenant_id
        self._heads[tenant] = head
        self._last_at.setdefault(tenant, self._clock())
        self._pending[tenant] = self._pending.get(tenant, 0) + counted
        if self._pending[tenant] >= self._every_records:
            await self.checkpoint(head)

    async def due(self) -> None:
        """Time-based: checkpoint every tenant with new records whose last checkpoint is old enough.

        Only the instance appending a tenant's records signs them: one whose chain has moved on past
        what this instance knows is being appended to by another (the audit queue's active consumer,
        this one standing by), so this one leaves the signing to it rather than sign an old head."""
        now = self._clock()
        for tenant, pending in list(self._pending.items()):
            if pending > 0 and now - self._last_at.get(tenant, now) >= self._every_seconds:
                if (await self._store.stored_head(tenant)).seq != self._heads[tenant].seq:
                    self._pending[tenant], self._last_at[tenant] = 0, now
                    continue
                await self.checkpoint(self._heads[tenant])

    async def checkpoint(self, head: ChainHead) -> dict[str, Any] | None:
        if head.seq == 0:
            return None
        self._pending[head.tenant_id] = 0
        self._last_at[head.tenant_id] = self._clock()
        cp = make_checkpoint(head, signing_key=self._key, at=datetime.now(UTC))
        event = AuditCheckpointed(
            tenant_id=head.tenant_id, checkpoint_seq=cp["seq"], chain_hash=cp["hash"],
            checkpoint_time=cp["time"], signing_key_id=cp["key_id"], signature=cp["signature"],
        )
        if not await self._checkpoints.insert_checkpoint(head.tenant_id, cp, event):
            return None  # this head is already signed
        try:
            await self._outbox.publish(self._checkpoints.collection, head.tenant_id, event)
        except Exception as exc:  # the relay publishes it later; ingestion must not stop for it
            log.warning("checkpoint_publish_deferred", error=str(exc))
        log.info("audit_checkpointed", tenant_id=head.tenant_id, seq=head.seq)
        return cp

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.due()
            except Exception:
                stop_if_cancelled()
                log.exception("checkpoint_failed")
