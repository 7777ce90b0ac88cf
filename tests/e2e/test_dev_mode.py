"""`strongroom dev` as a user runs it: one process, printed URL and bootstrap credential,
data kept in the data directory across restarts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyotp

from shared.embedded_mongo import free_port


def _start(data_dir: Path, port: int) -> tuple[subprocess.Popen, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URL"}
    process = subprocess.Popen(
        [sys.executable, "-m", "strongroom.cli", "dev", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if line.strip().startswith("Next:"):
            break
    text = "".join(lines)
    process.started_text = text  # type: ignore[attr-defined]
    url = re.search(r"gateway:\s+(\S+)", text).group(1)
    bootstrap = re.search(r"bootstrap:\s+(\S+)", text).group(1)
    return process, url, bootstrap


def _call(method: str, url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


def test_dev_mode_prints_url_and_credential_and_keeps_data(tmp_path):
    data_dir = tmp_path / "dev"
    port = free_port()
    process, url, bootstrap = _start(data_dir, port)
    try:
        assert url == f"http://127.0.0.1:{port}"
        # It says where mail (invitations with their setup tokens) goes.
        assert re.search(r"mail:\s+" + re.escape(str(data_dir.resolve() / "mail")), process.started_text)
        # The bootstrap credential creates the provider admin, who signs in (enrolling TOTP),
        # creates a tenant and a personal API token.
        password = "dev-mode-orchid-7291"
        status, out = _call("POST", url + "/v1/auth/bootstrap", bootstrap, {"username": "root", "password": password})
        assert status == 201, out
        status, login = _call("POST", url + "/v1/auth/login", "", {"tenant": "provider", "username": "root", "password": password})
        assert status == 201 and login["mfa_enrolment_required"], login
        session = login["session_token"]
        status, enrol = _call("POST", url + "/v1/me/mfa", session)
        assert status == 201, enrol
        status, _ = _call("POST", url + "/v1/me/mfa/confirm", session, {"code": pyotp.TOTP(enrol["secret"]).now()})
        assert status == 200
        status, tenant = _call("POST", url + "/v1/tenants", session, {"name": "acme", "admin_email": "ann@acme.example"})
        assert status == 201 and "setup_token" not in tenant, tenant
        # Dev mode writes mail to a folder: the first admin's invitation carries her setup token.
        invitation = next((data_dir / "mail").glob("*.eml")).read_text()
        assert "To: ann@acme.example" in invitation
        token = re.search(r"sr_setup_[A-Za-z0-9_-]+", invitation).group(0)
        assert _call("POST", url + "/v1/auth/setup", "", {"setup_token": token, "password": password})[0] == 200
        status, pat = _call("POST", url + "/v1/tokens", session, {"name": "dev"})
        assert status == 201, pat
    finally:
        assert _stop(process) == 0
    assert (data_dir / "root.key").stat().st_mode & 0o777 == 0o600

    process, url, bootstrap_again = _start(data_dir, port)
    try:
        assert bootstrap_again != bootstrap  # a fresh credential at every start
        assert _call("POST", url + "/v1/tenants", bootstrap, {"name": "x"})[0] == 401
        # Bootstrapping happens once: the fresh credential is refused too.
        assert _call("POST", url + "/v1/auth/bootstrap", bootstrap_again, {"username": "x", "password": "y" * 12})[0] == 401
        status, tenants = _call("GET", url + "/v1/tenants", pat["token"])
        assert status == 200 and [t["tenant_id"] for t in tenants["items"]] == [tenant["tenant_id"]]
    finally:
        assert _stop(process) == 0
