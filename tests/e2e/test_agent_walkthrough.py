"""The agent as shipped: enrol with the SDK, then encrypt and decrypt a file with the CLI.
Only a policy-approved agent can read the data; a denied one gets exit code 3."""

from __future__ import annotations

import json

from agent import cli
from agent.client import AgentClient, KeyDenied

from .helpers import make_tenant


async def test_agent_encrypts_and_decrypts_a_file_only_under_policy(api, tmp_path, capsys):
    tenant = await make_tenant(api)
    status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "vm-1"})
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
    assert await cli.run(run("encrypt", "--facts-file", str(eu), "--key-id", tenant.key_id, str(secret), str(sealed)), environ={}) == 0
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
