"""The agent's systemd unit: `systemd-analyze verify` accepts it (it runs here without systemd as
PID 1), and it keeps the directives the service relies on: `strongroom-agent run`, restart on
failure, its own state directory, and the hardening."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
from pathlib import Path

from agent import cli

UNIT = Path(__file__).parents[2] / "packaging" / "systemd" / "strongroom-agent.service"
INSTALLED_AT = "/usr/local/bin/strongroom-agent"


def _verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    # The unit names where pip installs the agent system-wide; here it is installed in the venv.
    entry_point = Path(sys.executable).parent / "strongroom-agent"
    assert entry_point.is_file()
    copy = tmp_path / UNIT.name
    copy.write_text(unit_text.replace(INSTALLED_AT, str(entry_point)))
    return subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False)


def test_systemd_analyze_accepts_the_unit_and_refuses_a_broken_one(tmp_path):
    text = UNIT.read_text()
    assert INSTALLED_AT in text
    verified = _verify(text, tmp_path)
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr
    broken = _verify(text.replace("Restart=on-failure", "Restart=sometimes\nProtectSytem=strict"), tmp_path)
    assert "restart specifier" in broken.stderr and "Unknown key 'ProtectSytem'" in broken.stderr


def test_the_unit_runs_the_agent_as_a_hardened_service():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["Type"] == "simple" and service["Restart"] == "on-failure"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == INSTALLED_AT and cli.build_parser().parse_args(argv[1:]).command == "run"
    assert service["StateDirectory"] == "strongroom-agent"
    assert service["Environment"] == f"{cli.ENV_HOME}=/var/lib/strongroom-agent"
    assert service["ReadWritePaths"] == "/var/lib/strongroom-agent"
    hardening = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                 "CapabilityBoundingSet": "CAP_NET_ADMIN", "UMask": "0077"}
    assert {key: service[key] for key in hardening} == hardening
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]
