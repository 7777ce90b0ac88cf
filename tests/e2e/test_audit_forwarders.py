"""Continuous forwarders against a real rsyslog (TCP and TLS, RFC 5425 framing) and a signed webhook:
every record arrives once and in order, across a receiver restart and an auditsvc restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.auditsvc.forwarding import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_webhook_signature,
)
from strongroom.cli import main

from .helpers import audit_records_until, make_tenant

pytestmark = pytest.mark.stack(audit={"forwarder_poll_seconds": 0.05, "forwarder_max_backoff_seconds": 0.4,
                                      "forwarder_batch_size": 50})
RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
_SEQ = re.compile(r'\sseq="(\d+)"|\scn1=(\d+)')  # RFC 5424 SD-PARAM, or CEF's chainSeq


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rsyslog:
    """rsyslogd in the foreground with a generated config: imtcp on loopback, raw messages to a file."""

    def __init__(self, root: Path, tls: dict[str, Path] | None = None):
        self.root, self.port, self.out = root, _free_port(), root / "received.log"
        root.mkdir(parents=True, exist_ok=True)
        lines = [f'global(workDirectory="{root}")']
        if tls:
            lines.append(f'global(DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{tls["ca"]}" '
                         f'DefaultNetstreamDriverCertFile="{tls["cert"]}" DefaultNetstreamDriverKeyFile="{tls["key"]}")')
            lines.append('module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" '
                         'StreamDriver.AuthMode="anon")')
        else:
            lines.append('module(load="imtcp")')
        lines += [
            f'input(type="imtcp" port="{self.port}" address="127.0.0.1")',
            'template(name="raw" type="string" string="%rawmsg%\\n")',
            f'action(type="omfile" file="{self.out}" template="raw")',
        ]
        self.conf = root / "rsyslog.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.root / "pid")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                assert self.proc.poll() is None, f"rsyslogd exited: {self.conf.read_text()}"
                assert time.monotonic() < deadline, "rsyslogd did not listen"
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 10)
        self.proc = None

    def seqs(self) -> list[int]:
        if not self.out.exists():
            return []
        return [int(m.group(1) or m.group(2)) for line in self.out.read_text().splitlines()
                if (m := _SEQ.search(line))]


def _tls_files(root: Path) -> dict[str, Path]:
    """A CA and a server certificate for localhost/127.0.0.1, generated for this test."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test audit CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(ca_key, hashes.SHA256()))
    root.mkdir(parents=True, exist_ok=True)
    files = {"ca": root / "ca.pem", "cert": root / "cert.pem", "key": root / "key.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption()))
    return files


async def _make_events(admin, count: int, prefix: str, *, recorded: bool = True) -> None:
    """Creates keys and (unless auditsvc is down) returns once their key.created records are in
    the log, so that a forwarder "caught up" with the log's head has had the chance to send them."""
    for i in range(count):
        status, body, _ = await admin.call("POST", "/v1/keys", json={"name": f"{prefix}-{i}", "algorithm": "AES-256"})
        assert status == 201, body
    if not recorded:
        return
    names = {f"{prefix}-{i}" for i in range(count)}

    def all_in(records: list[dict]) -> bool:
        return names <= {r["details"].get("name") for r in records if r["action"] == "key.created"}

    assert all_in(await audit_records_until(admin, all_in)), f"key.created records of {sorted(names)} missing"


async def _caught_up(admin, forwarder_id: str, timeout: float = 20.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, fwd, _ = await admin.call("GET", f"/v1/audit/forwarders/{forwarder_id}")
        assert status == 200, fwd
        st, head, _ = await admin.call("GET", "/v1/audit/status")
        if fwd["cursor"] == head["last_seq"] and fwd["lag_records"] == 0:
            return fwd
        assert asyncio.get_running_loop().time() < deadline, (fwd, head)
        await asyncio.sleep(0.05)


async def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_rsyslog_receives_every_record_once_in_order_across_its_restart(api, stack, tmp_path, tls):
    files = _tls_files(tmp_path / "pki") if tls else None
    receiver = Rsyslog(tmp_path / "rsyslog", files)
    await receiver.start()
    try:
        tenant = await make_tenant(api)
        spec = {"name": "siem", "kind": "syslog_tls" if tls else "syslog_tcp", "host": "127.0.0.1",
                "port": receiver.port, "format": "syslog"}
        if tls:
            spec |= {"tls_ca_pem": files["ca"].read_text(), "tls_server_name": "localhost"}
        status, fwd, _ = await tenant.admin.call("POST", "/v1/audit/forwarders", json=spec)
        assert status == 201, fwd
        assert "secret" not in fwd and fwd["destination"].startswith("tls://" if tls else "tcp://")

        await _make_events(tenant.admin, 15, "a")
        first = await _caught_up(tenant.admin, fwd["forwarder_id"])
        await _wait_for(lambda: len(receiver.seqs()) >= first["cursor"])
        # Stopped between batches, then records arrive while it is down. Plain syslog over TCP
        # (RFC 6587) has no acknowledgement from the receiving process: bytes its kernel took but
        # it never read before exiting are lost without the sender being able to tell (the
        # sender's reset check narrows that window, it cannot close it), so a stop in the middle
        # of a batch is not a promise this transport can keep.
        await receiver.stop()
        await _make_events(tenant.admin, 10, "b")
        # While rsyslog is down the forwarder retries, and says so.
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            _, down, _ = await tenant.admin.call("GET", f"/v1/audit/forwarders/{fwd['forwarder_id']}")
            if down["status"] == "retrying" and down["last_error"]:
                break
            assert asyncio.get_running_loop().time() < deadline, down
            await asyncio.sleep(0.05)
        assert down["lag_records"] > 0
        await receiver.start()
        await _make_events(tenant.admin, 10, "c")

        final = await _caught_up(tenant.admin, fwd["forwarder_id"])
        await _wait_for(lambda: len(receiver.seqs()) >= final["cursor"])
        assert receiver.seqs() == list(range(1, final["cursor"] + 1))
        assert final["status"] == "active" and final["delivered"] == final["cursor"]
    finally:
        await receiver.stop()


async def test_auditsvc_restarted_mid_stream_forwards_nothing_twice_and_loses_nothing(api, stack, tmp_path):
    receiver = Rsyslog(tmp_path / "rsyslog")
    await receiver.start()
    try:
        tenant = await make_tenant(api)
        status, fwd, _ = await tenant.admin.call("POST", "/v1/audit/forwarders", json={
            "name": "siem", "kind": "syslog_tcp", "host": "127.0.0.1", "port": receiver.port, "format": "cef"})
        assert status == 201, fwd
        await _make_events(tenant.admin, 15, "a")
        await _wait_for(lambda: len(receiver.seqs()) >= 3)
        await stack.stop("auditsvc")
        await _make_events(tenant.admin, 10, "b", recorded=False)  # queued in RabbitMQ meanwhile
        await stack.start("auditsvc")
        await _make_events(tenant.admin, 10, "c")
        final = await _caught_up(tenant.admin, fwd["forwarder_id"])
        await _wait_for(lambda: len(receiver.seqs()) >= final["cursor"])
        assert receiver.seqs() == list(range(1, final["cursor"] + 1))
    finally:
        await receiver.stop()


async def test_webhook_is_signed_filtered_and_retried_until_accepted(api, stack):
    received: list[dict] = []
    state = {"fail": 2, "secret": None, "bad_signatures": 0}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_webhook_signature(state["secret"], request.headers[TIMESTAMP_HEADER], body,
                                        request.headers[SIGNATURE_HEADER]):
            state["bad_signatures"] += 1
            return web.Response(status=401)
        if state["fail"] > 0:
            state["fail"] -= 1
            return web.Response(status=503)
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        tenant = await make_tenant(api)
        status, fwd, _ = await tenant.admin.call("POST", "/v1/audit/forwarders", json={
            "name": "approvals", "kind": "webhook", "url": f"http://127.0.0.1:{port}/hook?token=abc",
            "format": "jsonl", "event_types": ["key.created"]})
        assert status == 201, fwd
        state["secret"] = fwd["secret"]
        assert fwd["secret"].startswith("whsec_") and "token=abc" not in fwd["destination"]
        status, listed, _ = await tenant.admin.call("GET", "/v1/audit/forwarders")
        assert "secret" not in listed["items"][0] and "url" not in listed["items"][0]

        await _make_events(tenant.admin, 4, "w")
        await _caught_up(tenant.admin, fwd["forwarder_id"])
        actions = [r["api"]["operation"] for batch in received for r in batch["records"]]
        assert actions == ["key.created"] * 5  # the tenant's first key and four more, nothing else
        seqs = [s for batch in received for s in batch["seqs"]]
        assert seqs == sorted(set(seqs))
        assert state["bad_signatures"] == 0 and state["fail"] == 0

        status, changed, _ = await tenant.admin.call("PATCH", f"/v1/audit/forwarders/{fwd['forwarder_id']}",
                                                     json={"enabled": False})
        assert status == 200 and changed["enabled"] is False
        status, _, _ = await tenant.admin.call("DELETE", f"/v1/audit/forwarders/{fwd['forwarder_id']}")
        assert status == 200
        status, _, _ = await tenant.admin.call("GET", f"/v1/audit/forwarders/{fwd['forwarder_id']}")
        assert status == 404
        records = [r["action"] for r in (await tenant.admin.call("GET", "/v1/audit?action=forwarder.created"))[1]["items"]]
        assert records == ["forwarder.created"]
    finally:
        await runner.cleanup()


async def test_webhook_secret_is_sealed_at_rest_and_rotated_without_a_gap(api, stack, mongo_client, db_prefix,
                                                                          capsys):
    secrets_known: list[str] = []
    signed_with: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        for i, secret in enumerate(secrets_known):
            if verify_webhook_signature(secret, request.headers[TIMESTAMP_HEADER], body,
                                        request.headers[SIGNATURE_HEADER]):
                signed_with.append(i)
                return web.Response(status=204)
        return web.Response(status=401)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    raw = mongo_client[f"{db_prefix}auditsvc"]["forwarders"]
    try:
        tenant = await make_tenant(api)
        status, fwd, _ = await tenant.admin.call("POST", "/v1/audit/forwarders", json={
            "name": "keys", "kind": "webhook", "url": f"http://127.0.0.1:{port}/hook", "event_types": ["key.created"]})
        assert status == 201, fwd
        fid = fwd["forwarder_id"]
        secrets_known.append(fwd["secret"])
        stored = await raw.find_one({"tenant_id": tenant.tenant_id, "forwarder_id": fid})
        assert stored["secret"].startswith("sealed:v1:") and fwd["secret"] not in str(stored)
        await _make_events(tenant.admin, 2, "before")
        await _caught_up(tenant.admin, fid)
        assert signed_with and set(signed_with) == {0}

        status, rotated, _ = await tenant.admin.call("POST", f"/v1/audit/forwarders/{fid}/rotate-secret")
        assert status == 200, rotated
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != fwd["secret"]
        secrets_known.append(rotated["secret"])
        restored = await raw.find_one({"tenant_id": tenant.tenant_id, "forwarder_id": fid})
        assert restored["secret"].startswith("sealed:v1:") and restored["secret"] != stored["secret"]
        assert rotated["secret"] not in str(restored)
        status, shown, _ = await tenant.admin.call("GET", f"/v1/audit/forwarders/{fid}")
        assert status == 200 and "secret" not in shown

        # From the rotation on, deliveries are signed with the new secret; nothing was refused.
        delivered = len(signed_with)
        await _make_events(tenant.admin, 2, "after")
        await _caught_up(tenant.admin, fid)
        assert len(signed_with) > delivered and signed_with[-1] == 1

        # The operator CLI rotates too, printing the secret this once.
        token = tenant.admin.token
        code = await asyncio.to_thread(main, ["--url", stack.url, "--token", token,
                                              "audit", "rotate-forwarder-secret", fid])
        out = capsys.readouterr()
        assert code == 0 and re.search(r"^secret: whsec_\S+$", out.out, re.MULTILINE) and "shown once" in out.err

        # Recorded, without the secret; only webhooks have one; unknown forwarders are 404.
        status, page, _ = await tenant.admin.call("GET", "/v1/audit?action=forwarder.secret_rotated")
        assert status == 200 and len(page["items"]) >= 1
        assert not any(s in json.dumps(page) for s in (*secrets_known, "whsec_"))
        status, syslog, _ = await tenant.admin.call("POST", "/v1/audit/forwarders", json={
            "name": "s", "kind": "syslog_tcp", "host": "127.0.0.1", "port": 1, "enabled": False})
        assert status == 201, syslog
        status, problem, _ = await tenant.admin.call(
            "POST", f"/v1/audit/forwarders/{syslog['forwarder_id']}/rotate-secret")
        assert status == 409 and problem["field"] == "forwarder_id", problem
        status, problem, _ = await tenant.admin.call("POST", "/v1/audit/forwarders/fwd_nope/rotate-secret")
        assert status == 404, problem
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("spec, field", [
    ({"name": "x", "kind": "carrier-pigeon", "host": "h", "port": 1}, "kind"),
    ({"name": "x", "kind": "syslog_tcp", "host": "h"}, "host"),
    ({"name": "x", "kind": "syslog_tcp", "host": "h", "port": 70000}, "port"),
    ({"name": "x", "kind": "webhook", "url": "ftp://h/x"}, "url"),
    ({"name": "x", "kind": "webhook", "url": "https://h:99999/x"}, "url"),
    ({"name": "x", "kind": "webhook", "url": "https://h:port/x"}, "url"),
    ({"name": "x", "kind": "webhook", "url": "https://h/x", "format": "xml"}, "format"),
    ({"name": "x", "kind": "webhook", "url": "https://h/x", "event_types": ["Key Created!"]}, "event_types"),
    ({"name": "x", "kind": "webhook", "url": "https://h/x", "secret": "mine"}, "secret"),
])
async def test_bad_forwarder_specs_are_rejected_naming_the_field(api, stack, spec, field):
    tenant = await make_tenant(api)
    status, body, _ = await tenant.admin.call("POST", "/v1/audit/forwarders", json=spec)
    assert status == 422, body
    assert body["field"].startswith(field), body
    status, listed, _ = await tenant.admin.call("GET", "/v1/audit/forwarders")
    assert listed["items"] == []
