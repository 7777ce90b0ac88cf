"""A consumer that stops making progress while its queue holds messages is reported: a log line
(`consumer_stalled`) and the bus's `stalled()` (which the gateway's health reports), and it is
cleared once the consumer moves again. Real RabbitMQ; the stuck handler stands for a batch loop
that ended or a dependency that hangs."""

from __future__ import annotations

import asyncio
import uuid

import structlog

from shared.bus import RabbitBus
from shared.events import KeyRequested
from shared.topology import AUDIT_SERVICE


def _requested(n: int) -> KeyRequested:
    return KeyRequested(tenant_id="ten_a", request_id=f"r{n}", device_id="dev_1", key_id="key_1", facts={},
                        ephemeral_public_key="AA==")


async def _until(predicate, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_a_stuck_batch_consumer_is_reported_and_cleared_when_it_moves(amqp_url):
    prefix = f"test-stall-{uuid.uuid4().hex[:8]}."
    bus = RabbitBus(amqp_url, prefix=prefix, stall_seconds=1.0)
    await bus.start()
    unblock, handled = asyncio.Event(), []

    async def stuck(events) -> None:
        await unblock.wait()
        handled.extend(e.event_id for e in events)

    try:
        await bus.subscribe_batch(AUDIT_SERVICE, stuck, max_batch=8)
        with structlog.testing.capture_logs() as logs:
            for n in range(3):
                await bus.publish(_requested(n))
            await _until(lambda: bus.stalled() == [AUDIT_SERVICE])
            assert next(entry for entry in logs if entry["event"] == "consumer_stalled")["queue"] == AUDIT_SERVICE
            unblock.set()
            await _until(lambda: len(handled) == 3 and bus.stalled() == [])
            assert any(entry["event"] == "consumer_resumed" for entry in logs)
    finally:
        unblock.set()
        await bus.destroy()
        await bus.close()
