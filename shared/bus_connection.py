"""The bus's broker connection: one robust aio-pika connection over a list of broker URLs.

aio-pika reconnects to the one URL it was given, so a client of a cluster whose node died would
keep knocking on that node. Here `STRONGROOM_AMQP_URL` may name several brokers (nodes of one
cluster), comma-separated; the first that answers is used, and each new attempt after a
connection dropped or an attempt failed goes to the next URL in the list, round and round.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq.exceptions import ChannelInvalidStateError
from yarl import URL

from .bus_messages import LightChannel

log = structlog.get_logger("strongroom.bus")

# Seconds between reconnection attempts (aio-pika's default is 5): with several brokers the next
# one is usually up, so trying it soon shortens the stall a dead node causes.
RECONNECT_INTERVAL_SECONDS = 1.0


# A publish the broker has not confirmed by then has failed (its caller retries it): the confirm
# can be lost with a node that died. Generous: a busy broker confirms in milliseconds.
CONFIRM_TIMEOUT_SECONDS = 10.0
# After a publish failed the bus moves to a new publish channel, at most this often...
RENEW_INTERVAL_SECONDS = 1.0
# ...and closes the old one this long after, once what was in flight on it had time to be confirmed.
RETIRE_AFTER_SECONDS = 30.0

# What a publish or declaration raises while the broker is away. A channel the connection has not
# restored yet raises ChannelInvalidStateError (a RuntimeError, not an AMQPError).
UNREACHABLE = (aio_pika.exceptions.AMQPError, ConnectionError, ChannelInvalidStateError)


def broker_urls(value: str) -> list[str]:
    """The broker URLs in a comma-separated `STRONGROOM_AMQP_URL`, in order (blanks dropped)."""
    urls = [part.strip() for part in value.split(",") if part.strip()]
    if not urls:
        raise ValueError("no broker URL given")
    return urls


def redacted(url: URL) -> str:
    """A URL as logs may show it: the password hidden."""
    return str(url.with_password("******") if url.password else url)


class RotatingConnection(aio_pika.RobustConnection):
    """A robust connection that moves to the next broker URL for every attempt after the first.

    aio-pika's RobustConnection clears `transport` at the start of each connection attempt (and
    on close); that is the hook: an attempt after one that failed or a connection that dropped
    reads `url` only after this has pointed it at the next broker.
    """

    CHANNEL_CLASS = LightChannel  # consumers get light deliveries (`bus_messages`)

    def __init__(self, urls: Sequence[str], *, first: int = 0, **kwargs: Any):
        self._urls = [URL(u) for u in urls]
        self._index = first % len(self._urls)
        super().__init__(self._urls[self._index], **kwargs)
        self._attempts = 0  # set after aio-pika's own __init__, which clears `transport` too

    @property
    def transport(self) -> Any:
        return self._transport

    @transport.setter
    def transport(self, value: Any) -> None:
        if value is None and getattr(self, "_attempts", None) is not None and not self._close_called:
            if self._attempts and len(self._urls) > 1:
                self._index = (self._index + 1) % len(self._urls)
                self.url = self._urls[self._index]
                log.warning("broker_next_url", url=redacted(self.url))
            self._attempts += 1
        self._transport = value

    @property
    def current_url(self) -> str:
        return redacted(self.url)


async def connect(url_list: str, *, connection_name: str, timeout: float = 10.0) -> AbstractRobustConnection:
    """A robust connection to the first broker in `url_list` that answers, rotating afterwards."""
    urls = broker_urls(url_list)
    failure: BaseException | None = None
    for first in range(len(urls)):
        connection = RotatingConnection(urls, first=first, client_properties={"connection_name": connection_name},
                                        reconnect_interval=RECONNECT_INTERVAL_SECONDS)
        try:
            await connection.connect(timeout=timeout)
            return connection
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            failure = exc
            await connection.close()
            log.warning("broker_unreachable", url=redacted(URL(urls[first])), error=type(exc).__name__)
    raise ConnectionError(f"no broker of {len(urls)} answered: {failure!r}")


class PublishChannelRenewal:
    """Replaces a bus's publish channel after a publish on it was refused or left unconfirmed.

    RabbitMQ keeps per channel what it knows of each quorum queue the channel publishes to. When
    a queue's leader's node dies, a channel whose first publish to that queue came before a new
    leader was elected is refused by that queue on every later publish (seen with RabbitMQ 3.10
    on the audit queue, whose overflow is reject-publish), and publishes were seen waiting for
    confirms that never came. A channel reopened by the reconnect lands in the same gap; a new
    channel opened after a failure learns the queue's leader afresh.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._renewed_at = float("-inf")
        self._retiring: set[asyncio.Task[None]] = set()

    async def replace(self, connection: AbstractRobustConnection, failed: AbstractChannel | None,
                      current: AbstractChannel) -> AbstractChannel | None:
        """A new channel to publish on, if the publish failed on the `current` one and none was opened
        in the last `RENEW_INTERVAL_SECONDS`; None otherwise, or when no channel can be opened now."""
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if failed is not current or now - self._renewed_at < RENEW_INTERVAL_SECONDS or connection.is_closed:
                return None
            self._renewed_at = now
            try:
                channel = await asyncio.wait_for(connection.channel(publisher_confirms=True), CONFIRM_TIMEOUT_SECONDS)
            except (TimeoutError, RuntimeError, *UNREACHABLE) as exc:
                log.warning("publish_channel_not_renewed", error=type(exc).__name__)
                return None
        log.warning("publish_channel_renewed")
        task = asyncio.create_task(_close_later(current))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return channel

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)


async def _close_later(channel: AbstractChannel) -> None:
    await asyncio.sleep(RETIRE_AFTER_SECONDS)
    with contextlib.suppress(Exception):
        await channel.close()
