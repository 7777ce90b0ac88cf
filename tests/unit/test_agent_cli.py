"""The strongroom-agent CLI: argument errors, exit codes, atomic outputs, and no key bytes printed."""

import base64
import json
import os
from typing import ClassVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import cli
from agent.client import ApprovalPending, KeyDenied, ReleasedKey
from agent.identity import AgentIdentity, generate_device_key
from shared.crypto.httpsig import verify_request
from shared.crypto.release import SUITE_NAME, parse_public_key, release_info, seal

DATA_KEY = bytes(range(32))


@pytest.fixture
def home(tmp_path):
    state = tmp_path / "home"
    AgentIdentity(
        gateway_url="https://gw.example", tenant_id="t1", device_id="d1", key_id="t1/d1",
        private_key=generate_device_key(),
    ).save(state)
    return state


class FakeClient:
    """Stands in for AgentClient: releases DATA_KEY, or raises what the test sets."""

    outcome: Exception | None = None
    requests: ClassVar[list[tuple[str, int | None]]] = []

    def __init__(self, identity=None, **_):
        self.identity = identity

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        return None

    async def request_key(self, key_id, *, facts, key_version=None):
        assert facts["identity"]["device_id"] == "d1"
        FakeClient.requests.append((key_id, key_version))
        if FakeClient.outcome is not None:
            raise FakeClient.outcome
        version = key_version or 3
        return ReleasedKey(key_id=key_id, key_version=version, algorithm="AES-256-GCM", request_id="rq1", key=DATA_KEY)


@pytest.fixture
def fake_client(monkeypatch):
    FakeClient.outcome = None
    FakeClient.requests = []
    monkeypatch.setattr(cli, "AgentClient", FakeClient)
    return FakeClient


