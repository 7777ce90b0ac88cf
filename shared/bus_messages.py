"""The bus's messages without aio-pika's per-message objects, both ways.

Consuming: aio-pika wraps every delivery in an `IncomingMessage` (some twenty properties copied through a
guarded `__setattr__`) and runs the callback in a task of its own, on top of the task aiormq
already runs it in; profiles of the services put that at about a tenth of the gateway's busy
time. The bus's callbacks read five things of a delivery and ack or requeue it: `Delivered`
gives them just that, and `LightQueue` consumes with it, in aiormq's task. It stays a
`RobustQueue`: its consumers (and bindings) are restored when the connection comes back.
`LightChannel` makes the bus connection's queues `LightQueue`s (`bus_connection`).

Publishing: an aio-pika `Message` (about 14 µs to build, its guarded attributes again) is read by
`Exchange.publish` for its body and properties alone; `Outgoing` is just those, built once, and
`publish` hands them to aiormq without waiting for the frames to be written before it waits for
the confirm (the connection's bounded frame queue still holds a publisher back).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange
from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import ChannelInvalidStateError
from pamqp.commands import Basic

Callback = Callable[["Delivered"], Awaitable[Any]]


class Outgoing:
    """What `Exchange.publish` reads of a message: its body and its AMQP properties."""

    __slots__ = ("body", "properties")

    def __init__(self, body: bytes, properties: Basic.Properties) -> None:
        self.body = body
        self.properties = properties


async def publish(exchange: AbstractExchange, message: Outgoing, routing_key: str, *, timeout: float) -> Any:
    """`exchange.publish(message, routing_key, mandatory=True)`: the broker's confirmation (Basic.Ack,
    or the message returned unrouted); a Basic.Nack raises DeliveryError."""
    if exchange.channel.is_closed:
        raise ChannelInvalidStateError(f"{exchange.channel!r} closed")
    channel = await exchange.channel.get_underlay_channel()
    return await channel.basic_publish(message.body, exchange=exchange.name, routing_key=routing_key,
                                       properties=message.properties, mandatory=True, timeout=timeout, wait=False)


class Delivered:
    """One delivery: body, routing key, delivery tag, reply-to and correlation id, ack and requeue."""

    __slots__ = ("_channel", "body", "correlation_id", "delivery_tag", "reply_to", "routing_key")

    def __init__(self, message: DeliveredMessage) -> None:
        delivery, properties = message.delivery, message.header.properties
        self.body = message.body
        self.routing_key = delivery.routing_key
        self.delivery_tag = delivery.delivery_tag  # type: ignore[union-attr]
        self.correlation_id = properties.correlation_id
        self.reply_to = properties.reply_to
        self._channel = message.channel

    @property
    def channel(self) -> AbstractChannel:
        if self._channel.is_closed:
            raise ChannelInvalidStateError
        return self._channel

    async def ack(self, multiple: bool = False) -> None:
        await self.channel.basic_ack(delivery_tag=self.delivery_tag, multiple=multiple, wait=False)

    async def nack(self, requeue: bool = True, multiple: bool = False) -> None:
        await self.channel.basic_nack(delivery_tag=self.delivery_tag, multiple=multiple, requeue=requeue, wait=False)


class LightQueue(aio_pika.RobustQueue):
    """A robust queue whose consumers get `Delivered`s."""

    async def consume(  # type: ignore[override]
        self, callback: Callback, no_ack: bool = False, exclusive: bool = False, arguments: Any = None,
        consumer_tag: str | None = None, timeout: Any = None, robust: bool = True,
    ) -> str:
        async def deliver(message: DeliveredMessage) -> None:
            await callback(Delivered(message))

        channel = await self.channel.get_underlay_channel()
        result = await channel.basic_consume(queue=self.name, consumer_callback=deliver, exclusive=exclusive,
                                             no_ack=no_ack, arguments=arguments, consumer_tag=consumer_tag,
                                             timeout=timeout)
        if result.consumer_tag is None:
            raise RuntimeError("Consumer tag is None")
        if robust:  # restored with the channel (RobustQueue.restore calls consume again)
            self._consumers[result.consumer_tag] = dict(callback=callback, no_ack=no_ack, exclusive=exclusive,
                                                        arguments=arguments)
        return result.consumer_tag


class LightChannel(aio_pika.RobustChannel):
    QUEUE_CLASS = LightQueue
