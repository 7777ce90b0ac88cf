"""The message bus port and its RabbitMQ adapter (aio-pika).

Small on purpose: publish with confirms, consume with ack-after-effect (see `delivery`),
per-instance listening for replies and cache invalidation, and request/reply by
`reply_to` + `correlation_id` with a deadline. `bus_memory.MemoryBus` implements the same
interface for `strongroom dev`; one contract suite tests both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage
from pamqp.commands import Basic

from . import bus_connection, bus_messages, rpc, topology
from .bus_acks import ConsumerAcks
from .bus_listen import Listening, RabbitListening
from .bus_messages import Outgoing
from .delivery import Batcher, BatchHandler, Handler, StagedBatchHandler, Unavailable, handle_one
from .events import Event, encode_event
from .progress import ConsumerProgress, ProgressWatch, Tracked

log = structlog.get_logger("strongroom.bus")

RpcHandler = rpc.RpcHandler


class BusError(Unavailable):
    """The bus could not do what was asked (broker down, publish refused)."""


class BusTimeout(BusError):
    """No reply before the deadline."""


class PublishRefused(BusError):
    """A bound queue would not take the message (full): the queues with room still got it."""


class AuditRefused(PublishRefused):
    """auditsvc's queue would not take the audit copy: what the event records must not happen."""


@dataclass(frozen=True)
class DeadLetter:
    routing_key: str
    reason: str
    body: bytes


class Bus(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, event: Event) -> None: ...
    async def publish_audited(self, event: Event) -> None: ...
    async def subscribe(self, service: str, handler: Handler, *, prefetch: int = 64) -> None: ...
    async def subscribe_batch(
        self, service: str, handler: BatchHandler | StagedBatchHandler, *, max_batch: int = 256, max_wait: float = 0.02
    ) -> None: ...
    async def listen(self, patterns: Sequence[str], handler: Handler) -> Listening: ...
    async def serve(self, service: str, handler: RpcHandler) -> None: ...
    async def call(self, service: str, request: rpc.RpcRequest, *, timeout: float) -> rpc.RpcReply: ...
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]: ...
    async def queue_depth(self, service: str) -> int | None: ...
    def connected(self) -> bool: ...
    def stalled(self) -> list[str]: ...
    async def publish_raw(self, routing_key: str, body: bytes) -> None: ...


class _RabbitDelivery:
    def __init__(self, message: AbstractIncomingMessage, bus: RabbitBus, queue: str, acks: ConsumerAcks | None = None):
        self._message = message
        self._bus = bus
        self._queue = queue
        self.body = message.body
        self.routing_key = message.routing_key or ""
        tag = message.delivery_tag  # with `acks`, its ack goes out with others of its channel (`bus_acks`)
        self._acks = None if acks is None or tag is None else acks.received(message.channel, tag)

    async def ack(self) -> None:
        await (self._message.ack() if self._acks is None else self._acks.ack(self._message.delivery_tag))

    async def ack_through(self) -> None:
        await self._message.ack(multiple=True)

    async def requeue(self) -> None:
        await (self._message.nack(requeue=True) if self._acks is None else self._acks.requeue(self._message.delivery_tag))

    async def dead_letter(self, reason: str) -> None:
        await self._bus._publish_dead_letter(self.body, self.routing_key, self._queue, reason)
        await self.ack()


