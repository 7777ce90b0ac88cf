"""`strongroom operator enrol-key|my-share|unseal|rekey-verify|init|rekey`: the custodian's key pair is
made and kept on their machine (0600, never sent); shares are sealed and opened there, under the
keysvc signing key id the custodian pinned; only ciphertext is sent or received."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared.crypto import shares

from .test_cli import gw, run  # noqa: F401  (fixtures)

SHARE = "academic acid acne acquire acrobat activity actress adapt adequate adjust admit adorn adult advance"
KEYSVC = Ed25519PrivateKey.generate()
KEY_ID = shares.key_id(KEYSVC.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


@pytest.fixture(autouse=True)
def _no_pin_in_env(monkeypatch):
    monkeypatch.delenv("STRONGROOM_KEYSVC_KEY_ID", raising=False)


@pytest.mark.parametrize(("command", "path", "purpose"), [("unseal", "/v1/custody/unseal", shares.UNSEAL),
                                                          ("rekey-verify", "/v1/custody/rekey/verify", shares.REKEY_VERIFY)])
def test_a_share_is_sealed_here_for_the_round_and_sent_only_sealed(gw, run, tmp_path, command, path, purpose):  # noqa: F811
    transport = shares.new_transport_key()
    gw.route("POST", "/v1/custody/transport-key", 200, {"purpose": purpose, "round_id": "unr_42",
                                                        **_published(KEYSVC, transport, purpose)})
    gw.route("POST", path, 200, {"sealed": True, "submitted": 1, "needed": 3, "verified": False})
    share_file = tmp_path / "share.txt"
    share_file.write_text(SHARE + "\n")

    code, _, _ = run("operator", command, "--share-file", str(share_file), "--keysvc-key-id", KEY_ID)
    assert code == 0
    assert gw.requests[0]["body"] == {"purpose": purpose}
    body = gw.last["body"]
    assert set(body) == {"sealed_share", "round_id"} and body["round_id"] == "unr_42"
    assert "academic" not in str(gw.requests)
    assert shares.open_share(body["sealed_share"], transport, shares.inbound_info(purpose, "unr_42")) == SHARE


def test_without_a_pinned_key_or_with_another_key_nothing_is_sent(gw, run, tmp_path, monkeypatch):  # noqa: F811
    gw.route("POST", "/v1/custody/transport-key", 200, {"purpose": "unseal", "round_id": "unr_42",
                                                        **_published(Ed25519PrivateKey.generate(),
                                                                     shares.new_transport_key(), "unseal")})
    share_file = tmp_path / "share.txt"
    share_file.write_text(SHARE)
    with pytest.raises(SystemExit, match="keysvc-key-id"):
        run("operator", "unseal", "--share-file", str(share_file))
    assert gw.requests == []
    monkeypatch.setenv("STRONGROOM_KEYSVC_KEY_ID", KEY_ID)
    with pytest.raises(SystemExit, match="not the pinned"):
        run("operator", "unseal", "--share-file", str(share_file))
    assert [r["path"] for r in gw.requests] == ["/v1/custody/transport-key"]


def _published(signing_key, transport: X25519PrivateKey, purpose: str) -> dict:
    public = transport.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return shares.published_transport_key(signing_key, public, purpose=purpose, round_id="unr_42")


def test_enrol_key_keeps_the_private_key_here_and_sends_only_the_public_half(gw, run, tmp_path):  # noqa: F811
    key_file = tmp_path / "cfg" / "custodian-key.pem"
    gw.route("PUT", "/v1/custody/custodian-key", 200, {"custodian_id": "usr_a", "key_id": "abcd", "enrolled_at": "x"})
    code, out, _ = run("operator", "enrol-key", "--key-file", str(key_file))
    assert code == 0 and str(key_file) in out
    assert key_file.stat().st_mode & 0o777 == 0o600
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert gw.last["body"] == {"public_key": shares.public_b64(private)}
    assert "PRIVATE" not in str(gw.requests)
    # An existing key is never overwritten by accident (shares sealed to it would no longer open).
    with pytest.raises(SystemExit, match="--replace"):
        run("operator", "enrol-key", "--key-file", str(key_file))
    assert len(gw.requests) == 1


def test_my_share_opens_this_custodians_share_with_the_key_kept_here(gw, run, tmp_path):  # noqa: F811
    key_file = tmp_path / "custodian-key.pem"
    gw.route("PUT", "/v1/custody/custodian-key", 200, {"custodian_id": "usr_a", "key_id": "abcd", "enrolled_at": "x"})
    assert run("operator", "enrol-key", "--key-file", str(key_file))[0] == 0
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    delivery = shares.seal_to_custodian(SHARE, shares.public_b64(private), purpose=shares.INIT, root_fingerprint="fp1",
                                        custodian_id="usr_a", number=2, signing_key=KEYSVC)
    gw.route("GET", "/v1/custody/shares/mine", 200, delivery)
    code, out, _ = run("operator", "my-share", "--key-file", str(key_file), "--keysvc-key-id", KEY_ID)
    assert code == 0 and f"your share 2 of root fp1 (init): {SHARE}" in out
    # Another custodian's key file opens nothing.
    other = tmp_path / "other.pem"
    gw.route("PUT", "/v1/custody/custodian-key", 200, {"custodian_id": "usr_b", "key_id": "ef01", "enrolled_at": "x"})
    assert run("operator", "enrol-key", "--key-file", str(other))[0] == 0
    with pytest.raises(SystemExit, match="another key"):
        run("operator", "my-share", "--key-file", str(other), "--keysvc-key-id", KEY_ID)


@pytest.mark.parametrize(("command", "path"), [("init", "/v1/custody/init"), ("rekey", "/v1/custody/rekey")])
def test_init_and_rekey_name_custodians_and_receive_no_share(gw, run, command, path):  # noqa: F811
    listed = [{"custodian_id": "usr_a", "number": 1, "key_id": "k1"}, {"custodian_id": "usr_b", "number": 2, "key_id": "k2"}]
    gw.route("POST", path, 200, {"root_fingerprint": "fp_old", "new_fingerprint": "fp_new", "threshold": 2, "shares": 2,
                                 "custodians": listed, "expires_at": "2030-01-01T00:00:00+00:00"})
    code, out, _ = run("operator", command, "--threshold", "2", "--custodian", "usr_a", "--custodian", "usr_b")
    assert code == 0
    assert "share 1: sealed to custodian usr_a" in out and "share 2: sealed to custodian usr_b" in out
    assert gw.last["body"] == {"threshold": 2, "custodians": ["usr_a", "usr_b"]}


def test_key_id_is_computed_from_the_signing_key_file(run, tmp_path):  # noqa: F811
    pem = tmp_path / "signing.pem"
    pem.write_bytes(KEYSVC.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    code, out, _ = run("operator", "key-id", "--key-file", str(pem), token=None)
    assert code == 0 and out.strip() == KEY_ID
