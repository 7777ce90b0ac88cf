"""Forwarder transports: syslog over TCP/TLS and HTTP(S) webhooks.

`send` returns only when the destination took the batch: a webhook's 2xx, or for syslog, the
peer's TCP stack acknowledging every byte (the socket's send queue drained to zero, TIOCOUTQ)
and no reset from the peer. Anything else raises, and the forwarder retries the same batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import ssl
import struct
import termios
import time
from typing import Any, Protocol

import aiohttp

from .forwarding import SIGNATURE_HEADER, TIMESTAMP_HEADER, webhook_signature


class SendError(Exception):
    """The destination did not take the batch; the message is safe to show operators."""


class Sender(Protocol):
    async def send(self, payload: bytes) -> None: ...
    async def close(self) -> None: ...


def _unacked_bytes(sock: Any) -> int:
    # Linux: bytes in the send queue not yet acknowledged by the peer.
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("I", 0))
    return struct.unpack("I", buf)[0]


def _reset(sock: Any) -> bool:
    # A reset the event loop has not reported yet is pending on the socket as ECONNRESET or EPIPE.
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0


class SyslogSender:
    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                 server_name: str | None = None, timeout: float = 10.0):
        self._host, self._port, self._tls = host, port, tls
        self._server_name = server_name or host
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(
                self._host, self._port, ssl=self._tls, server_hostname=self._server_name if self._tls else None,
            ), self._timeout)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise SendError(f"cannot connect to {self._host}:{self._port}: {exc.__class__.__name__}: {exc}") from None
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
                    raise SendError("the receiver did not acknowledge the batch in time")
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)
            if _reset(sock) or (self._reader is not None and self._reader.exception() is not None):
                # A reset: the peer closed with bytes it never read (Linux answers close() over unread
                # data with RST, and a reset also empties our send queue), so part of the batch may
                # be lost: send it again.
                raise SendError("the receiver reset the connection")
            if not self._healthy():
                # A clean close after every byte was acknowledged: the peer read all of it before
                # closing (unread data would have drawn a reset), so the batch is delivered.
                await self.close()
        except SendError:
            await self.close()
            raise
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            await self.close()
            raise SendError(f"send to {self._host}:{self._port} failed: {exc.__class__.__name__}: {exc}") from None

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError, ConnectionError):
                await asyncio.wait_for(writer.wait_closed(), 2)


class WebhookSender:
    def __init__(self, url: str, secret: str, *, forwarder_id: str, timeout: float = 10.0):
        self._url, self._secret, self._forwarder_id = url, secret, forwarder_id
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(self, payload: bytes) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
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
                    raise SendError(f"webhook answered {resp.status} {resp.reason}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SendError(f"webhook unreachable: {exc.__class__.__name__}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def tls_context(ca_pem: str | None) -> ssl.SSLContext:
    """Verifies the receiver's certificate and name: against the given CA, else the system's."""
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
