"""Forwarder transports: syslog over TCP/TLS and HTTP(S) webhooks.

`send` returns only when the destination took the batch: a webhook's 2xx, or for syslog, the
peer's TCP stack acknowledging every byte (the socket's send queue drained to zero, TIOCOUTQ)
and no reset from the peer. Anything else raises, and the forwarder retries the same batch.

Every connection first resolves the destination once, refuses it if any address is one
`destinations.py` refuses, and connects to the address it checked (pinned): a name that
resolves elsewhere between the check and the connection (DNS rebinding) cannot redirect it.
TLS still sends and verifies the original name. What a failure tells the tenant is generic;
the detail (exception, reply, address) goes to the service log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import socket
import ssl
import struct
import termios
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from .destinations import REFUSED, Allowed, judge, literal_address, parse_address
from .forwarding import SIGNATURE_HEADER, TIMESTAMP_HEADER, webhook_signature

# How a name becomes addresses: the system resolver, or a scripted one in tests.
Resolve = Callable[[str, int], Awaitable[Sequence[str]]]


class SendError(Exception):
    """The destination did not take the batch. `str()` is the generic message the tenant sees;
    `detail` is for the service log."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail or message


class DestinationRefused(SendError):
    """The destination resolves to an address forwarders may not reach."""

    def __init__(self, detail: str):
        super().__init__(REFUSED, detail)


class Sender(Protocol):
    async def send(self, payload: bytes) -> None: ...
    async def close(self) -> None: ...


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def pinned_address(host: str, port: int, *, allow: Sequence[Allowed], resolve: Resolve = system_resolve,
                         timeout: float = 10.0) -> str:
    """The one address to connect to for `host`, checked: every address it resolves to must be
    allowed, else DestinationRefused; a name that does not resolve is a SendError."""
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = [parse_address(a) for a in await asyncio.wait_for(resolve(host, port), timeout)]
        except (OSError, ValueError, TimeoutError) as exc:
            raise SendError("the destination did not resolve", f"resolving failed: {exc.__class__.__name__}: {exc}") \
                from None
    verdict = judge(addresses, port, allow)
    if not verdict.allowed:
        raise DestinationRefused(verdict.reason)
    return str(addresses[0])


def _unacked_bytes(sock: Any) -> int:
    # Linux: bytes in the send queue not yet acknowledged by the peer.
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("I", 0))
    return struct.unpack("I", buf)[0]


def _reset(sock: Any) -> bool:
    # A reset the event loop has not reported yet is pending on the socket as ECONNRESET or EPIPE.
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0


def _failure(message: str, exc: BaseException) -> SendError:
    return SendError(message, f"{message}: {exc.__class__.__name__}: {exc}")


