"""The agent's saved identity: round trip, key file permissions, and the key never shown."""

import base64
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from agent.identity import DEVICE_KEY_FILE, IDENTITY_FILE, AgentIdentity, IdentityError, generate_device_key


def make_identity() -> AgentIdentity:
    return AgentIdentity(
        gateway_url="https://gw.example",
        tenant_id="tenant-1",
        device_id="device-1",
        key_id="tenant-1/device-1",
        private_key=generate_device_key(),
    )


def raw_private(identity: AgentIdentity) -> bytes:
    return identity.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def test_save_then_load_round_trips(tmp_path):
    identity = make_identity()
    identity.save(tmp_path / "state")

    loaded = AgentIdentity.load(tmp_path / "state")

    assert loaded == identity
    assert raw_private(loaded) == raw_private(identity)
    assert loaded.public_key_b64 == identity.public_key_b64


def test_key_file_is_0600_and_state_dir_0700(tmp_path):
    make_identity().save(tmp_path / "state")

    assert stat.S_IMODE(os.stat(tmp_path / "state" / DEVICE_KEY_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700


def test_identity_json_holds_no_secret(tmp_path):
    identity = make_identity()
    identity.save(tmp_path)

    text = (tmp_path / IDENTITY_FILE).read_text()

    assert "PRIVATE" not in text
    assert base64.b64encode(raw_private(identity)).decode() not in text
    assert json.loads(text)["public_key"] == identity.public_key_b64


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_refuses_key_file_open_to_group_or_others(tmp_path, mode):
    make_identity().save(tmp_path)
    os.chmod(tmp_path / DEVICE_KEY_FILE, mode)

    with pytest.raises(IdentityError, match="chmod 600"):
        AgentIdentity.load(tmp_path)


def test_refuses_symlinked_key_file(tmp_path):
    make_identity().save(tmp_path)
    (tmp_path / DEVICE_KEY_FILE).rename(tmp_path / "elsewhere.key")
    (tmp_path / DEVICE_KEY_FILE).symlink_to(tmp_path / "elsewhere.key")

    with pytest.raises(IdentityError, match="cannot open device key"):
        AgentIdentity.load(tmp_path)


def test_repr_and_str_hide_the_key(tmp_path):
    identity = make_identity()
    pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    secret = raw_private(identity)

    for shown in (repr(identity), str(identity), f"{identity}"):
        assert "private_key" not in shown
        assert pem.splitlines()[1] not in shown
        assert base64.b64encode(secret).decode() not in shown
        assert secret.hex() not in shown
        assert "device-1" in shown


def test_save_refuses_to_replace_an_identity(tmp_path):
    first = make_identity()
    first.save(tmp_path)

    with pytest.raises(IdentityError, match="already holds"):
        make_identity().save(tmp_path)
    assert AgentIdentity.load(tmp_path) == first
    assert raw_private(AgentIdentity.load(tmp_path)) == raw_private(first)


def test_load_without_enrolment_says_how_to_enroll(tmp_path):
    with pytest.raises(IdentityError, match=r"not enrolled.*strongroom-agent enroll"):
        AgentIdentity.load(tmp_path / "missing")


def test_load_detects_key_that_does_not_match_identity(tmp_path):
    make_identity().save(tmp_path / "a")
    make_identity().save(tmp_path / "b")
    os.replace(tmp_path / "b" / DEVICE_KEY_FILE, tmp_path / "a" / DEVICE_KEY_FILE)

    with pytest.raises(IdentityError, match="does not match"):
        AgentIdentity.load(tmp_path / "a")


def test_load_rejects_corrupt_files_without_echoing_them(tmp_path):
    make_identity().save(tmp_path)
    (tmp_path / DEVICE_KEY_FILE).write_bytes(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")

    with pytest.raises(IdentityError) as excinfo:
        AgentIdentity.load(tmp_path)
    assert "c2VjcmV0" not in str(excinfo.value)

    (tmp_path / IDENTITY_FILE).write_text("{not json")
    with pytest.raises(IdentityError, match="not valid JSON"):
        AgentIdentity.load(tmp_path)
