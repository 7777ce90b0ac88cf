"""One contract for both buses: routing, ack-after-effect, dead letters, batches, request/reply."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from shared import rpc
from shared.bus import BusError, BusTimeout
from shared.events import KeyDecided, KeyRequested, TenantCreated


def key_requested(n: int = 0) -> KeyRequested:
    return KeyRequested(
        tenant_id="ten_a", request_id=f"r{n}", device_id="dev_1", key_id="key_1", facts={}, ephemeral_public_key="AA=="
    )


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_topic_routing_delivers_to_bound_services_only(any_bus):
    policy, audit = [], []

    async def on_policy(event):
        policy.append(event)

    async def on_audit(event):
        audit.append(event)

    await any_bus.subscribe("policysvc", on_policy)
    await any_bus.subscribe("auditsvc", on_audit)
    await any_bus.publish(key_requested())
    await any_bus.publish(TenantCreated(tenant_id="ten_a", name="acme"))
    await wait_for(lambda: len(audit) == 2 and len(policy) == 1)
    assert [e.type for e in policy] == ["key.requested"]
    assert {e.type for e in audit} == {"key.requested", "tenant.created"}
    assert policy[0] == key_requested().model_copy(update={"event_id": policy[0].event_id, "correlation_id": policy[0].correlation_id, "occurred_at": policy[0].occurred_at})


async def test_a_decision_goes_to_keysvc_if_allowed_and_to_the_waiting_gateway_otherwise(any_bus):
    released, answered, audited = [], [], []

    async def keep(into, event):
        into.append(event.effect)

    await any_bus.subscribe("keysvc", lambda event: keep(released, event))
    await any_bus.subscribe("auditsvc", lambda event: keep(audited, event))
    await any_bus.listen(["key.decided.deny", "key.decided.require_approval"], lambda event: keep(answered, event))
    for effect in ("allow", "deny", "require_approval"):
        await any_bus.publish(KeyDecided(tenant_id="ten_a", request_id=f"r_{effect}", device_id="dev_1",
                                         key_id="key_1", effect=effect, ephemeral_public_key="AA=="))
    await wait_for(lambda: len(audited) == 3 and len(released) + len(answered) == 3)
    assert released == ["allow"] and sorted(answered) == ["deny", "require_approval"]


async def test_an_audited_publish_reaches_auditsvc_once_and_every_other_consumer(any_bus):
    audited, decided, heard = [], [], []
    await any_bus.subscribe("auditsvc", lambda event: _append(audited, event))
    await any_bus.subscribe("policysvc", lambda event: _append(decided, event))
    await any_bus.listen(["key.requested"], lambda event: _append(heard, event))
    sent = key_requested()

    await any_bus.publish_audited(sent)

    await wait_for(lambda: audited and decided and heard)
    await asyncio.sleep(0.3)  # a second copy, if any, would have arrived by now
    assert [e.event_id for e in audited] == [e.event_id for e in decided] == [e.event_id for e in heard] == [sent.event_id]


async def _append(into: list, event) -> None:
    into.append(event)


async def test_messages_wait_in_the_queue_until_the_service_consumes(any_bus):
    sent = [key_requested(i) for i in range(5)]
    for event in sent:
        await any_bus.publish(event)
    got = []

    async def handler(event):
        got.append(event.event_id)

    await any_bus.subscribe("policysvc", handler)
    await wait_for(lambda: len(got) == 5)
    assert sorted(got) == sorted(e.event_id for e in sent)


async def test_malformed_message_is_dead_lettered_with_reason_and_consumer_goes_on(any_bus):
    got = []

    async def handler(event):
        got.append(event)

    await any_bus.subscribe("policysvc", handler)
    await any_bus.publish_raw("key.requested", b"{not json")
    await any_bus.publish_raw("key.requested", b'{"type": "key.requested", "version": 1}')
    await any_bus.publish(key_requested(7))
    await wait_for(lambda: len(got) == 1)
    letters = []

    async def collect():
        letters.extend(await any_bus.dead_letters())
        return len(letters) >= 2

    deadline = asyncio.get_running_loop().time() + 10
    while not await collect():
        assert asyncio.get_running_loop().time() < deadline, letters
        await asyncio.sleep(0.05)
    reasons = sorted(letter.reason for letter in letters)
    assert any("not JSON" in r for r in reasons)
    assert any("tenant_id: Field required" in r for r in reasons)
    assert all(letter.routing_key == "key.requested" for letter in letters)
    assert got[0].request_id == "r7"


async def test_failed_handler_is_redelivered_until_it_succeeds(any_bus):
    attempts = []

    async def flaky(event):
        attempts.append(event.event_id)
        if len(attempts) < 3:
            raise RuntimeError("transient")

    await any_bus.subscribe("policysvc", flaky)
    event = key_requested()
    await any_bus.publish(event)
    await wait_for(lambda: len(attempts) == 3)
    await asyncio.sleep(0.2)
    assert attempts == [event.event_id] * 3


async def test_poison_message_is_dead_lettered_after_the_delivery_limit(any_bus):
    attempts = []

    async def always_fails(event):
        attempts.append(1)
        raise RuntimeError("poison")

    await any_bus.subscribe("policysvc", always_fails)
    await any_bus.publish(key_requested())
    letters = []
    deadline = asyncio.get_running_loop().time() + 20
    while not letters:
        assert asyncio.get_running_loop().time() < deadline, f"not dead-lettered after {len(attempts)} attempts"
        letters = await any_bus.dead_letters()
        await asyncio.sleep(0.1)
    assert "delivery_limit" in letters[0].reason or "delivery-limit" in letters[0].reason
    assert 2 <= len(attempts) <= 12


async def test_batch_subscription_gets_batches_and_acks_them(any_bus):
    batches = []

    async def handler(events):
        batches.append(len(events))

    for i in range(50):
        await any_bus.publish(key_requested(i))
    await any_bus.subscribe_batch("auditsvc", handler, max_batch=20, max_wait=0.05)
    await wait_for(lambda: sum(batches) == 50)
    assert max(batches) <= 20
    assert len(batches) < 50  # really batched, not one by one


class TwoStepRecorder:
    """A staged batch handler that records what it prepared and wrote, and fails one write."""

    def __init__(self, fail_write: int | None = None):
        self.fail_write = fail_write
        self.written: list[str] = []
        self.unwritten: list[str] = []  # what prepare saw as pending: must be dropped on abandon
        self.overlapped = 0  # prepares that ran while an earlier write was still going
        self.abandoned = 0
        self.stale_writes = 0  # writes of a batch prepared before an abandon: must never happen
        self._writes = 0  # writes begun
        self._prepared = 0
        self._finished = 0  # writes ended, either way

    async def prepare(self, events):
        if self._prepared > self._finished:  # an earlier batch is not written yet
            self.overlapped += 1
        self._prepared += 1
        ids = [e.event_id for e in events]
        self.unwritten += ids
        generation = self.abandoned

        async def write():
            self.stale_writes += generation != self.abandoned
            try:
                await asyncio.sleep(0.05)  # the store's share of the work
                self._writes += 1
                if self._writes == self.fail_write:
                    raise RuntimeError("store unavailable")
                self.written += ids
                self.unwritten = [i for i in self.unwritten if i not in ids]
            finally:
                self._finished += 1

        return write

    def abandon(self):
        self.abandoned += 1
        self.unwritten = []


async def test_staged_batches_are_prepared_while_the_previous_one_is_written(any_bus):
    handler = TwoStepRecorder()
    sent = [key_requested(i) for i in range(200)]
    for event in sent:
        await any_bus.publish(event)
    await any_bus.subscribe_batch("auditsvc", handler, max_batch=20, max_wait=0.01)
    await wait_for(lambda: len(handler.written) == 200)
    assert sorted(handler.written) == sorted(e.event_id for e in sent)
    assert handler.overlapped > 0 and handler.abandoned == 0


async def test_a_failed_staged_write_requeues_it_and_the_batch_built_on_it(any_bus):
    handler = TwoStepRecorder(fail_write=2)
    sent = [key_requested(i) for i in range(100)]
    for event in sent:
        await any_bus.publish(event)
    await any_bus.subscribe_batch("auditsvc", handler, max_batch=10, max_wait=0.01)
    await wait_for(lambda: len(handler.written) == 100)
    await asyncio.sleep(0.3)  # nothing more arrives: each event was written exactly once
    assert sorted(handler.written) == sorted(e.event_id for e in sent)
    assert handler.abandoned >= 1 and handler.unwritten == [] and handler.stale_writes == 0


async def test_request_reply_returns_result_or_problem(any_bus):
    async def serve(request: rpc.RpcRequest) -> rpc.RpcReply:
        if request.method == "fail":
            raise rpc.NotFound("key", field="key_id")
        return rpc.RpcReply(result={"echo": request.params, "tenant": request.tenant_id})

    await any_bus.serve("keysvc", serve)
    reply = await any_bus.call("keysvc", rpc.RpcRequest(method="echo", tenant_id="ten_a", params={"x": 1}), timeout=5)
    assert reply.result == {"echo": {"x": 1}, "tenant": "ten_a"}
    reply = await any_bus.call("keysvc", rpc.RpcRequest(method="fail", tenant_id="ten_a"), timeout=5)
    assert reply.problem is not None and reply.problem.status == 404 and reply.problem.field == "key_id"


async def test_concurrent_calls_under_one_correlation_id_each_get_their_own_reply(any_bus):
    # One operator request (one correlation id) may make several calls at once, e.g. a console page.
    async def serve(request: rpc.RpcRequest) -> rpc.RpcReply:
        await asyncio.sleep(0.2 if request.method == "slow" else 0)
        return rpc.RpcReply(result=request.method)

    await any_bus.serve("keysvc", serve)
    calls = [rpc.RpcRequest(method=m, tenant_id="ten_a", correlation_id="one-http-request") for m in ("slow", "fast")]
    replies = await asyncio.gather(*(any_bus.call("keysvc", c, timeout=5) for c in calls))
    assert [r.result for r in replies] == ["slow", "fast"]


async def test_request_without_a_server_fails_cleanly(any_bus):
    with pytest.raises(BusError):
        await any_bus.call("auditsvc", rpc.RpcRequest(method="x", tenant_id="ten_a"), timeout=0.5)


async def test_slow_server_times_out_and_the_caller_goes_on(any_bus):
    async def slow(request):
        await asyncio.sleep(2)
        return rpc.RpcReply(result=1)

    await any_bus.serve("auditsvc", slow)
    started = asyncio.get_running_loop().time()
    with pytest.raises(BusTimeout):
        await any_bus.call("auditsvc", rpc.RpcRequest(method="x", tenant_id="ten_a"), timeout=0.3)
    assert asyncio.get_running_loop().time() - started < 1.5


async def test_listen_gives_each_instance_its_own_copy(any_bus):
    first, second = [], []

    async def a(event):
        first.append(event)

    async def b(event):
        second.append(event)

    await any_bus.listen(["tenant.*"], a)
    await any_bus.listen(["tenant.created"], b)
    await any_bus.publish(TenantCreated(tenant_id="ten_b", name="b"))
    await wait_for(lambda: len(first) == 1 and len(second) == 1)


async def test_a_listen_queue_is_bound_and_unbound_while_it_runs(any_bus):
    # The gateway binds raw key requests only while an operator stream wants them. Each step ends
    # with a marker the queue was bound to all along: what was published before it has arrived by
    # then (one queue, in order) or was never routed to it.
    heard: list[str] = []

    async def hear(event) -> None:
        heard.append(getattr(event, "request_id", event.type))

    async def publish_then_marker(n: int) -> None:
        heard.clear()
        await any_bus.publish(key_requested(n))
        await any_bus.publish(TenantCreated(tenant_id="ten_a", name=f"marker {n}"))
        await wait_for(lambda: "tenant.created" in heard)

    listening = await any_bus.listen(["tenant.created"], hear)
    await publish_then_marker(1)
    assert heard == ["tenant.created"]  # not bound: no delivery
    await listening.bind("key.requested")
    await listening.bind("key.requested")  # twice is once
    await publish_then_marker(2)
    assert sorted(heard) == ["r2", "tenant.created"]
    await listening.unbind("key.requested")
    await publish_then_marker(3)
    assert heard == ["tenant.created"]


async def test_an_event_is_published_persistent_with_its_id_type_and_correlation(rabbit_bus, amqp_url):
    # What RabbitBus sets on each event it publishes, as another AMQP client reads it off the queue.
    sent = key_requested(9)
    await rabbit_bus.publish_audited(sent)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(rabbit_bus.name("policysvc"), ensure=False)
        message = await queue.get(timeout=10)
        assert message is not None
        await message.ack()
        assert (message.delivery_mode, message.content_type, message.type) == (
            aio_pika.DeliveryMode.PERSISTENT, "application/json", "key.requested")
        assert (message.message_id, message.correlation_id) == (sent.event_id, sent.correlation_id)
        assert message.routing_key == "key.requested" and b'"request_id":"r9"' in message.body.replace(b" ", b"")
    finally:
        await connection.close()
