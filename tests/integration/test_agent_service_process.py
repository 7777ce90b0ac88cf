"""`strongroom-agent run` as a real process with its gateway down: it keeps trying with growing,
jittered delays (one JSON line per attempt, nothing secret in them) and SIGINT stops it, exit 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

from agent.identity import AgentIdentity, generate_device_key

REPO = Path(__file__).parents[2]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_an_unreachable_gateway_is_retried_with_backoff_and_sigint_stops_cleanly(tmp_path):
    home = tmp_path / "home"
    AgentIdentity(gateway_url=f"http://127.0.0.1:{closed_port()}", tenant_id="t1", device_id="d1", key_id="t1/d1",
                  private_key=generate_device_key()).save(home)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "--home", str(home), "run", stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    lines: list[dict] = []
    try:
        async def failures(count: int) -> None:
            while sum(line["event"] == "heartbeat_failed" for line in lines) < count:
                raw = await process.stdout.readline()
                assert raw, lines
                lines.append(json.loads(raw))

        await asyncio.wait_for(failures(3), timeout=120)
        failed = [line for line in lines if line["event"] == "heartbeat_failed"]
        assert [line["failures"] for line in failed] == [1, 2, 3]
        assert all(line["error_type"] == "ServiceUnavailable" and "unreachable" in line["error"] for line in failed)
        # Exponential with jitter: the n-th wait lies in [2^(n-1)/2, 2^(n-1)] seconds.
        assert all(2 ** (n - 1) / 2 <= line["retry_in_seconds"] <= 2 ** (n - 1) for n, line in enumerate(failed, 1))
        device_key = (home / "device.key").read_text()
        assert all(device_key.strip() not in json.dumps(line) for line in lines)

        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0
        rest = [json.loads(raw) for raw in (await process.stdout.read()).splitlines()]
        assert rest[-1]["event"] == "agent_stopped" and rest[-1]["signal"] == "SIGINT"
        assert rest[-1]["heartbeats_delivered"] == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
