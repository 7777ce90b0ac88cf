"""One consumer channel's acknowledgements, sent in as few basic.ack frames as their order allows.

Each basic.ack is a socket write of its own, as costly as the rest of a delivery's AMQP work. A
delivery is still acknowledged only after its handler's durable effect, but its ack waits up to
`WINDOW` seconds for others: then one cumulative ack (``multiple=True``) settles the run of done
deliveries that starts at the oldest unsettled one. A done delivery behind one still running waits
for the next window; held acks are bounded (``hold``), beyond which they go out one by one, so a
slow handler never fills the prefetch window. A requeue goes out at once, on its own. An ack that
waits changes nothing but what a crash redelivers (handlers are idempotent by event id); a bus that
closes sends what it holds first.

The channel's delivery tags are consecutive from 1 (one consumer per channel, no basic.get): a
cumulative ack covers only tags this object has seen done or already settled one by one. A robust
connection that reconnects opens a new channel, and with it a new ``ChannelAcks``; what the old
channel held unacknowledged the broker has requeued (handlers are idempotent by event id).
"""

from __future__ import annotations

import asyncio
import weakref

import aiormq
import structlog

log = structlog.get_logger("strongroom.bus")

_RUNNING, _DONE, _SENT = 0, 1, 2
WINDOW = 0.05


class ChannelAcks:
    def __init__(self, channel: aiormq.abc.AbstractChannel, *, hold: int):
        self._channel = weakref.ref(channel)  # `ConsumerAcks` keys on the channel: no strong reference back
        self._hold = hold
        self._tags: dict[int, int] = {}  # unsettled delivery tag -> _RUNNING, _DONE or _SENT
        self._through = 0  # every tag up to this one is settled (a channel's tags count from 1)
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def received(self, tag: int) -> None:
        self._tags[tag] = _RUNNING

    async def ack(self, tag: int) -> None:
        """Marks a delivery done; its ack goes out with the others due within the window."""
        self._tags[tag] = _DONE
        self._soon()

    async def requeue(self, tag: int) -> None:
        await self._live().basic_nack(tag, requeue=True)
        self._tags[tag] = _SENT
        self._soon()

    def _soon(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(WINDOW, self._flush)

    async def close(self) -> None:
        """Sends what is held (a bus closing); a cumulative ack cannot cover what is still running."""
        if self._timer is not None:
            self._timer.cancel()
        self._flush()
        if self._timer is not None:  # armed again for a done delivery behind a running one: both are requeued
            self._timer.cancel()
            self._timer = None
        await asyncio.gather(*self._sending, return_exceptions=True)

    def _live(self) -> aiormq.abc.AbstractChannel:
        channel = self._channel()
        if channel is None:
            raise aiormq.exceptions.ChannelInvalidStateError("the consumer's channel is gone")
        return channel

    def _flush(self) -> None:
        self._timer = None
        through, alone = self._due()
        frames = [(through, True)] if through is not None else []
        frames += [(tag, False) for tag in alone]
        if frames:
            task = asyncio.get_running_loop().create_task(self._send(frames))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    def _due(self) -> tuple[int | None, list[int]]:
        """The tag a cumulative ack can name (None: none), and the held acks that must go alone."""
        tags = sorted(self._tags)
        through, cut, expected = None, None, self._through + 1
        for tag in tags:
            if tag != expected or self._tags[tag] == _RUNNING:
                break
            if self._tags[tag] == _DONE:
                through = tag
            cut, expected = tag, expected + 1
        if cut is not None:
            for tag in tags[:cut - self._through]:
                del self._tags[tag]
            self._through = cut
        held = [tag for tag, state in self._tags.items() if state == _DONE]
        if len(held) <= self._hold:
            if held:
                self._soon()
            return through, []
        for tag in held:
            self._tags[tag] = _SENT
        return through, held

    async def _send(self, frames: list[tuple[int, bool]]) -> None:
        try:
            channel = self._live()
            for tag, multiple in frames:
                await channel.basic_ack(tag, multiple=multiple, wait=False)
        except Exception as exc:  # the channel is gone: the broker has requeued what it held
            log.warning("delivery_settle_failed", step="ack", size=len(frames), error=type(exc).__name__)


class ConsumerAcks:
    """A consumer's `ChannelAcks`, one per channel its deliveries arrive on (a new one after a reconnect)."""

    def __init__(self, *, hold: int):
        self._hold = hold
        self._channels: weakref.WeakKeyDictionary[aiormq.abc.AbstractChannel, ChannelAcks] = weakref.WeakKeyDictionary()

    async def close(self) -> None:
        for acks in list(self._channels.values()):
            await acks.close()

    def received(self, channel: aiormq.abc.AbstractChannel, tag: int) -> ChannelAcks:
        """Registers a delivery as it arrives (in delivery order); its channel's acks settle it."""
        acks = self._channels.get(channel)
        if acks is None:
            acks = self._channels[channel] = ChannelAcks(channel, hold=self._hold)
        acks.received(tag)
        return acks
