"""`strongroom keys init DIR` makes every key file a deployment needs, and `strongroom serve`'s
start-up check accepts exactly those and refuses, by variable name, any it cannot use."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from launch import preflight
from launch.deployment_keys import KEY_FILES
from launch.serve import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "keysvc", "auditsvc", "policysvc")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "strongroom.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def initialised(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    directory = tmp_path_factory.mktemp("deploy") / "secrets"
    out = _cli("keys", "init", str(directory))
    assert out.returncode == 0, out.stderr
    variables = dict(line.split("  #")[0].split("=", 1) for line in out.stdout.splitlines() if line.startswith("STRONG"))
    return directory, variables


@pytest.fixture
def deployment_env(initialised, monkeypatch, tmp_path):
    """The environment an operator sets from `keys init`'s output (and a store URL, an archive dir)."""
    for name in list(os.environ):
        if name.startswith("STRONGROOM_") or name == "MONGODB_URL":
            monkeypatch.delenv(name)
    for name, value in initialised[1].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MONGODB_URL", "mongodb://store.invalid")
    monkeypatch.setenv("STRONGROOM_ARCHIVE_DIR", str(tmp_path / "archive"))
    return monkeypatch


def _problems(service: str) -> list[preflight.Problem]:
    return preflight.check(service, SETTINGS[service]())


def test_keys_init_writes_every_file_owner_read_only_and_names_its_variable(initialised):
    directory, variables = initialised
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for spec in KEY_FILES:
        path = directory / spec.name
        assert stat.S_IMODE(path.stat().st_mode) == 0o400, spec.name
        assert variables[spec.variable] == str(path.resolve())
    assert {p.name for p in directory.iterdir()} == {spec.name for spec in KEY_FILES}


def test_keys_init_never_replaces_a_key(initialised):
    directory, _ = initialised
    before = (directory / "root.key").read_bytes()
    out = _cli("keys", "init", str(directory))
    assert out.returncode == 1 and "not replacing" in out.stderr
    assert (directory / "root.key").read_bytes() == before


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_starts_with_the_files_keys_init_made(deployment_env, service):
    assert _problems(service) == []


def test_the_files_are_the_real_keys(deployment_env):
    from services.auditsvc.app import sealer_from_settings
    from services.auditsvc.settings import AuditSettings
    from services.keysvc.keyfiles import root_key_from_settings, signing_key_from_settings
    from services.keysvc.settings import KeySettings

    keys = KeySettings()
    assert len(root_key_from_settings(keys)) == 32
    signing_key_from_settings(keys)
    sealer = sealer_from_settings(AuditSettings())
    sealed = sealer.seal("s", purpose="p", tenant_id="t", owner="o")
    assert sealer_from_settings(AuditSettings()).open(sealed, purpose="p", tenant_id="t", owner="o") == "s"


def _only(problems: list[preflight.Problem]) -> preflight.Problem:
    assert len(problems) == 1, problems
    return problems[0]


def test_a_root_key_file_without_its_passphrase_is_refused_by_name(deployment_env, initialised):
    deployment_env.delenv("STRONGROOM_KEYSVC_ROOT_KEY_PASSPHRASE_FILE")
    problem = _only(_problems("keysvc"))
    assert "STRONGROOM_KEYSVC_ROOT_KEY_PASSPHRASE" in problem.setting
    assert "start sealed" in problem.problem


def test_a_wrong_passphrase_is_refused_and_never_printed(deployment_env, initialised):
    deployment_env.delenv("STRONGROOM_KEYSVC_ROOT_KEY_PASSPHRASE_FILE")
    deployment_env.setenv("STRONGROOM_ROOT_KEY_PASSPHRASE", "not-the-passphrase-7781")
    problem = _only(_problems("keysvc"))
    assert "STRONGROOM_KEYSVC_ROOT_KEY_FILE" in problem.setting
    real = (initialised[0] / "root_key_passphrase").read_text()
    assert "not-the-passphrase-7781" not in repr(problem) and real not in repr(problem)


@pytest.mark.parametrize(("service", "variable"), [
    ("gateway", "STRONGROOM_GATEWAY_DATA_KEY_FILE"),
    ("auditsvc", "STRONGROOM_AUDITSVC_DATA_KEY_FILE"),
    ("auditsvc", "STRONGROOM_AUDITSVC_SIGNING_KEY_FILE"),
    ("keysvc", "STRONGROOM_KEYSVC_SIGNING_KEY_FILE"),
    ("keysvc", "STRONGROOM_KEYSVC_ROOT_KEY_FILE"),
    ("keysvc", "STRONGROOM_KEYSVC_ROOT_KEY_PASSPHRASE_FILE"),
])
def test_each_unusable_file_is_refused_by_its_variable(deployment_env, initialised, tmp_path, service, variable):
    original = Path(initialised[1][variable])
    content = original.read_bytes()
    copy = tmp_path / original.name
    copy.write_bytes(content)
    deployment_env.setenv(variable, str(copy))
    copy.chmod(0o644)  # wrong mode
    problem = _only(_problems(service))
    assert variable in problem.setting and "chmod 400" in problem.problem
    copy.chmod(0o600)
    copy.write_bytes(b"-----BEGIN NOTHING-----\n" + content[:7])  # wrong format
    problem = _only(_problems(service))
    assert variable in problem.setting
    assert content[:7].decode(errors="replace") not in problem.problem
    copy.unlink()  # missing
    problem = _only(_problems(service))
    assert variable in problem.setting and "does not exist" in problem.problem and "keys init" in problem.problem


@pytest.mark.parametrize(("service", "variable"), [
    ("gateway", "STRONGROOM_GATEWAY_DATA_KEY_FILE"),
    ("auditsvc", "STRONGROOM_AUDITSVC_SIGNING_KEY_FILE"),
    ("keysvc", "STRONGROOM_KEYSVC_SIGNING_KEY_FILE"),
])
def test_a_required_key_file_left_unset_is_refused(deployment_env, service, variable):
    deployment_env.delenv(variable)
    problem = _only(_problems(service))
    assert problem.setting == variable and "is required" in problem.problem


def test_an_archive_dir_the_service_cannot_create_is_refused(deployment_env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    deployment_env.setenv("STRONGROOM_AUDITSVC_ARCHIVE_DIR", str(blocker / "archive"))
    problem = _only(_problems("auditsvc"))
    assert problem.setting.startswith("STRONGROOM_AUDITSVC_ARCHIVE_DIR")


def test_serve_exits_78_naming_each_problem_in_json_before_connecting(initialised, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_") and k != "MONGODB_URL"}
    env |= {"STRONGROOM_KEYSVC_ROOT_KEY_FILE": initialised[1]["STRONGROOM_KEYSVC_ROOT_KEY_FILE"],
            "MONGODB_URL": "mongodb://127.0.0.1:1", "STRONGROOM_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}
    out = _cli("serve", "keysvc", env=env)
    assert out.returncode == 78
    import json

    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert lines[0]["event"] == "service_started" and lines[0]["service"] == "keysvc"
    failed = {line["setting"]: line["problem"] for line in lines if line["event"] == "startup_check_failed"}
    assert set(failed) == {"STRONGROOM_KEYSVC_ROOT_KEY_PASSPHRASE or STRONGROOM_ROOT_KEY_PASSPHRASE "
                           "(or STRONGROOM_KEYSVC_ROOT_KEY_PASSPHRASE_FILE or STRONGROOM_ROOT_KEY_PASSPHRASE_FILE)",
                           "STRONGROOM_KEYSVC_SIGNING_KEY_FILE"}
