"""`strongroom serve keysvc` as an operator runs it: its own process, configured only by the common
variables and the files `strongroom keys init` made, against the real broker and store. It says
when it started and when it is ready (JSON lines only), names its broker connection, keeps a
heartbeat `strongroom health --service` reads; `strongroom admin teardown` then removes its prefix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from launch.teardown import survey
from shared import topology

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "strongroom.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


def _connection_names() -> str:
    return subprocess.run(["rabbitmqctl", "-q", "list_connections", "client_properties"], capture_output=True,
                          text=True, timeout=60).stdout


def _wait_for(predicate, what: str, seconds: float = 90.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def deployment(tmp_path, mongo_url, amqp_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_") and k != "MONGODB_URL"}
    out = _cli("keys", "init", str(tmp_path / "secrets"), env=env)
    assert out.returncode == 0, out.stderr
    env |= dict(line.split("  #")[0].split("=", 1) for line in out.stdout.splitlines() if line.startswith("STRONG"))
    bus_prefix = f"t{uuid.uuid4().hex[:10]}."
    # Only common variables: the one vocabulary reaches the service without its own prefix.
    env |= {"MONGODB_URL": mongo_url, "STRONGROOM_AMQP_URL": amqp_url, "STRONGROOM_BUS_PREFIX": bus_prefix,
            "STRONGROOM_DB_PREFIX": f"t{uuid.uuid4().hex[:10]}_", "STRONGROOM_HEARTBEAT_FILE": str(tmp_path / "beat")}
    yield env, bus_prefix
    await survey(amqp_url, bus_prefix, delete=True, connection_name="test")


async def test_serve_reports_readiness_names_its_connection_beats_and_teardown_removes_it(
        deployment, amqp_url, rabbit_bus, tmp_path):
    env, bus_prefix = deployment
    stderr = (tmp_path / "stderr").open("w+")
    process = subprocess.Popen([sys.executable, "-m", "strongroom.cli", "serve", "keysvc"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=stderr, text=True)

    def lines() -> list[dict]:
        text = (tmp_path / "stderr").read_text()
        return [json.loads(line) for line in text.splitlines()]  # every line is JSON, or this raises

    try:
        ready = _wait_for(lambda: [x for x in lines() if x["event"] == "service_ready"], "service_ready")[0]
        started = next(x for x in lines() if x["event"] == "service_started")
        instance = f"{os.uname().nodename}:{process.pid}"
        for line in (started, ready):
            assert (line["service"], line["instance"]) == ("keysvc", instance) and line["version"]
        assert not [x for x in lines() if x["event"] in ("startup_check_failed", "keysvc_sealed")]
        # The broker lists this process's connection by service and instance.
        _wait_for(lambda: f'"keysvc@{instance}"' in _connection_names(), "the named connection")
        _wait_for((tmp_path / "beat").exists, "a heartbeat")
        alive = _cli("health", "--service", "keysvc", env=env)
        assert alive.returncode == 0 and instance in alive.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        stderr.close()
    assert lines()[-1]["event"] != "service_ready"
    stale = _cli("health", "--service", "keysvc", env=env)
    assert stale.returncode == 1 and "no heartbeat" in stale.stderr

    # The common STRONGROOM_BUS_PREFIX named its queues; teardown lists them, then (with --yes) deletes them.
    present = [x for x in await survey(amqp_url, bus_prefix, delete=False, connection_name="test") if x.existed]
    assert bus_prefix + topology.KEY_SERVICE in {x.name for x in present}
    assert len(present) >= len(topology.EXCHANGES) + len(topology.SERVICE_BINDINGS) + 1
    listed = _cli("admin", "teardown", "--prefix", bus_prefix, env=env)
    assert listed.returncode == 1 and "--yes" in listed.stderr
    assert listed.stdout.count("would delete") == len(present)
    deleted = _cli("admin", "teardown", "--prefix", bus_prefix, "--yes", env=env)
    assert deleted.returncode == 0 and deleted.stdout.count("deleted ") == len(present)
    assert not any(x.existed for x in await survey(amqp_url, bus_prefix, delete=False, connection_name="test"))
    # Another deployment on the same broker is untouched.
    assert all(x.existed for x in await survey(amqp_url, rabbit_bus.name(""), delete=False, connection_name="test")
               if x.kind == "exchange")
