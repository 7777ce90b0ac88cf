"""Off a terminal every log line is JSON: the standard library's loggers (aiormq, aio-pika,
aiohttp, pymongo) go through structlog's renderer too, with broker passwords masked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import logging, structlog
from shared import log
log.configure("INFO", json=True)
structlog.get_logger("strongroom.test").info("service_ready", service="keysvc")
logging.getLogger("aio_pika.robust_connection").warning(
    'Connection attempt to "%s" failed: %s. Reconnecting after 5 seconds.',
    "amqp://strongroom:hunter2-broker-pw@rabbitmq:5672/", "ConnectionRefusedError")
try:
    raise ConnectionError("refused")
except ConnectionError:
    logging.getLogger("aiormq.connection").exception("Unexpected connection close")
logging.getLogger("pymongo").info("below the standard library's WARNING threshold")
"""


def test_library_log_lines_are_json_with_passwords_masked():
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
    lines = [json.loads(line) for line in out.stderr.splitlines()]  # each line JSON, or this raises
    assert [line["event"].split(" ")[0] for line in lines] == ["service_ready", "Connection", "Unexpected"]
    reconnect, close = lines[1], lines[2]
    assert reconnect["logger"] == "aio_pika.robust_connection" and reconnect["level"] == "warning"
    assert "amqp://strongroom:***@rabbitmq:5672/" in reconnect["event"]
    assert "hunter2" not in out.stderr
    assert close["level"] == "error" and "ConnectionError: refused" in close["exception"]
    assert all("timestamp" in line for line in lines)


def test_serve_reports_an_unreachable_broker_as_json_and_exits_1():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_") and k != "MONGODB_URL"}
    env |= {"MONGODB_URL": "mongodb://127.0.0.1:1", "STRONGROOM_AMQP_URL": "amqp://guest:pw-never-shown@127.0.0.1:1/"}
    out = subprocess.run([sys.executable, "-m", "strongroom.cli", "serve", "policysvc"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 1
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert lines[0]["event"] == "service_started" and lines[-1]["event"] == "service_failed"
    assert "Connection refused" in lines[-1]["exception"] and "pw-never-shown" not in out.stderr
