"""Acks that wait for one another (shared/bus_acks.py) against the real broker: a cumulative ack
never settles a delivery whose handler is still running, and acks held when the bus closes are sent."""

from __future__ import annotations

import asyncio

from shared.bus import RabbitBus

from .test_bus_contract import key_requested, wait_for


async def make_rabbit_bus(amqp_url: str, prefix: str) -> RabbitBus:
    bus = RabbitBus(amqp_url, prefix=prefix)
    await bus.start()
    return bus


async def test_a_running_delivery_is_redelivered_and_those_acked_before_it_are_not(amqp_url, prefix):
    first = await make_rabbit_bus(amqp_url, f"{prefix}.")
    release, seen, done = asyncio.Event(), [], []

    async def slow_third(event):
        seen.append(event.request_id)
        if event.request_id == "r2":
            await release.wait()
        done.append(event.request_id)

    await first.subscribe("policysvc", slow_third)
    for n in range(5):
        await first.publish(key_requested(n))
    await wait_for(lambda: len(seen) == 5 and len(done) == 4)
    await first.close()  # r0 and r1 are acked (a cumulative ack); r2 runs, so nothing after it is
    release.set()

    second = await make_rabbit_bus(amqp_url, f"{prefix}.")
    try:
        again = []

        async def record(event):
            again.append(event.request_id)

        await second.subscribe("policysvc", record)
        await second.publish(key_requested(5))  # requeued deliveries come before it
        await wait_for(lambda: "r2" in again and "r5" in again)
        assert "r0" not in again and "r1" not in again, again
        assert set(again) <= {"r2", "r3", "r4", "r5"}, again
    finally:
        await second.destroy()
        await second.close()


async def test_acks_settle_every_delivery_a_consumer_handled(amqp_url, prefix):
    first = await make_rabbit_bus(amqp_url, f"{prefix}.")
    handled = []

    async def handler(event):
        await asyncio.sleep(0.002 * (int(event.request_id[1:]) % 5))  # they finish out of order
        handled.append(event.request_id)

    await first.subscribe("policysvc", handler)
    for n in range(40):
        await first.publish(key_requested(n))
    await wait_for(lambda: len(handled) == 40)
    await first.close()

    second = await make_rabbit_bus(amqp_url, f"{prefix}.")
    try:
        again = []

        async def record(event):
            again.append(event.request_id)

        await second.subscribe("policysvc", record)
        await second.publish(key_requested(99))
        await wait_for(lambda: "r99" in again)
        assert again == ["r99"]
    finally:
        await second.destroy()
        await second.close()