class SyslogSender:
    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None, server_name: str | None = None,
                 allow: Sequence[Allowed] = (), resolve: Resolve = system_resolve, timeout: float = 10.0):
        self._host, self._port, self._tls = host, port, tls
        self._server_name = server_name or host
        self._allow, self._resolve = tuple(allow), resolve
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        address = await pinned_address(self._host, self._port, allow=self._allow, resolve=self._resolve,
                                       timeout=self._timeout)
        try:
            self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(
                address, self._port, ssl=self._tls, server_hostname=self._server_name if self._tls else None,
            ), self._timeout)
        except TimeoutError as exc:
            raise _failure("timed out connecting to the destination", exc) from None
        except (OSError, ssl.SSLError) as exc:
            raise _failure("cannot connect to the destination", exc) from None
        sock = self._writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _healthy(self) -> bool:
        return (self._writer is not None and self._reader is not None and not self._writer.is_closing()
                and not self._reader.at_eof() and self._reader.exception() is None)

    async def send(self, payload: bytes) -> None:
        await asyncio.sleep(0)  # let a pending FIN or RST from the peer be noticed first
        if not self._healthy():
            await self.close()
            await self._connect()
        assert self._writer is not None
        try:
            self._writer.write(payload)
            await asyncio.wait_for(self._writer.drain(), self._timeout)
            sock = self._writer.get_extra_info("socket")
            deadline = time.monotonic() + self._timeout
            while _unacked_bytes(sock) > 0:
                if time.monotonic() > deadline:
                    raise SendError("timed out: the destination did not acknowledge the batch")
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)
            if _reset(sock) or (self._reader is not None and self._reader.exception() is not None):
                # A reset: the peer closed with bytes it never read (Linux answers close() over unread
                # data with RST, and a reset also empties our send queue), so part of the batch may
                # be lost: send it again.
                raise SendError("delivery failed: the connection was reset")
            if not self._healthy():
                # A clean close after every byte was acknowledged: the peer read all of it before
                # closing (unread data would have drawn a reset), so the batch is delivered.
                await self.close()
        except SendError:
            await self.close()
            raise
        except TimeoutError as exc:
            await self.close()
            raise _failure("timed out sending to the destination", exc) from None
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            await self.close()
            raise _failure("delivery failed", exc) from None

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError, ConnectionError):
                await asyncio.wait_for(writer.wait_closed(), 2)


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for webhooks: checks every address of the name on each new connection
    and hands aiohttp only the first, so it connects to what was checked. aiohttp keeps the URL's
    name for the Host header, SNI and certificate verification."""

    def __init__(self, allow: Sequence[Allowed], resolve: Resolve, timeout: float):
        self._allow, self._resolve, self._timeout = tuple(allow), resolve, timeout

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        address = await pinned_address(host, port, allow=self._allow, resolve=self._resolve, timeout=self._timeout)
        return [{"hostname": host, "host": address, "port": port, "proto": 0, "flags": socket.AI_NUMERICHOST,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET}]

    async def close(self) -> None:
        return None


def url_host_port(url: str) -> tuple[str, int]:
    """A webhook URL's host and port (80/443 when the URL names none; 0 when it is unreadable,
    which no allowlist entry admits)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = 0
    return parts.hostname or "", port or {"http": 80, "https": 443}.get(parts.scheme, 0)


def guarded_socket_factory(allow: Sequence[Allowed]) -> Callable[[Any], socket.socket]:
    """aiohttp's socket factory: the last check, on the very address about to be connected."""
    def factory(addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        verdict = judge([parse_address(str(sockaddr[0]))], int(sockaddr[1]), allow)
        if not verdict.allowed:
            raise OSError(errno.EACCES, f"{REFUSED}: {verdict.reason}")
        return socket.socket(family=family, type=type_, proto=proto)
    return factory


class WebhookSender:
    def __init__(self, url: str, secret: str, *, forwarder_id: str, allow: Sequence[Allowed] = (),
                 resolve: Resolve = system_resolve, timeout: float = 10.0):
        self._url, self._secret, self._forwarder_id = url, secret, forwarder_id
        self._allow, self._resolve, self._seconds = tuple(allow), resolve, timeout
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def _new_session(self) -> aiohttp.ClientSession:
        # No DNS cache: every new connection resolves and checks again. No proxy from the environment.
        connector = aiohttp.TCPConnector(resolver=PinnedResolver(self._allow, self._resolve, self._seconds),
                                         use_dns_cache=False, socket_factory=guarded_socket_factory(self._allow))
        return aiohttp.ClientSession(timeout=self._timeout, connector=connector, trust_env=False)

    async def send(self, payload: bytes) -> None:
        host, port = url_host_port(self._url)
        if literal_address(host) is not None:
            # aiohttp connects to an address literal without asking the resolver: checked here
            # (and by the socket factory, which sees every address aiohttp connects to).
            await pinned_address(host, port, allow=self._allow)
        if self._session is None:
            self._session = self._new_session()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(self._secret, timestamp, payload),
            "X-Strongroom-Forwarder": self._forwarder_id,
        }
        try:
            async with self._session.post(self._url, data=payload, headers=headers, allow_redirects=False) as resp:
                if not 200 <= resp.status < 300:
                    raise SendError(f"the destination answered HTTP {resp.status // 100}xx",
                                    f"webhook answered {resp.status} {resp.reason}")
        except TimeoutError as exc:
            raise self._failure("timed out sending to the destination", exc) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self._failure("cannot connect to the destination", exc) from None

    def _failure(self, message: str, exc: BaseException) -> SendError:
        error = _failure(message, exc)
        query = urlsplit(self._url).query
        if query:  # the query may carry a token: never in a log line
            error.detail = error.detail.replace(query, "<query>")
        return error

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def tls_context(ca_pem: str | None) -> ssl.SSLContext:
    """Verifies the receiver's certificate and name: against the given CA, else the system's."""
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
