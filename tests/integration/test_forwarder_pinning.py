"""Forwarder transports connect only to the address they checked (issue 14 item 2).

Real sockets, real aiohttp and TLS receivers on loopback; the resolver is scripted so a name
can answer one address and then another, the way a rebinding DNS server does. The provider
allowlist names 127.0.0.3, the receivers' address; 127.0.0.1 stands for everything internal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.auditsvc.destinations import REFUSED, parse_allowlist
from services.auditsvc.senders import (
    DestinationRefused,
    SendError,
    SyslogSender,
    WebhookSender,
    guarded_socket_factory,
    tls_context,
)

RECEIVER = "127.0.0.3"
ALLOW = parse_allowlist(RECEIVER)


class ScriptedDns:
    """Answers each lookup with the next address of its script (the last one repeats)."""

    def __init__(self, *answers: str):
        self.answers, self.asked = list(answers), []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return [self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]]


async def _webhook_server(host: str, port: int = 0):
    seen: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append({"host": request.host, "body": await request.read(), "peer": request.transport.get_extra_info(
            "sockname")[0]})
        response = web.Response(status=204)
        response.force_close()  # every delivery opens a new connection, so every one is checked
        return response

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, runner.addresses[0][1], seen


async def test_a_webhook_goes_to_the_pinned_address_with_the_name_in_its_host_header():
    runner, port, seen = await _webhook_server(RECEIVER)
    dns = ScriptedDns(RECEIVER)
    sender = WebhookSender(f"http://collector.example:{port}/hook", "whsec_x", forwarder_id="fwd_1", allow=ALLOW,
                           resolve=dns)
    try:
        await sender.send(b'{"n":1}')
        await sender.send(b'{"n":2}')
    finally:
        await sender.close()
        await runner.cleanup()
    assert [s["host"] for s in seen] == [f"collector.example:{port}"] * 2
    assert [s["peer"] for s in seen] == [RECEIVER] * 2 and [s["body"] for s in seen] == [b'{"n":1}', b'{"n":2}']
    assert dns.asked == ["collector.example"] * 2  # resolved again for the second connection


async def test_a_webhook_name_rebound_to_loopback_is_refused_at_the_next_connection():
    runner, port, seen = await _webhook_server(RECEIVER)
    trap, _, trapped = await _webhook_server("127.0.0.1", port)
    sender = WebhookSender(f"http://collector.example:{port}/hook", "whsec_x", forwarder_id="fwd_1", allow=ALLOW,
                           resolve=ScriptedDns(RECEIVER, "127.0.0.1"))
    try:
        await sender.send(b"{}")
        with pytest.raises(DestinationRefused) as caught:
            await sender.send(b"{}")
    finally:
        await sender.close()
        await runner.cleanup()
        await trap.cleanup()
    assert len(seen) == 1 and trapped == []
    assert str(caught.value) == REFUSED and caught.value.detail == "127.0.0.1 is loopback"


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/hook", "http://[::ffff:127.0.0.1]:{port}/hook",
                                 "http://localhost:{port}/hook", "http://0x7f.0.0.1:{port}/hook"])
async def test_a_webhook_to_an_internal_address_sends_nothing(url):
    trap, port, trapped = await _webhook_server("127.0.0.1")
    sender = WebhookSender(url.format(port=port), "whsec_x", forwarder_id="fwd_1", allow=ALLOW)
    try:
        with pytest.raises(SendError) as caught:
            await sender.send(b"{}")
    finally:
        await sender.close()
        await trap.cleanup()
    assert trapped == [] and str(caught.value) == REFUSED


async def test_webhook_failures_tell_the_tenant_nothing_of_the_peer():
    async def teapot(request: web.Request) -> web.Response:
        return web.Response(status=418, text="internal admin console v1.2")

    app = web.Application()
    app.router.add_post("/hook", teapot)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, RECEIVER, 0).start()
    port = runner.addresses[0][1]
    sender = WebhookSender(f"http://{RECEIVER}:{port}/hook?token=s3cret", "whsec_x", forwarder_id="fwd_1", allow=ALLOW)
    try:
        with pytest.raises(SendError) as answered:
            await sender.send(b"{}")
        await runner.cleanup()
        with pytest.raises(SendError) as unreachable:
            await sender.send(b"{}")
    finally:
        await sender.close()
        await runner.cleanup()
    assert str(answered.value) == "the destination answered HTTP 4xx" and "418" in answered.value.detail
    assert str(unreachable.value) == "cannot connect to the destination"
    assert "s3cret" not in unreachable.value.detail + answered.value.detail


def _tls_pair(root: Path, name: str) -> tuple[str, ssl.SSLContext]:
    """A CA's PEM and a server context whose certificate names only `name`."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])

    def build(subject, public_key, signer, *extensions):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(hours=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(signer, hashes.SHA256())

    ca = build(ca_name, ca_key.public_key(), ca_key, (x509.BasicConstraints(ca=True, path_length=None), True))
    cert = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key(), ca_key,
                 (x509.SubjectAlternativeName([x509.DNSName(name)]), False))
    root.mkdir(parents=True, exist_ok=True)
    (root / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(root / "cert.pem", root / "key.pem")
    return ca.public_bytes(serialization.Encoding.PEM).decode(), server


async def _syslog_server(host: str, port: int = 0, tls: ssl.SSLContext | None = None):
    got: list[bytes] = []

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.read(65536))
        writer.close()  # the next batch needs a new connection

    server = await asyncio.start_server(take, host, port, ssl=tls)
    return server, server.sockets[0].getsockname()[1], got


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_syslog_tls_connects_to_the_pinned_address_and_verifies_the_name(tmp_path):
    ca_pem, server_tls = _tls_pair(tmp_path / "good", "collector.example")
    names: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, ctx: names.append(name)
    server, port, got = await _syslog_server(RECEIVER, tls=server_tls)
    sender = SyslogSender("collector.example", port, tls=tls_context(ca_pem), allow=ALLOW,
                          resolve=ScriptedDns(RECEIVER))
    try:
        await sender.send(b"5 hello")
        await _until(lambda: got)
    finally:
        await sender.close()
    assert got == [b"5 hello"] and names == ["collector.example"]

    # The same receiver, trusted by another CA's name: verification is on the name, not skipped.
    other_ca, _ = _tls_pair(tmp_path / "other", "collector.example")
    sender = SyslogSender("collector.example", port, tls=tls_context(other_ca), allow=ALLOW,
                          resolve=ScriptedDns(RECEIVER))
    try:
        with pytest.raises(SendError) as caught:
            await sender.send(b"5 again")
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()
    assert str(caught.value) == "cannot connect to the destination" and "CERTIFICATE_VERIFY_FAILED" in caught.value.detail