class RabbitBus:
    """aio-pika adapter. `prefix` namespaces queues and exchanges; `url` may list brokers (`bus_connection`)."""

    def __init__(
        self, url: str, *, prefix: str = "strongroom.", audit_max_length: int | None = None, connection_name: str = "strongroom",
        stall_seconds: float = 60.0,
    ):
        self._url = url
        self._connection_name = connection_name  # what the broker's connection list shows
        self._prefix = prefix
        # Tests lower the audit queue's bound to show a release failing closed when it is full.
        self._audit_max_length = audit_max_length or topology.AUDIT_MAX_LENGTH
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publish_channel: aio_pika.abc.AbstractChannel | None = None
        self._events: aio_pika.abc.AbstractExchange | None = None
        self._delivery: aio_pika.abc.AbstractExchange | None = None
        self._rpc: aio_pika.abc.AbstractExchange | None = None
        self._dlx: aio_pika.abc.AbstractExchange | None = None
        self._reply_queue: aio_pika.abc.AbstractQueue | None = None
        self._pending: dict[str, asyncio.Future[rpc.RpcReply]] = {}
        self._batchers: list[Batcher] = []
        self._acks: list[ConsumerAcks] = []  # held acks go out before the connection closes
        self._progress = ProgressWatch(after=stall_seconds)  # work-queue consumers that stop are reported
        self._watchdog: asyncio.Task[None] | None = None
        self._renewal = bus_connection.PublishChannelRenewal()

    def name(self, short: str) -> str:
        return self._prefix + short

    def connected(self) -> bool:
        """Whether the broker connection is up now (a robust connection reconnecting is not)."""
        return self._connection is not None and not self._connection.is_closed

    def broker(self) -> str | None:
        """The broker URL this bus uses now (password hidden): one of a list, after a failover."""
        return getattr(self._connection, "current_url", None)

    async def start(self) -> None:
        self._connection = await bus_connection.connect(self._url, connection_name=self._connection_name)
        self._publish_channel = await self._connection.channel(publisher_confirms=True)
        await self._declare_topology(self._publish_channel)

    async def _renew_publish_channel(self, failed: aio_pika.abc.AbstractChannel | None) -> None:
        """After a publish on `failed` was refused or unconfirmed: publish on a new channel from now on."""
        assert self._connection is not None and self._publish_channel is not None
        channel = await self._renewal.replace(self._connection, failed, self._publish_channel)
        if channel is not None:
            self._publish_channel = channel
            self._events, self._delivery, self._rpc, self._dlx = [await channel.get_exchange(self.name(name), ensure=False)
                for name in (topology.EVENTS_EXCHANGE, topology.DELIVERY_EXCHANGE, topology.RPC_EXCHANGE,
                             topology.DEAD_LETTER_EXCHANGE)]

    async def _declare_topology(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self._events = await channel.declare_exchange(
            self.name(topology.EVENTS_EXCHANGE), aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._delivery = await channel.declare_exchange(
            self.name(topology.DELIVERY_EXCHANGE), aio_pika.ExchangeType.TOPIC, durable=True
        )
        await self._delivery.bind(self._events, "#")
        self._rpc = await channel.declare_exchange(self.name(topology.RPC_EXCHANGE), aio_pika.ExchangeType.DIRECT,
                                                   durable=True)
        self._dlx = await channel.declare_exchange(self.name(topology.DEAD_LETTER_EXCHANGE), aio_pika.ExchangeType.TOPIC,
                                                   durable=True)
        dead = await channel.declare_queue(
            self.name(topology.DEAD_LETTER_QUEUE), durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead.bind(self._dlx, "#")
        for service, patterns in topology.SERVICE_BINDINGS.items():
            queue = await channel.declare_queue(self.name(service), durable=True, arguments=self._work_args(service))
            for pattern in patterns:
                if service == topology.AUDIT_SERVICE:
                    await queue.bind(self._events, pattern)
                else:
                    await queue.bind(self._delivery, pattern)
                    await queue.unbind(self._events, pattern)  # where earlier versions bound it

    def _work_args(self, service: str) -> dict[str, object]:
        args: dict[str, object] = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.name(topology.DEAD_LETTER_EXCHANGE),
            "x-delivery-limit": topology.DELIVERY_LIMIT,
        }
        if service == topology.AUDIT_SERVICE:
            # One active consumer keeps each tenant's chain in order; other instances stand by.
            args |= {
                "x-max-length": self._audit_max_length,
                "x-overflow": "reject-publish",
                "x-single-active-consumer": True,
            }
        return args

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        for batcher in self._batchers:
            await batcher.stop()
        for acks in self._acks:
            await acks.close()
        await self._renewal.close()
        for future in self._pending.values():
            future.cancel()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    # --- publishing -----------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Returns once the broker has confirmed the message into every bound durable queue."""
        assert self._events is not None, "bus not started"
        await self._publish_to(self._events, event)

    async def _publish_to(self, exchange: aio_pika.abc.AbstractExchange | None, event: Event,
                          message: Outgoing | None = None) -> None:
        assert exchange is not None, "bus not started"
        try:
            confirmation = await bus_messages.publish(exchange, message or _message(event), event.routing_key,
                                                      timeout=bus_connection.CONFIRM_TIMEOUT_SECONDS)
        except aio_pika.exceptions.DeliveryError:
            await self._renew_publish_channel(exchange.channel)
            raise PublishRefused(f"broker refused {event.type} (a bound queue is full or unavailable)") from None
        except (TimeoutError, *bus_connection.UNREACHABLE) as exc:
            await self._renew_publish_channel(exchange.channel)
            raise BusError(f"publish of {event.type} failed: {exc!r}") from None
        _check_confirmation(confirmation, event.type)

    async def publish_audited(self, event: Event) -> None:
        """Audit first: into auditsvc's queue alone (confirmed), and only then to every other consumer.

        A refused publish still reaches every queue that had room, so a plain publish refused by a
        full audit queue would let a release proceed unrecorded. Here a refusal stops the event
        before anyone acts on it. The second publish goes to the delivery exchange, which every
        queue but the audit queue binds (see ``topology``), so auditsvc gets one copy. Once the
        record is queued, a consumer that cannot take the event (none bound, say) is not a reason
        to undo anything, so that refusal is ignored.
        """
        assert self._connection is not None and self._publish_channel is not None, "bus not started"
        message = _message(event)  # built once, published twice
        channel = self._publish_channel
        try:
            confirmation = await bus_messages.publish(channel.default_exchange, message, self.name(topology.AUDIT_SERVICE),
                                                      timeout=bus_connection.CONFIRM_TIMEOUT_SECONDS)
        except aio_pika.exceptions.DeliveryError:
            await self._renew_publish_channel(channel)
            raise AuditRefused(f"audit queue refused {event.type}: it is full or unavailable") from None
        except (TimeoutError, *bus_connection.UNREACHABLE) as exc:
            await self._renew_publish_channel(channel)
            raise BusError(f"publish of {event.type} for audit failed: {exc!r}") from None
        if not isinstance(confirmation, Basic.Ack):
            raise AuditRefused(f"audit queue refused {event.type}: it is not there")
        with contextlib.suppress(PublishRefused):
            await self._publish_to(self._delivery, event, message)  # every consumer but auditsvc, which has it

    async def publish_raw(self, routing_key: str, body: bytes) -> None:
        """Publishes bytes that need not be a valid event (tests of dead-lettering, tooling)."""
        assert self._events is not None, "bus not started"
        await self._events.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key)

    async def destroy(self) -> None:
        """Deletes this prefix's queues and exchanges (test isolation; never used in production)."""
        assert self._connection is not None
        channel = await self._connection.channel()
        names = [topology.DEAD_LETTER_QUEUE, *topology.SERVICE_BINDINGS, *map(topology.rpc_queue, topology.RPC_SERVICES)]
        for name in names:
            await channel.queue_delete(self.name(name))
        for name in (topology.DELIVERY_EXCHANGE, topology.EVENTS_EXCHANGE, topology.RPC_EXCHANGE,
                     topology.DEAD_LETTER_EXCHANGE):
            await channel.exchange_delete(self.name(name))
        await channel.close()

    async def _publish_dead_letter(self, body: bytes, routing_key: str, queue: str, reason: str) -> None:
        assert self._dlx is not None
        headers = {"x-reason": reason[:1000], "x-original-routing-key": routing_key, "x-original-queue": queue}
        await self._dlx.publish(aio_pika.Message(body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                routing_key=routing_key or "unknown")

    # --- consuming ------------------------------------------------------------------

    async def _consumer_channel(self, prefetch: int) -> aio_pika.abc.AbstractChannel:
        assert self._connection is not None, "bus not started"
        channel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def subscribe(self, service: str, handler: Handler, *, prefetch: int = 64) -> None:
        channel = await self._consumer_channel(prefetch)
        queue = await channel.declare_queue(self.name(service), durable=True, arguments=self._work_args(service))
        queue_name = self.name(service)
        progress = self._track(service)
        self._acks.append(acks := ConsumerAcks(hold=prefetch // 4))

        async def on_message(message: AbstractIncomingMessage) -> None:
            await handle_one(Tracked(_RabbitDelivery(message, self, queue_name, acks), progress), handler)

        await queue.consume(on_message)

    def _track(self, service: str) -> ConsumerProgress:
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._progress.run(self.queue_depth))
        return self._progress.track(service)

    def stalled(self) -> list[str]:
        """Work queues whose consumer here has stopped making progress (readiness reports them)."""
        return self._progress.stalled()

    async def subscribe_batch(
        self, service: str, handler: BatchHandler | StagedBatchHandler, *, max_batch: int = 256, max_wait: float = 0.02
    ) -> None:
        channel = await self._consumer_channel(max_batch * 3)  # one batch written, one prepared, one filling
        queue = await channel.declare_queue(self.name(service), durable=True, arguments=self._work_args(service))
        batcher = Batcher(handler, max_batch=max_batch, max_wait=max_wait)
        batcher.start()
        self._batchers.append(batcher)
        queue_name = self.name(service)
        progress = self._track(service)

        async def on_message(message: AbstractIncomingMessage) -> None:
            batcher.put(Tracked(_RabbitDelivery(message, self, queue_name), progress))

        await queue.consume(on_message)

    async def listen(self, patterns: Sequence[str], handler: Handler) -> Listening:
        """A private, transient queue for this instance (replies, cache invalidation), bound to more
        or fewer patterns later through what this returns."""
        channel = await self._consumer_channel(256)
        assert self._delivery is not None
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        listening = RabbitListening(queue, self._delivery.name)  # type: ignore[arg-type]
        for pattern in patterns:
            await listening.bind(pattern)
        self._acks.append(acks := ConsumerAcks(hold=64))

        async def on_message(message: AbstractIncomingMessage) -> None:
            await handle_one(_RabbitDelivery(message, self, queue.name, acks), handler)

        await queue.consume(on_message)
        return listening

    async def queue_depth(self, service: str) -> int | None:
        """Messages waiting in a service's work queue (a lag metric); None if it cannot be read."""
        assert self._connection is not None, "bus not started"
        try:
            channel = await self._connection.channel()
            try:
                queue = await channel.declare_queue(self.name(service), passive=True)
                return queue.declaration_result.message_count
            finally:
                await channel.close()
        except (*bus_connection.UNREACHABLE, RuntimeError):  # RuntimeError: not reconnected yet
            return None

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Takes up to `limit` dead letters off the dead-letter queue (operators and tests)."""
        assert self._connection is not None
        channel = await self._connection.channel()
        queue = await channel.declare_queue(
            self.name(topology.DEAD_LETTER_QUEUE), durable=True, arguments={"x-queue-type": "quorum"}
        )
        letters: list[DeadLetter] = []
        while len(letters) < limit:
            message = await queue.get(fail=False, no_ack=False)
            if message is None:
                break
            headers = message.headers or {}
            reason = headers.get("x-reason")
            if reason is None:  # dead-lettered by the broker itself (delivery limit)
                deaths = headers.get("x-death") or [{}]
                reason = f"broker: {deaths[0].get('reason', 'unknown')}"
            letters.append(DeadLetter(str(headers.get("x-original-routing-key", message.routing_key)), str(reason), message.body))
            await message.ack()
        await channel.close()
        return letters

    # --- request/reply --------------------------------------------------------------

    async def serve(self, service: str, handler: RpcHandler) -> None:
        channel = await self._consumer_channel(32)
        assert self._rpc is not None
        queue = await channel.declare_queue(
            self.name(topology.rpc_queue(service)), durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(self._rpc, service)
        default = channel.default_exchange

        async def on_message(message: AbstractIncomingMessage) -> None:
            reply = await rpc.answer(message.body, handler)
            if message.reply_to:
                await default.publish(
                    aio_pika.Message(rpc.encode(reply), correlation_id=message.correlation_id),
                    routing_key=message.reply_to,
                )
            await message.ack()

        await queue.consume(on_message)

    async def _ensure_reply_queue(self) -> aio_pika.abc.AbstractQueue:
        if self._reply_queue is None:
            channel = await self._consumer_channel(256)
            self._reply_queue = await channel.declare_queue(exclusive=True, auto_delete=True)

            async def on_reply(message: AbstractIncomingMessage) -> None:
                future = self._pending.pop(message.correlation_id or "", None)
                if future is not None and not future.done():
                    try:
                        future.set_result(rpc.decode_reply(message.body))
                    except Exception as exc:  # a garbled reply fails that one call, not the bus
                        future.set_exception(BusError(f"bad reply: {exc}"))
                await message.ack()

            await self._reply_queue.consume(on_reply)
        return self._reply_queue

    async def call(self, service: str, request: rpc.RpcRequest, *, timeout: float) -> rpc.RpcReply:
        assert self._rpc is not None, "bus not started"
        reply_queue = await self._ensure_reply_queue()
        future: asyncio.Future[rpc.RpcReply] = asyncio.get_running_loop().create_future()
        self._pending[request.request_id] = future
        # The request expires with the caller's deadline: a late service must not act on it.
        message = aio_pika.Message(
            rpc.encode(request),
            correlation_id=request.request_id,  # one per message: a view's concurrent calls share a correlation id
            reply_to=reply_queue.name,
            expiration=timeout,
            content_type="application/json",
        )
        try:
            confirmation = await self._rpc.publish(message, routing_key=service, mandatory=True, timeout=timeout)
            _check_confirmation(confirmation, f"rpc {service}.{request.method}")
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise BusTimeout(f"{service} did not answer within {timeout:g}s") from None
        except bus_connection.UNREACHABLE as exc:
            raise BusError(f"{service} unreachable: {exc!r}") from None
        finally:
            self._pending.pop(request.request_id, None)


def _message(event: Event) -> Outgoing:
    return Outgoing(encode_event(event), Basic.Properties(
        content_type="application/json", delivery_mode=2, message_id=event.event_id, correlation_id=event.correlation_id,
        message_type=event.type))  # delivery_mode 2: persistent


def _check_confirmation(confirmation: object, what: str) -> None:
    """A Basic.Ack means routed and durably stored; a returned message means no queue took it."""
    if not isinstance(confirmation, Basic.Ack):
        raise BusError(f"no queue bound for {what}")
