"""`strongroom admin teardown --prefix P`: removes one deployment's queues and exchanges from the broker.

Over AMQP alone (no management plugin): each name `shared/topology.py` declares is looked up
passively (which reports whether it exists and how many messages it holds) and then deleted.
Queued messages are deleted with their queue, so the command asks for a confirmation flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.exceptions import ChannelClosed

from shared import topology


@dataclass(frozen=True)
class Removed:
    kind: str  # "queue" or "exchange"
    name: str
    existed: bool
    messages: int = 0


async def _look(connection: aio_pika.abc.AbstractConnection, kind: str, name: str) -> Removed:
    """A passive declaration: whether `name` exists (a 404 closes the channel) and its message count."""
    channel = await connection.channel()
    try:
        if kind == "queue":
            declared = await channel.declare_queue(name, passive=True)
            messages = declared.declaration_result.message_count or 0
        else:
            await channel.declare_exchange(name, passive=True)
            messages = 0
    except ChannelClosed:
        return Removed(kind, name, existed=False)
    await channel.close()
    return Removed(kind, name, existed=True, messages=messages)


async def _delete(connection: aio_pika.abc.AbstractConnection, found: Removed) -> None:
    channel = await connection.channel()
    if found.kind == "queue":
        await channel.queue_delete(found.name)
    else:
        await channel.exchange_delete(found.name)
    await channel.close()


async def survey(amqp_url: str, prefix: str, *, delete: bool, connection_name: str) -> list[Removed]:
    """What exists under `prefix` and, with `delete`, removes it: queues first, then exchanges."""
    connection = await aio_pika.connect(amqp_url, client_properties={"connection_name": connection_name})
    try:
        names = [("queue", prefix + q) for q in topology.durable_queues()]
        names += [("exchange", prefix + x) for x in topology.EXCHANGES]
        found = [await _look(connection, kind, name) for kind, name in names]
        if delete:
            for item in found:
                if item.existed:
                    await _delete(connection, item)
        return found
    finally:
        await connection.close()