async def test_a_syslog_name_rebound_to_loopback_is_refused_when_it_reconnects():
    server, port, got = await _syslog_server(RECEIVER)
    trap, _, trapped = await _syslog_server("127.0.0.1", port)
    sender = SyslogSender("collector.example", port, allow=ALLOW, resolve=ScriptedDns(RECEIVER, "127.0.0.1"))
    try:
        await sender.send(b"5 first")
        await _until(lambda: got)
        await asyncio.sleep(0.05)  # the receiver closed; the next batch reconnects
        with pytest.raises(DestinationRefused) as caught:
            await sender.send(b"6 second")
    finally:
        await sender.close()
        for each in (server, trap):
            each.close()
            await each.wait_closed()
    assert got == [b"5 first"] and trapped == [] and str(caught.value) == REFUSED


def test_the_webhook_socket_factory_refuses_an_address_nothing_checked_before():
    """The last guard: whatever path led aiohttp to an address, the socket for it is refused."""
    factory = guarded_socket_factory(ALLOW)
    for family, sockaddr in ((socket.AF_INET, ("127.0.0.1", 80)), (socket.AF_INET, ("169.254.169.254", 80)),
                             (socket.AF_INET6, ("::ffff:10.0.0.1", 443, 0, 0)), (socket.AF_INET6, ("::1", 80, 0, 0))):
        with pytest.raises(OSError, match=REFUSED):
            factory((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
    factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (RECEIVER, 80))).close()
