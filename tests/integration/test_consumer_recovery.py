"""Consumers outlive their connection: the broker closes it mid-load and every event is still handled.

A batch whose write finished while its channel closed used to raise from its acknowledgement and
end the batch loop: the consumer stayed registered, messages piled up unacknowledged, and nothing
said so. These tests close the consumer's connection from the broker side (`rabbitmqctl
close_connection`), the way an operator or a broker restart does.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from shared.bus import RabbitBus
from shared.events import KeyDecided, KeyRequested, TenantCreated
from shared.topology import AUDIT_SERVICE, POLICY_SERVICE


def key_requested(n: int) -> KeyRequested:
    return KeyRequested(
        tenant_id="ten_a", request_id=f"r{n}", device_id="dev_1", key_id="key_1", facts={}, ephemeral_public_key="AA=="
    )


async def _rabbitmqctl(*args: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out


async def connection_pid(name: str) -> str:
    """The broker's process id of the connection whose client called itself `name`.

    Looked up before the load starts: rabbitmqctl takes seconds, and the close must land mid-load.
    """
    listing = json.loads(await _rabbitmqctl("list_connections", "name", "client_properties", "--formatter", "json", "-q"))
    ours = {c["name"] for c in listing
            if any(p[0] == "connection_name" and p[2] == name for p in c["client_properties"])}
    assert len(ours) == 1, f"connections named {name}: {ours}"
    # close_connection takes the process id in the form the plain listing prints.
    pids = await _rabbitmqctl("list_connections", "pid", "name", "--no-table-headers", "-q")
    return next(pid for pid, _, conn in (line.partition("\t") for line in pids.decode().splitlines()) if conn in ours)


async def close_connection(pid: str) -> None:
    await _rabbitmqctl("close_connection", pid, "closed by test_consumer_recovery")


async def wait_for(predicate, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _buses(amqp_url: str, prefix: str) -> tuple[RabbitBus, RabbitBus, str]:
    name = f"consumer-{uuid.uuid4().hex[:8]}"
    consumer = RabbitBus(amqp_url, prefix=f"{prefix}.", connection_name=name)
    publisher = RabbitBus(amqp_url, prefix=f"{prefix}.")
    await consumer.start()
    await publisher.start()
    return consumer, publisher, await connection_pid(name)


async def test_batch_consumer_goes_on_after_its_connection_is_closed_mid_write(amqp_url, prefix):
    consumer, publisher, pid = await _buses(amqp_url, prefix)
    seen: set[str] = set()
    writes = 0

    async def slow_write(events):
        nonlocal writes
        await asyncio.sleep(0.2)  # a write is in flight almost all the time, so the close lands in one
        seen.update(e.event_id for e in events)
        writes += 1

    try:
        await consumer.subscribe_batch(AUDIT_SERVICE, slow_write, max_batch=10, max_wait=0.01)
        events = [key_requested(n) for n in range(400)]
        for event in events:
            await publisher.publish(event)
        await wait_for(lambda: writes >= 2, timeout=30)
        await close_connection(pid)
        # Every event is handled at least once (a redelivered batch is the handler's to deduplicate).
        await wait_for(lambda: seen >= {e.event_id for e in events}, timeout=90)
    finally:
        await publisher.destroy()
        await publisher.close()
        await consumer.close()


async def test_single_consumer_goes_on_after_its_connection_is_closed(amqp_url, prefix):
    consumer, publisher, pid = await _buses(amqp_url, prefix)
    seen: set[str] = set()

    async def handle(event):
        await asyncio.sleep(0.02)
        seen.add(event.event_id)

    try:
        await consumer.subscribe(POLICY_SERVICE, handle, prefetch=8)
        first = [key_requested(n) for n in range(300)]
        for event in first:
            await publisher.publish(event)
        await wait_for(lambda: len(seen) >= 10, timeout=30)
        await close_connection(pid)
        later = [key_requested(100 + n) for n in range(50)]
        for event in later:
            await publisher.publish(event)
        await wait_for(lambda: seen >= {e.event_id for e in first + later}, timeout=90)
    finally:
        await publisher.destroy()
        await publisher.close()
        await consumer.close()


async def test_a_listen_queue_comes_back_with_the_bindings_it_had_when_its_connection_was_closed(amqp_url, prefix):
    # The gateway binds raw key requests on its notify queue while a stream wants them: a reconnect
    # must restore that binding, and not one taken off before it.
    consumer, publisher, pid = await _buses(amqp_url, prefix)
    heard: list[str] = []

    async def hear(event) -> None:
        heard.append(getattr(event, "request_id", None) or event.name)  # a request's id, a marker's name

    try:
        listening = await consumer.listen(["tenant.created"], hear)
        await listening.bind("key.requested")
        await listening.bind("key.decided.allow")
        await listening.unbind("key.decided.allow")
        await close_connection(pid)
        # The queue (exclusive) went with the connection; once it is back, a marker gets through.
        deadline = asyncio.get_running_loop().time() + 60
        while "marker" not in heard:
            assert asyncio.get_running_loop().time() < deadline, "the listen queue did not come back"
            await publisher.publish(TenantCreated(tenant_id="ten_a", name="marker"))
            await asyncio.sleep(0.2)
        await publisher.publish(key_requested(1))
        await publisher.publish(KeyDecided(tenant_id="ten_a", request_id="r2", device_id="dev_1", key_id="key_1",
                                           effect="allow", ephemeral_public_key="AA=="))
        await publisher.publish(TenantCreated(tenant_id="ten_a", name="last"))
        await wait_for(lambda: "last" in heard, timeout=30)
        assert [h for h in heard if h != "marker"] == ["r1", "last"]
    finally:
        await publisher.destroy()
        await publisher.close()
        await consumer.close()
