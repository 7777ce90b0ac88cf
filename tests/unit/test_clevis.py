"""The Clevis pin's pure parts (``agent/clevis.py``): config validation in Clevis's words, the
content key bound to key id, version and salt, JWEs that Debian's `jose` reads, headers checked
before any key is asked for, and the shipped pins and boot hooks."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from pathlib import Path

import pytest

from agent import clevis

ROOT = Path(__file__).resolve().parents[2]
KEY = secrets.token_bytes(32)
CONFIG = clevis.PinConfig(url="https://gw.example/", key_id="key_1")


def _header(token: str) -> dict:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _with_header(token: str, header: dict) -> str:
    part = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return ".".join([part, *token.split(".")[1:]])


@pytest.mark.parametrize(("text", "message"), [
    ("", "Configuration is malformed!"),
    ("[1]", "Configuration is malformed!"),
    ('{"key_id": "k"}', "Missing the required 'url' property!"),
    ('{"url": "https://gw"}', "Missing the required 'key_id' property!"),
    ('{"url": "ftp://gw", "key_id": "k"}', "The 'url' property must be an http(s) URL!"),
    ('{"url": "https://gw", "key_id": "k", "key_version": 0}', "The 'key_version' property must be an integer >= 1!"),
    ('{"url": "https://gw", "key_id": "k", "key_version": true}', "The 'key_version' property must be an integer >= 1!"),
    ('{"url": "https://gw", "key_id": "k", "home": ""}', "The 'home' property must be a non-empty string!"),
    ('{"url": "https://gw", "key_id": "k", "thp": "x"}', "Unknown configuration property 'thp'!"),
])
def test_bad_configs_are_refused_in_clevis_words(text, message):
    with pytest.raises(clevis.ClevisError) as caught:
        clevis.parse_config(text)
    assert str(caught.value) == message


def test_a_config_names_url_key_and_optionally_version_and_home():
    assert clevis.parse_config('{"url": "https://gw", "key_id": "k", "key_version": 2, "home": "/etc/sr"}') == \
        clevis.PinConfig(url="https://gw", key_id="k", key_version=2, home="/etc/sr")
    assert clevis.same_gateway("https://gw/", "https://gw") and not clevis.same_gateway("https://gw", "https://other")


def test_seal_and_unseal_round_trip_with_the_binding_in_the_protected_header():
    binding = clevis.new_binding(CONFIG, key_version=3)
    token = clevis.seal(b"slot key", binding, KEY)
    assert _header(token) == {"alg": "dir", "enc": "A256GCM", "clevis": {"pin": "strongroom", "strongroom": {
        "url": "https://gw.example", "key_id": "key_1", "key_version": 3, "salt": clevis._b64url(binding.salt)}}}
    assert clevis.read_binding(token) == binding
    assert clevis.unseal(token, clevis.read_binding(token), KEY) == b"slot key"
    assert "salt" not in repr(binding) and KEY.hex() not in token


def test_each_seal_has_its_own_salt_and_content_key():
    a, b = clevis.new_binding(CONFIG, key_version=1), clevis.new_binding(CONFIG, key_version=1)
    assert a.salt != b.salt and clevis.content_key(KEY, a) != clevis.content_key(KEY, b)
    other_version = clevis.Binding(url=a.url, key_id=a.key_id, key_version=2, salt=a.salt)
    other_key = clevis.Binding(url=a.url, key_id="key_2", key_version=1, salt=a.salt)
    assert len({clevis.content_key(KEY, x) for x in (a, other_version, other_key)}) == 3


def test_debian_jose_decrypts_what_the_pin_writes():
    binding = clevis.new_binding(CONFIG, key_version=1)
    token = clevis.seal(b"hello", binding, KEY)
    jwk = json.dumps({"kty": "oct", "k": clevis._b64url(clevis.content_key(KEY, binding))})
    done = subprocess.run(["jose", "jwe", "dec", "-k-", "-i-"], input=(jwk + token).encode(), capture_output=True,
                          check=False)
    assert (done.returncode, done.stdout) == (0, b"hello"), done.stderr


def test_a_wrong_key_or_an_edited_header_does_not_open():
    binding = clevis.new_binding(CONFIG, key_version=1)
    token = clevis.seal(b"slot key", binding, KEY)
    with pytest.raises(clevis.ClevisError, match="does not decrypt"):
        clevis.unseal(token, binding, secrets.token_bytes(32))
    edited = _header(token)
    edited["clevis"]["strongroom"]["url"] = "https://evil.example"
    tampered = _with_header(token, edited)
    with pytest.raises(clevis.ClevisError, match="does not decrypt"):
        clevis.unseal(tampered, clevis.read_binding(tampered), KEY)  # the header is the JWE's additional data


@pytest.mark.parametrize(("edit", "message"), [
    (lambda h: h["clevis"].update(pin="tang"), "JWE pin mismatch!"),
    (lambda h: h.update(alg="A256KW"), "JWE must use alg 'dir' and enc 'A256GCM'!"),
    (lambda h: h["clevis"]["strongroom"].pop("key_id"), "JWE missing required 'clevis.strongroom.key_id' header parameter!"),
    (lambda h: h["clevis"]["strongroom"].update(key_version="1"),
     "JWE missing required 'clevis.strongroom.key_version' header parameter!"),
    (lambda h: h["clevis"]["strongroom"].update(salt="c2hvcnQ"), "JWE header parameter 'clevis.strongroom.salt' is malformed!"),
])
def test_headers_are_checked_before_any_key_is_requested(edit, message):
    token = clevis.seal(b"x", clevis.new_binding(CONFIG, key_version=1), KEY)
    header = _header(token)
    edit(header)
    with pytest.raises(clevis.ClevisError) as caught:
        clevis.read_binding(_with_header(token, header))
    assert str(caught.value) == message


@pytest.mark.parametrize(("token", "message"), [
    ("a.b.c", "JWE is not in compact form!"),
    ("!!!!.a.b.c.d", "Error decoding JWE protected header!"),
    ("x" * (clevis.MAX_JWE_CHARS + 1), "JWE is too large!"),
])
def test_malformed_jwes_are_refused(token, message):
    with pytest.raises(clevis.ClevisError) as caught:
        clevis.read_binding(token)
    assert str(caught.value) == message


def test_the_shipped_pins_are_what_install_writes(tmp_path):
    for action, name in clevis.PIN_COMMANDS.items():
        assert (ROOT / "packaging" / "clevis" / name).read_text() == clevis.pin_script(action)
    written = clevis.install_pins(tmp_path / "bin", "/opt/strongroom agent/bin/strongroom-agent")
    assert [p.name for p in written] == ["clevis-encrypt-strongroom", "clevis-decrypt-strongroom"]
    assert all(p.stat().st_mode & 0o777 == 0o755 for p in written)
    assert "exec '/opt/strongroom agent/bin/strongroom-agent' clevis decrypt \"$@\"" in written[1].read_text()


@pytest.mark.parametrize("script", [
    "packaging/clevis/clevis-encrypt-strongroom",
    "packaging/clevis/clevis-decrypt-strongroom",
    "packaging/initramfs-tools/hooks/strongroom-clevis",
    "packaging/initramfs-tools/scripts/local-top/strongroom-clevis-net",
    "packaging/dracut/60clevis-pin-strongroom/module-setup.sh",
    "packaging/etc/initramfs.conf",
])
def test_the_boot_scripts_parse_as_posix_sh(script):
    done = subprocess.run(["sh", "-n", str(ROOT / script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


async def test_the_pin_commands_answer_summary_as_clevis_pins_do(capsys):
    from agent import cli

    assert await cli.run(cli.build_parser().parse_args(["clevis", "encrypt", "--summary"]), environ={}) == 0
    assert capsys.readouterr().out == clevis.SUMMARY + "\n"
    assert await cli.run(cli.build_parser().parse_args(["clevis", "decrypt", "--summary"]), environ={}) == 2
    assert capsys.readouterr().out == ""


async def test_install_writes_both_pins_under_the_prefix(tmp_path, capsys):
    from agent import cli

    args = cli.build_parser().parse_args(["clevis", "install", "--prefix", str(tmp_path), "--agent", "/usr/bin/sr-agent"])
    assert await cli.run(args, environ={}) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"agent": "/usr/bin/sr-agent", "installed": [
        str(tmp_path / "bin" / "clevis-encrypt-strongroom"), str(tmp_path / "bin" / "clevis-decrypt-strongroom")]}


async def test_encrypt_refuses_a_url_other_than_the_enrolled_gateway_before_asking_for_a_key(tmp_path, monkeypatch,
                                                                                             capsys):
    import io
    import sys

    from agent import cli
    from agent.identity import AgentIdentity, generate_device_key

    home = tmp_path / "home"
    AgentIdentity(gateway_url="https://gw.example", tenant_id="t1", device_id="d1", key_id="t1/d1",
                  private_key=generate_device_key()).save(home)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"slot key")))
    config = json.dumps({"url": "https://elsewhere.example", "key_id": "k", "home": str(home)})
    assert await cli.run(cli.build_parser().parse_args(["clevis", "encrypt", config]), environ={}) == 1
    out = capsys.readouterr()
    assert out.out == "" and "is https://elsewhere.example but this agent is enrolled with https://gw.example" in out.err
