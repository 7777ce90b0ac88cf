"""The gateway's on-demand binding of raw key requests: bound while a stream holds it, unbound a
linger after the last one let go, a bind the broker did not take tried again, and a stream that
reconnects after the binding lapsed told that some events may be missing."""

from __future__ import annotations

import asyncio

from services.gateway.notifications import NOTIFY_PATTERNS, Notifier
from services.gateway.stream_binding import OnDemandBinding
from shared import events
from shared.bus_memory import MemoryBus
from shared.delivery import Unavailable


class _FailingFirst:
    """A listen queue whose first bind the broker does not take."""

    def __init__(self, inner) -> None:
        self.inner, self.failed = inner, 0

    async def bind(self, pattern: str) -> None:
        if not self.failed:
            self.failed += 1
            raise Unavailable("broker away")
        await self.inner.bind(pattern)

    async def unbind(self, pattern: str) -> None:
        await self.inner.unbind(pattern)


async def _until(predicate) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.01)


def _requested(n: int) -> events.Event:
    return events.KeyRequested(tenant_id="ten_a", request_id=f"req_{n}", device_id="dev_1", key_id="key_1", facts={},
                               ephemeral_public_key="AA==")


def _quarantined() -> events.Event:
    return events.DeviceQuarantined(tenant_id="ten_a", correlation_id="c", device_id="dev_1", reason="facts")


async def test_raw_requests_reach_the_notifier_only_while_a_stream_may_show_them():
    bus = MemoryBus()
    await bus.start()
    binding = OnDemandBinding(("key.requested",), linger=0.05)
    notifier = Notifier(on_demand=binding)
    binding.attach(await bus.listen(NOTIFY_PATTERNS, notifier.on_event))
    try:
        await bus.publish(_requested(0))
        await bus.publish(marker := _quarantined())
        approvals, _, _ = await notifier.open("ten_a", ("approval.*",))  # may not show raw requests: no binding
        assert not binding.bound()
        stream, _, _ = await notifier.open("ten_a", ("key.*",))
        assert binding.bound()
        await bus.publish(first := _requested(1))
        assert (await asyncio.wait_for(stream.queue.get(), 10)).event_id == first.event_id
        notifier.unsubscribe(stream)
        notifier.unsubscribe(stream)  # twice is once
        assert binding.bound()  # the linger: a reconnect finds what came meanwhile
        await _until(lambda: not binding.bound())
        await bus.publish(_requested(2))  # nobody may show it: not delivered, not kept
        # Back with the id it saw last: the binding lapsed since, so some may be missing.
        again, replay, complete = await notifier.open("ten_a", ("key.*", "device.*"), last_event_id=marker.event_id)
        assert [e.event_id for e in replay] == [first.event_id] and not complete
        await bus.publish(third := _requested(3))
        assert (await asyncio.wait_for(again.queue.get(), 10)).event_id == third.event_id
        notifier.unsubscribe(approvals)
    finally:
        await binding.close()
        await bus.close()


async def test_a_bind_the_broker_did_not_take_is_tried_again_while_a_stream_wants_it():
    bus = MemoryBus()
    await bus.start()
    binding = OnDemandBinding(("key.requested",), linger=60)
    notifier = Notifier(on_demand=binding)
    listening = _FailingFirst(await bus.listen(NOTIFY_PATTERNS, notifier.on_event))
    binding.attach(listening)
    try:
        stream, _, _ = await notifier.open("ten_a", ("*",))  # opens though the broker refused the bind
        assert listening.failed == 1 and not binding.bound()
        await _until(binding.bound)
        await bus.publish(sent := _requested(1))
        assert (await asyncio.wait_for(stream.queue.get(), 10)).event_id == sent.event_id
    finally:
        await binding.close()
        await bus.close()