def assert_no_key_bytes(text):
    for form in (DATA_KEY.hex(), base64.b64encode(DATA_KEY).decode(), repr(DATA_KEY)):
        assert form not in text


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["enroll", "--token", "t"],
        ["encrypt", "in.txt", "out.srv"],
        ["encrypt", "--key-id", "k", "in.txt"],
        ["decrypt", "in.srv"],
        ["request-key"],
        ["request-key", "k", "--key-version", "0"],
        ["--timeout", "-1", "facts"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    assert cli.main(argv) == cli.EXIT_USAGE
    assert "usage:" in capsys.readouterr().err


def test_enroll_without_token_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(cli.ENV_TOKEN, raising=False)
    assert cli.main(["--home", str(tmp_path), "enroll", "--gateway", "https://gw.example"]) == cli.EXIT_USAGE
    assert "enrollment token is required" in capsys.readouterr().err


def test_request_key_before_enrolment_explains(tmp_path, capsys):
    assert cli.main(["--home", str(tmp_path / "none"), "request-key", "k"]) == cli.EXIT_ERROR
    assert "not enrolled" in capsys.readouterr().err


def test_facts_prints_json(home, capsys):
    assert cli.main(["--home", str(home), "facts", "--output", "json"]) == cli.EXIT_OK
    facts = json.loads(capsys.readouterr().out)
    assert facts["identity"]["device_id"] == "d1"
    assert {"firewall", "antivirus", "agent_files", "secure_boot"} <= set(facts["integrity"])


def test_facts_are_readable_by_default_each_with_its_provenance(home, tmp_path, capsys):
    extra = tmp_path / "facts.json"
    extra.write_text(json.dumps({"integrity": {"file_hashes": {"/etc/a.conf": "ab"}}}))
    argv = ["--home", str(home), "facts", "--facts-file", str(extra), "--required-chain", "inet  filter input"]
    assert cli.main(argv) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["device", "d1"] and "every fact below 'claimed'" in lines[1]
    rows = {line.split()[1]: (line.split()[0], line.split(None, 2)[2]) for line in lines[4:]}
    assert rows["identity.device_id"] == ("observed", "d1")  # the gateway sets it from the signature
    assert rows['integrity.file_hashes["/etc/a.conf"]'] == ("claimed", "ab")
    assert rows["integrity.firewall.required_chains"] == ("claimed", '["inet filter input"]')
    assert rows["integrity.secure_boot"][0] == "claimed"
    assert cli.main(["--home", str(home), "--cloud", "aws", "facts"]) == cli.EXIT_OK
    assert "AWS instance identity document: the gateway labels the identity facts it proves 'cloud'" in (
        capsys.readouterr().out)


def test_home_comes_from_environment(home, capsys, monkeypatch):
    monkeypatch.setenv(cli.ENV_HOME, str(home))
    assert cli.main(["facts", "--output", "json"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["identity"]["device_id"] == "d1"


def test_request_key_prints_metadata_only(home, fake_client, capsys):
    assert cli.main(["--home", str(home), "request-key", "k", "--key-version", "2"]) == cli.EXIT_OK
    out, err = capsys.readouterr()
    assert json.loads(out) == {"request_id": "rq1", "key_id": "k", "key_version": 2, "algorithm": "AES-256-GCM"}
    assert_no_key_bytes(out + err)


def test_denied_exits_3_with_reasons(home, fake_client, capsys):
    fake_client.outcome = KeyDenied(403, "key release denied", "policy p1", ["rule r1: region is not eu-west-1"])
    assert cli.main(["--home", str(home), "request-key", "k"]) == cli.EXIT_DENIED
    assert "rule r1: region is not eu-west-1" in capsys.readouterr().err


def test_pending_exits_4_with_request_id(home, fake_client, capsys):
    fake_client.outcome = ApprovalPending("rq-42")
    assert cli.main(["--home", str(home), "request-key", "k"]) == cli.EXIT_PENDING
    out, err = capsys.readouterr()
    assert json.loads(out)["request_id"] == "rq-42"
    assert "rq-42" in err


def test_encrypt_then_decrypt_requests_the_header_version(home, fake_client, tmp_path, capsys):
    plain, sealed, back = tmp_path / "plain.txt", tmp_path / "plain.srv", tmp_path / "back.txt"
    plain.write_bytes(b"volume secrets\n" * 1000)

    assert cli.main(["--home", str(home), "encrypt", "--key-id", "vol", str(plain), str(sealed)]) == cli.EXIT_OK
    assert cli.main(["--home", str(home), "decrypt", str(sealed), str(back)]) == cli.EXIT_OK

    assert back.read_bytes() == plain.read_bytes()
    assert fake_client.requests == [("vol", None), ("vol", 3)]
    assert os.stat(back).st_mode & 0o077 == 0
    out, err = capsys.readouterr()
    assert_no_key_bytes(out + err)


def test_failed_decrypt_leaves_no_output(home, fake_client, tmp_path, capsys):
    plain, sealed, back = tmp_path / "plain.txt", tmp_path / "plain.srv", tmp_path / "back.txt"
    plain.write_bytes(b"x" * 200_000)
    assert cli.main(["--home", str(home), "encrypt", "--key-id", "vol", str(plain), str(sealed)]) == cli.EXIT_OK
    data = bytearray(sealed.read_bytes())
    data[-1] ^= 1
    sealed.write_bytes(data)

    assert cli.main(["--home", str(home), "decrypt", str(sealed), str(back)]) == cli.EXIT_ERROR

    assert "was not written" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["home", "plain.srv", "plain.txt"]


def test_missing_input_fails_before_any_key_request(home, fake_client, tmp_path, capsys):
    assert cli.main(["--home", str(home), "encrypt", "--key-id", "k", str(tmp_path / "no"), str(tmp_path / "o")]) == 1
    assert fake_client.requests == []
    assert "No such file" in capsys.readouterr().err


async def test_enroll_and_request_key_against_a_stub_gateway(tmp_path, capsys):
    """The real client on the wire: the signature verifies and the sealed key opens."""
    device_keys = {}

    async def enroll(request):
        body = await request.json()
        assert body["enrollment_token"] == "tok-1"
        device_keys["t1/d9"] = Ed25519PublicKey.from_public_bytes(base64.b64decode(body["public_key"]))
        return web.json_response({"device_id": "d9", "tenant_id": "t1", "key_id": "t1/d9"}, status=201)

    async def key_requests(request):
        raw = await request.read()
        verify_request(
            method=request.method, url=str(request.url), headers=request.headers, body=raw,
            resolve_public_key=device_keys.get,
        )
        body = json.loads(raw)
        assert body["facts"]["identity"]["device_id"] == "d9"
        info = release_info(tenant_id="t1", request_id="rq7", key_id=body["key_id"], key_version=5)
        sealed = seal(DATA_KEY, parse_public_key(body["ephemeral_public_key"]), info)
        return web.json_response(
            {"request_id": "rq7", "key_id": body["key_id"], "key_version": 5, "algorithm": "AES-256-GCM",
             "sealed_key": base64.b64encode(sealed).decode(), "hpke_suite": SUITE_NAME}
        )

    app = web.Application()
    app.router.add_post("/v1/agent/enroll", enroll)
    app.router.add_post("/v1/agent/key-requests", key_requests)
    parser = cli.build_parser()
    async with TestServer(app) as server:
        gateway = str(server.make_url("")).rstrip("/")
        home = str(tmp_path / "home")
        enroll_args = parser.parse_args(["--home", home, "enroll", "--gateway", gateway, "--token", "tok-1"])
        assert await cli.run(enroll_args, environ={}) == cli.EXIT_OK
        assert json.loads(capsys.readouterr().out)["device_id"] == "d9"
        request_args = parser.parse_args(["--home", home, "request-key", "vol"])
        assert await cli.run(request_args, environ={}) == cli.EXIT_OK

    out, err = capsys.readouterr()
    assert json.loads(out)["request_id"] == "rq7"
    assert_no_key_bytes(out + err)
