"""Checkpoint scheduling against memory stores and a fake clock: by count, by time, across a restart."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auditsvc import handlers
from services.auditsvc.checkpoints import Checkpointer
from services.auditsvc.settings import AuditSettings
from services.auditsvc.store_memory import MemoryAuditStore, MemoryCheckpointStore
from shared import commands_audit as c
from tests.unit.auditsvc_twins import Outbox, ingest, key_created, request

KEY = Ed25519PrivateKey.generate()


def _checkpointer(store, checkpoints, clock, every_records=5, every_seconds=60.0) -> Checkpointer:
    return Checkpointer(store, checkpoints, Outbox(), KEY, every_records=every_records, every_seconds=every_seconds,
                        clock=lambda: clock[0])


async def _last_seq(checkpoints, tenant="t1"):
    last = await checkpoints.last_checkpoint(tenant)
    return last and last["seq"]


async def test_every_n_records_and_every_t_seconds():
    store, checkpoints, clock = MemoryAuditStore(), MemoryCheckpointStore(), [0.0]
    cp = _checkpointer(store, checkpoints, clock)
    await ingest(store, [key_created("t1", i) for i in range(4)], checkpointer=cp)
    assert await _last_seq(checkpoints) is None
    await ingest(store, [key_created("t1", 4)], checkpointer=cp)
    assert await _last_seq(checkpoints) == 5
    await ingest(store, [key_created("t1", 5)], checkpointer=cp)
    await cp.due()
    assert await _last_seq(checkpoints) == 5  # too soon
    clock[0] += 60
    await cp.due()
    assert await _last_seq(checkpoints) == 6
    clock[0] += 600
    await cp.due()
    assert await _last_seq(checkpoints) == 6  # nothing new: an idle tenant is not re-signed
    assert [e.checkpoint_seq for e in checkpoints.staged] == [5, 6]


async def test_checkpoint_events_do_not_count_towards_the_next_checkpoint():
    store, checkpoints, clock = MemoryAuditStore(), MemoryCheckpointStore(), [0.0]
    cp = _checkpointer(store, checkpoints, clock, every_records=2)
    await ingest(store, [key_created("t1", i) for i in range(2)], checkpointer=cp)
    await ingest(store, list(checkpoints.staged), checkpointer=cp)  # the audit.checkpointed event comes back
    clock[0] += 120
    await cp.due()
    assert [e.checkpoint_seq for e in checkpoints.staged] == [2]


async def test_a_restart_keeps_counting_and_keeps_the_interval():
    store, checkpoints, clock = MemoryAuditStore(), MemoryCheckpointStore(), [1000.0]
    first = _checkpointer(store, checkpoints, clock)
    await first.register_key()
    await ingest(store, [key_created("t1", i) for i in range(3)], checkpointer=first)
    second = _checkpointer(store, checkpoints, clock)
    await second.load()
    await ingest(store, [key_created("t1", i) for i in range(3, 5)], checkpointer=second)
    assert await _last_seq(checkpoints) == 5
    keys = await handlers.signing_keys(request(), c.NoParams(), checkpoints=checkpoints, current_key_id=second.key_id)
    assert keys.current is not None and keys.current["key_id"] == second.key_id and len(keys.keys) == 1
    page = await handlers.list_checkpoints(request(), c.CheckpointQuery(), checkpoints=checkpoints)
    assert [p["seq"] for p in page.items] == [5] and page.next is None


async def test_the_unsigned_tail_is_bounded_in_time_while_records_arrive():
    """A record a second, each followed by a scheduler tick: none waits longer than the setting."""
    every = AuditSettings().checkpoint_every_seconds
    assert every <= 10
    store, checkpoints, clock = MemoryAuditStore(), MemoryCheckpointStore(), [0.0]
    cp = _checkpointer(store, checkpoints, clock, every_records=1000, every_seconds=every)
    arrived: dict[int, float] = {}
    for i in range(60):
        await ingest(store, [key_created("t1", i)], checkpointer=cp)
        arrived[i + 1] = clock[0]
        clock[0] += 1.0
        await cp.due()
        signed = await _last_seq(checkpoints) or 0
        assert all(clock[0] - at <= every + 1.0 for seq, at in arrived.items() if seq > signed)
    assert len(checkpoints.staged) >= 60 // (every + 1)


async def test_an_instance_standing_by_leaves_the_signing_to_the_one_appending():
    store, checkpoints, clock = MemoryAuditStore(), MemoryCheckpointStore(), [1000.0]
    active = _checkpointer(store, checkpoints, clock, every_records=1000)
    await ingest(store, [key_created("t1", i) for i in range(3)], checkpointer=active)
    standby = _checkpointer(store, checkpoints, clock, every_records=1000)
    await standby.load()  # started while the other consumes the audit queue: it knows seq 3
    await ingest(store, [key_created("t1", i) for i in range(3, 6)], checkpointer=active)
    clock[0] += 60
    await standby.due()
    await active.due()
    assert [e.checkpoint_seq for e in checkpoints.staged] == [6]  # the live head, signed once


async def test_a_lone_instance_signs_what_it_found_at_start():
    store, checkpoints, clock = MemoryAuditStore(), MemoryCheckpointStore(), [1000.0]
    await ingest(store, [key_created("t1", i) for i in range(3)], checkpointer=_checkpointer(store, checkpoints, clock))
    restarted = _checkpointer(store, checkpoints, clock)
    await restarted.load()
    clock[0] += 60
    await restarted.due()
    assert [e.checkpoint_seq for e in checkpoints.staged] == [3]
