"""The bus's broker connection: one robust aio-pika connection over a list of broker URLs.

aio-pika reconnects to the one URL it was given, so a client of a cluster whose node died would
keep knocking on that node. Here `STRONGROOM_AMQP_URL` may name several brokers (nodes of one
cluster), comma-separated; the first that answers is used, and each new attempt after a
connection dropped or an attempt failed goes to the next URL in the list, round and round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import ChannelInvalidStateError
from yarl import URL

log = structlog.get_logger("strongroom.bus")

# Seconds between reconnection attempts (aio-pika's default is 5): with several brokers the next
# one is usually up, so trying it soon shortens the stall a dead node causes.
RECONNECT_INTERVAL_SECONDS = 1.0


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
