"""The agent as shipped: enrol with the SDK, then encrypt and decrypt a file with the CLI.
Only a policy-approved agent can read the data; a denied one gets exit code 3. Its heartbeat
command keeps the device's posture checked."""

from __future__ import annotations

import asyncio
import contextlib
import json

from agent import cli
from agent.client import AgentClient, KeyDenied
from shared.commands_policy import DEFAULT_HEARTBEAT_GRACE_SECONDS

from .helpers import make_tenant


async def test_agent_encrypts_and_decrypts_a_file_only_under_policy(api, tmp_path, capsys):
    tenant = await make_tenant(api)
    _status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "vm-1"})
    home = tmp_path / "agent-home"
    async with AgentClient() as client:
        identity = await client.enroll(api.url, enr["token"], "vm-1", home)
    assert identity.tenant_id == tenant.tenant_id
    assert (home / "device.key").stat().st_mode & 0o777 == 0o600

    eu = tmp_path / "eu.json"
    eu.write_text(json.dumps({"identity": {"region": "eu-west-1"}, "integrity": {"firewall_enabled": True}}))
    us = tmp_path / "us.json"
    us.write_text(json.dumps({"identity": {"region": "us-east-1"}, "integrity": {"firewall_enabled": True}}))
    secret = tmp_path / "payroll.csv"
    secret.write_bytes(b"name,salary\nada,1\n" * 10_000)

    def run(*argv: str) -> int:
        return cli.build_parser().parse_args(["--home", str(home), *argv])

    sealed = tmp_path / "payroll.csv.sr"
    encrypt = run("encrypt", "--facts-file", str(eu), "--key-id", tenant.key_id, str(secret), str(sealed))
    assert await cli.run(encrypt, environ={}) == 0
    assert secret.read_bytes()[:64] not in sealed.read_bytes()

    restored = tmp_path / "restored.csv"
    assert await cli.run(run("decrypt", "--facts-file", str(eu), str(sealed), str(restored)), environ={}) == 0
    assert restored.read_bytes() == secret.read_bytes()

    capsys.readouterr()
    denied_out = tmp_path / "denied.csv"
    assert await cli.run(run("decrypt", "--facts-file", str(us), str(sealed), str(denied_out)), environ={}) == 3
    assert "identity.region" in capsys.readouterr().err
    assert not denied_out.exists()

    async with AgentClient.from_state_dir(home) as client:
        try:
            await client.request_key(tenant.key_id, facts={"identity": {"region": "us-east-1"}})
        except KeyDenied as exc:
            assert exc.status == 403 and exc.reasons
        else:
            raise AssertionError("a denied request must raise KeyDenied")


async def test_agent_heartbeat_command_reports_posture_once_or_in_a_loop(api, tmp_path, capsys):
    tenant = await make_tenant(api)
    status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "vm-2"})
    assert status == 201, enr
    home = tmp_path / "agent-home"
    async with AgentClient() as client:
        identity = await client.enroll(api.url, enr["token"], "vm-2", home)
    good, drifted = tmp_path / "good.json", tmp_path / "drifted.json"
    good.write_text(json.dumps({"identity": {"region": "eu-west-1"}, "integrity": {"firewall_enabled": True}}))
    drifted.write_text(json.dumps({"identity": {"region": "eu-west-1"}, "integrity": {"firewall_enabled": False}}))

    def run(*argv: str):
        return cli.build_parser().parse_args(["--home", str(home), *argv])

    def beats(out: str) -> list[dict]:  # the services share this process and may log to stdout too
        found = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return [{k: b[k] for k in ("device_id", "status", "next_heartbeat_within_seconds")} for b in found
                if b.get("event", "heartbeat_sent") == "heartbeat_sent" and "status" in b]

    assert await cli.run(run("request-key", "--facts-file", str(good), tenant.key_id), environ={}) == 0
    capsys.readouterr()
    assert await cli.run(run("heartbeat", "--once", "--facts-file", str(good)), environ={}) == 0
    assert beats(capsys.readouterr().out) == [{
        "device_id": identity.device_id, "status": "active", "next_heartbeat_within_seconds": DEFAULT_HEARTBEAT_GRACE_SECONDS}]

    assert await cli.run(run("heartbeat", "--once", "--facts-file", str(drifted)), environ={}) == 3
    out = capsys.readouterr()
    assert [b["status"] for b in beats(out.out)] == ["quarantined"] and "quarantined" in out.err

    # The loop (the service `run` is): a beat every interval with facts read afresh each time; good
    # facts clear the quarantine.
    loop = asyncio.create_task(cli.run(run("heartbeat", "--interval", "0.2", "--facts-file", str(good)), environ={}))
    lines: list[dict] = []
    for _ in range(100):
        await asyncio.sleep(0.1)
        lines += beats(capsys.readouterr().out)
        if len(lines) >= 3:
            break
    loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop
    assert len(lines) >= 3 and {line["status"] for line in lines} == {"active"}, lines
    status, posture, _ = await tenant.admin.call("GET", f"/v1/devices/{identity.device_id}/posture")
    assert status == 200 and posture["status"] == "active"
