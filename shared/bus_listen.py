"""A listen queue's bindings, changed while it runs: `Bus.listen` returns one.

A listener that needs some events only at times (the gateway's operator streams want every raw
`key.requested` only while one is open) binds those patterns then and unbinds them after, so
that the broker does not deliver, and the instance does not decode, one message per release that
nobody reads.
"""

from __future__ import annotations

from typing import Protocol

from aio_pika.abc import AbstractRobustQueue

from .bus_connection import UNREACHABLE
from .delivery import Unavailable


class Listening(Protocol):
    async def bind(self, pattern: str) -> None: ...
    async def unbind(self, pattern: str) -> None: ...


class RabbitListening:
    """One RabbitBus listen queue. Its queue is robust: the bindings as they stand when the
    connection drops are the ones restored after the reconnect. A bind or unbind the broker did not
    take raises `Unavailable` (an unbind that failed leaves the binding recorded, so a caller that
    tries again later ends with it gone)."""

    def __init__(self, queue: AbstractRobustQueue, exchange: str):
        self._queue = queue
        self._exchange = exchange

    async def bind(self, pattern: str) -> None:
        try:
            await self._queue.bind(self._exchange, pattern)
        except (*UNREACHABLE, RuntimeError) as exc:
            raise Unavailable(f"bind of {pattern} failed: {exc!r}") from None

    async def unbind(self, pattern: str) -> None:
        try:
            await self._queue.unbind(self._exchange, pattern)
        except (*UNREACHABLE, RuntimeError) as exc:
            raise Unavailable(f"unbind of {pattern} failed: {exc!r}") from None


class MemoryListening:
    """One MemoryBus listen queue: its patterns are what its routing reads."""

    def __init__(self, queue) -> None:  # bus_memory._Queue
        self._queue = queue

    async def bind(self, pattern: str) -> None:
        if pattern not in self._queue.patterns:
            self._queue.patterns = (*self._queue.patterns, pattern)

    async def unbind(self, pattern: str) -> None:
        self._queue.patterns = tuple(p for p in self._queue.patterns if p != pattern)
