"""`strongroom-agent run` as a real process against the real stack: heartbeats at the interval the
gateway answers with, the collectors' facts on the device labelled ``claimed``, a firewall change
(real nft, in a private network namespace the agent reads) seen by the server and acted on by
policy, and SIGTERM ending the service with exit code 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from agent import cli
from agent.client import AgentClient
from tests.netns import nft, private_netns

from .helpers import make_tenant

REPO = Path(__file__).parents[2]
GRACE_SECONDS = 4
INPUT_CHAIN = "{ type filter hook input priority 0; policy drop; }"


def guard(ns: Path) -> None:
    """A real firewall in the namespace: an input chain that drops by default, ssh allowed."""
    nft(ns, "add", "table", "inet", "filter")
    nft(ns, "add", "chain", "inet", "filter", "input", INPUT_CHAIN)
    nft(ns, "add", "rule", "inet", "filter", "input", "tcp", "dport", "22", "accept")


class AgentProcess:
    """The agent's service mode in a subprocess, its JSON lines read as they come."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.lines: list[dict] = []

    @classmethod
    async def start(cls, *argv: str) -> AgentProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.cli", *argv, stdout=asyncio.subprocess.PIPE, env=env)
        return cls(process)

    async def next_beat(self, event: str = "heartbeat_sent", **expected) -> dict:
        """The next line of `event` whose fields match `expected` (a generous guard, not a speed claim)."""
        async def read() -> dict:
            while True:
                raw = await self.process.stdout.readline()
                assert raw, f"the agent exited early: {self.lines[-3:]}"
                line = json.loads(raw)
                self.lines.append(line)
                if line["event"] == event and all(line.get(k) == v for k, v in expected.items()):
                    return line
        return await asyncio.wait_for(read(), timeout=120)


async def test_the_agent_service_keeps_posture_fresh_and_stops_cleanly_on_sigterm(api, tmp_path):
    tenant = await make_tenant(api)  # ALLOW_EU: region in the EU and integrity.firewall_enabled
    status, _, _ = await tenant.admin.call("PUT", "/v1/policy-settings", json={"heartbeat_grace_seconds": GRACE_SECONDS})
    assert status == 200
    _, enrolment, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "vm-svc"})
    home = tmp_path / "agent-home"
    async with AgentClient() as client:
        identity = await client.enroll(api.url, enrolment["token"], "vm-svc", home)
    region = tmp_path / "region.json"  # the one fact no collector here can know
    region.write_text(json.dumps({"identity": {"region": "eu-west-1"}}))

    with private_netns(tmp_path) as ns:
        guard(ns)
        options = ["--facts-file", str(region), "--firewall-netns", str(ns), "--required-chain", "inet filter input"]
        # The firewall fact comes from the collector (no file says it), and policy releases on it.
        args = cli.build_parser().parse_args(["--home", str(home), "request-key", *options, tenant.key_id])
        assert await cli.run(args, environ={}) == cli.EXIT_OK

        agent = await AgentProcess.start("--home", str(home), "run", *options)
        try:
            started = await agent.next_beat("agent_started")
            assert started["device_id"] == identity.device_id and started["interval_seconds"] is None
            first = await agent.next_beat(status="active")
            second = await agent.next_beat(status="active")
            # The pace is the gateway's: half the tenant's grace period.
            assert first["next_in_seconds"] == second["next_in_seconds"] == GRACE_SECONDS // 2
            assert first["next_heartbeat_within_seconds"] == GRACE_SECONDS
            guarded = first["firewall_ruleset_sha256"]
            assert second["firewall_ruleset_sha256"] == guarded

            status, posture, _ = await tenant.admin.call("GET", f"/v1/devices/{identity.device_id}/posture")
            assert status == 200 and posture["status"] == "active"
            integrity, labels = posture["last_facts"]["integrity"], posture["last_facts_provenance"]
            assert integrity["firewall_enabled"] is True and integrity["firewall"]["ruleset_sha256"] == guarded
            assert integrity["firewall"]["chains"] == ["inet filter input"]
            assert integrity["firewall"]["required_chains_present"] is True
            assert integrity["antivirus"]["present"] is True and integrity["secure_boot"] == "unknown"
            for path in ("integrity.firewall_enabled", "integrity.firewall.ruleset_sha256", "integrity.antivirus.present",
                         "integrity.agent_files.install", "integrity.secure_boot", "identity.region"):
                assert labels[path] == "claimed", path
            assert labels["identity.device_id"] == "observed" and labels["observed.source_ip"] == "observed"

            # A real change on the host: the ruleset goes; the next heartbeat says so and policy acts.
            nft(ns, "flush", "ruleset")
            dropped = await agent.next_beat(status="quarantined")
            assert dropped["firewall_ruleset_sha256"] != guarded
            status, posture, _ = await tenant.admin.call("GET", f"/v1/devices/{identity.device_id}/posture")
            assert posture["status"] == "quarantined" and posture["quarantine_cause"] == "facts"
            firewall = posture["last_facts"]["integrity"]["firewall"]
            assert posture["last_facts"]["integrity"]["firewall_enabled"] is False
            assert firewall["missing_chains"] == ["inet filter input"]
            assert firewall["ruleset_sha256"] == dropped["firewall_ruleset_sha256"]

            guard(ns)  # the same ruleset again: the same hash, and the device is released
            restored = await agent.next_beat(status="active")
            assert restored["firewall_ruleset_sha256"] == guarded

            agent.process.send_signal(signal.SIGTERM)
            stopped = await agent.next_beat("agent_stopped")
            assert stopped["signal"] == "SIGTERM" and stopped["heartbeats_delivered"] >= 4
            assert await asyncio.wait_for(agent.process.wait(), timeout=60) == 0
        finally:
            if agent.process.returncode is None:
                agent.process.kill()
                await agent.process.wait()
    assert all(line["event"] != "heartbeat_failed" for line in agent.lines), agent.lines
