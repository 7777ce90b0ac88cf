"""Forwarders cannot be pointed at the provider's own network (SSRF, issue 14 item 2).

This stack's provider allowlist names 127.0.0.3 only (where these tests' receivers listen), so
the gateway on 127.0.0.1 and every other internal address stand for what a tenant must not reach.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from .helpers import make_tenant
from .test_audit_forwarders import _make_events

ALLOWED_HOST = "127.0.0.3"
pytestmark = pytest.mark.stack(audit={"forwarder_poll_seconds": 0.05, "forwarder_max_backoff_seconds": 0.4,
                                      "forwarder_batch_size": 50, "forwarder_allow": ALLOWED_HOST})

WEBHOOK_TARGETS = [
    "http://127.0.0.1:{gw}/v1/health",            # the gateway itself
    "http://127.0.0.1:1/x",
    "http://localhost:{gw}/",
    "http://[::1]:{gw}/",
    "http://[::ffff:127.0.0.1]:{gw}/",            # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]:{gw}/",
    "http://2130706433:{gw}/",                     # decimal
    "http://0177.0.0.1:{gw}/",                     # octal
    "http://0x7f.0.0.1:{gw}/",                     # hex
    "http://127.1:{gw}/",
    "http://0.0.0.0:{gw}/",
    "http://10.0.0.1/hook",
    "http://172.16.5.4/hook",
    "https://192.168.1.1/hook",
    "http://100.64.0.1/hook",                      # shared address space
    "http://169.254.169.254/latest/meta-data/",    # cloud metadata
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://224.0.0.1/hook",
    "http://240.0.0.1/hook",
]
SYSLOG_TARGETS = [("syslog_tcp", "127.0.0.1", "{gw}"), ("syslog_tcp", "::1", "514"), ("syslog_tls", "localhost", "6514"),
                  ("syslog_tcp", "169.254.169.254", "80"), ("syslog_tls", "10.1.2.3", "6514")]


def _spec(kind: str, target: str, gateway_port: int) -> tuple[dict, str, str]:
    """The forwarder body, the field a refusal must name, and the host it must not echo."""
    if kind == "webhook":
        url = target.format(gw=gateway_port)
        return {"name": "x", "kind": "webhook", "url": url}, "url", urlsplit(url).hostname or ""
    host, port = target
    return {"name": "x", "kind": kind, "host": host, "port": int(port.format(gw=gateway_port))}, "host", host


async def test_internal_destinations_are_refused_at_creation_naming_the_field(api, stack):
    tenant = await make_tenant(api)
    gateway_port = urlsplit(stack.url).port
    cases = [("webhook", t) for t in WEBHOOK_TARGETS] + [(k, (h, p)) for k, h, p in SYSLOG_TARGETS]
    wrong = []
    for kind, target in cases:
        spec, field, host = _spec(kind, target, gateway_port)
        status, body, ctype = await tenant.admin.call("POST", "/v1/audit/forwarders", json=spec)
        if status != 422 or body.get("field") != field or not ctype.startswith("application/problem+json"):
            wrong.append((spec, status, body))
        elif host in body["detail"] or str(gateway_port) in body["detail"] or "destination refused" not in body["detail"]:
            wrong.append((spec, "detail", body["detail"]))
    assert wrong == []
    status, listed, _ = await tenant.admin.call("GET", "/v1/audit/forwarders")
    assert status == 200 and listed["items"] == []


async def _forwarder_when(admin, forwarder_id: str, predicate, timeout: float = 20.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, fwd, _ = await admin.call("GET", f"/v1/audit/forwarders/{forwarder_id}")
        assert status == 200, fwd
        if predicate(fwd):
            return fwd
        assert asyncio.get_running_loop().time() < deadline, fwd
        await asyncio.sleep(0.05)


async def _webhook_receiver(host: str, handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    return runner, runner.addresses[0][1]


async def test_an_allowlisted_receiver_is_reached_and_errors_stay_generic(api, stack):
    answers = {"status": 405}
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        if answers["status"] != 204:
            return web.Response(status=answers["status"], text="internal-banner nginx/1.2.3 admin console")
        received.append(await request.json())
        return web.Response(status=204)

    runner, port = await _webhook_receiver(ALLOWED_HOST, hook)
    try:
        tenant = await make_tenant(api)
        status, fwd, _ = await tenant.admin.call("POST", "/v1/audit/forwarders", json={
            "name": "hook", "kind": "webhook", "url": f"http://{ALLOWED_HOST}:{port}/hook"})
        assert status == 201, fwd
        refused = await _forwarder_when(tenant.admin, fwd["forwarder_id"], lambda f: f["last_error"])
        assert refused["status"] == "retrying" and refused["last_error"] == "the destination answered HTTP 4xx", refused
        answers["status"] = 204
        done = await _forwarder_when(tenant.admin, fwd["forwarder_id"], lambda f: f["lag_records"] == 0 and received)
        assert done["status"] == "active" and received[0]["first_seq"] == 1

        # Nothing listens on this allowlisted port: the tenant learns that, not how it failed.
        with socket.socket() as probe:
            probe.bind((ALLOWED_HOST, 0))
            closed_port = probe.getsockname()[1]
        status, dead, _ = await tenant.admin.call("POST", "/v1/audit/forwarders", json={
            "name": "dead", "kind": "webhook", "url": f"http://{ALLOWED_HOST}:{closed_port}/hook"})
        assert status == 201, dead
        failed = await _forwarder_when(tenant.admin, dead["forwarder_id"], lambda f: f["last_error"])
        assert failed["last_error"] == "cannot connect to the destination", failed
    finally:
        await runner.cleanup()


async def _tcp_trap(host: str) -> tuple[asyncio.Server, list[bytes]]:
    got: list[bytes] = []

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.read(65536))
        writer.close()

    return await asyncio.start_server(take, host, 0), got


async def test_a_destination_now_reaching_an_internal_address_is_refused_at_connection(
        api, stack, mongo_client, db_prefix):
    """A forwarder checked at creation whose destination then reaches loopback (as a name
    rebound in DNS does; here its stored address is changed underneath) sends nothing there."""
    hits: list[bytes] = []

    async def trap_hook(request: web.Request) -> web.Response:
        hits.append(await request.read())
        return web.Response(status=204)

    async def ok_hook(request: web.Request) -> web.Response:
        return web.Response(status=204)

    allowed_runner, allowed_port = await _webhook_receiver(ALLOWED_HOST, ok_hook)
    trap_runner, trap_port = await _webhook_receiver("127.0.0.1", trap_hook)
    syslog_ok, _ = await _tcp_trap(ALLOWED_HOST)
    syslog_trap, syslog_hits = await _tcp_trap("127.0.0.1")
    raw = mongo_client[f"{db_prefix}auditsvc"]["forwarders"]
    try:
        tenant = await make_tenant(api)
        status, hook, _ = await tenant.admin.call("POST", "/v1/audit/forwarders", json={
            "name": "hook", "kind": "webhook", "url": f"http://{ALLOWED_HOST}:{allowed_port}/hook"})
        assert status == 201, hook
        status, syslog, _ = await tenant.admin.call("POST", "/v1/audit/forwarders", json={
            "name": "siem", "kind": "syslog_tcp", "host": ALLOWED_HOST,
            "port": syslog_ok.sockets[0].getsockname()[1]})
        assert status == 201, syslog
        await raw.update_one({"tenant_id": tenant.tenant_id, "forwarder_id": hook["forwarder_id"]},
                             {"$set": {"url": f"http://127.0.0.1:{trap_port}/hook"}})
        await raw.update_one({"tenant_id": tenant.tenant_id, "forwarder_id": syslog["forwarder_id"]},
                             {"$set": {"host": "127.0.0.1", "port": syslog_trap.sockets[0].getsockname()[1]}})
        await _make_events(tenant.admin, 3, "after")
        for fwd in (hook, syslog):
            refused = await _forwarder_when(tenant.admin, fwd["forwarder_id"],
                                            lambda f: f["last_error"] or hits or syslog_hits)
            assert hits == [] and syslog_hits == []
            assert refused["status"] == "retrying" and refused["last_error"] == "destination refused", refused
            assert refused["lag_records"] > 0, refused
    finally:
        await allowed_runner.cleanup()
        await trap_runner.cleanup()
        for server in (syslog_ok, syslog_trap):
            server.close()
            await server.wait_closed()
