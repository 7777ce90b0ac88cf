"""One settings vocabulary: `STRONGROOM_X` for every service, `STRONGROOM_<SERVICE>_X` over it,
read from the real environment; and docs/configuration.md is what the settings classes say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from launch.config_docs import SERVICE_SETTINGS, render
from shared.config import CommonSettings, is_per_service

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PREFIX = {name: f"STRONGROOM_{name.upper()}_" for name in SERVICE_SETTINGS}


def _sample(field_name: str, annotation: object, n: int) -> tuple[str, object]:
    """(text to put in the environment, the value the setting must then have), distinct per `n`."""
    text = str(annotation)
    if "float" in text:
        return f"{17.5 + n}", 17.5 + n
    if "int" in text:
        return f"{4242 + n}", 4242 + n
    return f"value-{field_name}-{n}", f"value-{field_name}-{n}"


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("STRONGROOM_") or name == "MONGODB_URL":
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("service", list(SERVICE_SETTINGS))
@pytest.mark.parametrize("field_name", list(CommonSettings.model_fields))
def test_a_common_variable_reaches_every_service_and_its_own_overrides_it(clean_env, service, field_name):
    cls = SERVICE_SETTINGS[service]
    annotation = CommonSettings.model_fields[field_name].annotation
    common_text, common_value = _sample(field_name, annotation, 0)
    own_text, own_value = _sample(field_name, annotation, 1)
    clean_env.setenv(f"STRONGROOM_{field_name.upper()}", common_text)
    assert getattr(cls(), field_name) == common_value
    clean_env.setenv(f"{SERVICE_PREFIX[service]}{field_name.upper()}", own_text)
    assert getattr(cls(), field_name) == own_value
    # Another service's own variable is not this one's.
    for other, other_cls in SERVICE_SETTINGS.items():
        if other != service:
            assert getattr(other_cls(), field_name) == common_value


def test_a_service_setting_reads_the_common_name_too_unless_it_is_per_service(clean_env):
    from services.auditsvc.settings import AuditSettings
    from services.gateway.settings import GatewaySettings
    from services.keysvc.settings import KeySettings

    clean_env.setenv("STRONGROOM_BOOTSTRAP_TOKEN", "sr_boot_from_the_compose_env_file")
    clean_env.setenv("STRONGROOM_ARCHIVE_DIR", "/var/lib/strongroom/audit-archive")
    assert GatewaySettings().bootstrap_token.get_secret_value() == "sr_boot_from_the_compose_env_file"
    assert AuditSettings().archive_dir == "/var/lib/strongroom/audit-archive"
    # A key file two services must never share is read from the service's own variable only.
    clean_env.setenv("STRONGROOM_SIGNING_KEY_FILE", "/shared.pem")
    clean_env.setenv("STRONGROOM_DATA_KEY_FILE", "/shared.key")
    assert KeySettings().signing_key_file is None and AuditSettings().signing_key_file is None
    assert GatewaySettings().data_key_file is None and AuditSettings().data_key_file is None
    clean_env.setenv("STRONGROOM_AUDITSVC_SIGNING_KEY_FILE", "/audit.pem")
    assert AuditSettings().signing_key_file == "/audit.pem" and KeySettings().signing_key_file is None
    per_service = {(s, f) for s, cls in SERVICE_SETTINGS.items() for f, info in cls.model_fields.items()
                   if is_per_service(info)}
    assert per_service == {("gateway", "data_key_file"), ("keysvc", "signing_key_file"),
                           ("auditsvc", "signing_key_file"), ("auditsvc", "data_key_file")}


def test_mongodb_url_is_the_conventional_last_resort(clean_env):
    from services.keysvc.settings import KeySettings
    from services.policysvc.settings import PolicySettings

    clean_env.setenv("MONGODB_URL", "mongodb://conventional")
    assert KeySettings().mongodb_url == "mongodb://conventional"
    clean_env.setenv("STRONGROOM_MONGODB_URL", "mongodb://common")
    assert KeySettings().mongodb_url == "mongodb://common"
    clean_env.setenv("STRONGROOM_KEYSVC_MONGODB_URL", "mongodb://keysvc")
    assert KeySettings().mongodb_url == "mongodb://keysvc"
    assert PolicySettings().mongodb_url == "mongodb://common"


def test_arguments_still_win_over_the_environment(clean_env):
    from services.gateway.settings import GatewaySettings

    clean_env.setenv("STRONGROOM_GATEWAY_PORT", "9000")
    assert GatewaySettings(port=0).port == 0


def test_the_committed_configuration_table_is_the_generated_one():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render(), "regenerate it: strongroom config docs > docs/configuration.md"


def test_every_variable_has_a_row_with_a_meaning():
    table = render()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    expected = len(CommonSettings.model_fields) + sum(
        len(set(cls.model_fields) - set(CommonSettings.model_fields)) for cls in SERVICE_SETTINGS.values())
    assert len(rows) == expected
    for row in rows:
        meaning = row.rstrip(" |").rsplit(" | ", 1)[1].strip()
        assert len(meaning) >= 8, f"no meaning written above this setting in its class: {row}"
    for service, cls in SERVICE_SETTINGS.items():
        for name in set(cls.model_fields) - set(CommonSettings.model_fields):
            assert f"`STRONGROOM_{service.upper()}_{name.upper()}`" in table


def test_config_docs_command_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "strongroom.cli", "config", "docs"], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout == render()
