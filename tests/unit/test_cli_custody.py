"""`strongroom operator init|unseal|rekey|rekey-verify`: shares are sealed and opened on the
custodian's machine, under the keysvc signing key id the custodian pinned; only ciphertext is sent
or received."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
    gw.route("POST", "/v1/custody/transport-key", 200, {"purpose": purpose, "round_id": "unr_42",
                                                        **shares.published_transport_key(KEYSVC)})
    gw.route("POST", path, 200, {"sealed": True, "submitted": 1, "needed": 3, "verified": False})
    share_file = tmp_path / "share.txt"
    share_file.write_text(SHARE + "\n")

    code, _, _ = run("operator", command, "--share-file", str(share_file), "--keysvc-key-id", KEY_ID)
    assert code == 0
    assert gw.requests[0]["body"] == {"purpose": purpose}
    body = gw.last["body"]
    assert set(body) == {"sealed_share", "round_id"} and body["round_id"] == "unr_42"
    assert "academic" not in str(gw.requests)
    assert shares.open_share(body["sealed_share"], KEYSVC, shares.inbound_info(purpose, "unr_42")) == SHARE


def test_without_a_pinned_key_or_with_another_key_nothing_is_sent(gw, run, tmp_path, monkeypatch):  # noqa: F811
    gw.route("POST", "/v1/custody/transport-key", 200, {"purpose": "unseal", "round_id": "unr_42",
                                                        **shares.published_transport_key(Ed25519PrivateKey.generate())})
    share_file = tmp_path / "share.txt"
    share_file.write_text(SHARE)
    with pytest.raises(SystemExit, match="keysvc-key-id"):
        run("operator", "unseal", "--share-file", str(share_file))
    assert gw.requests == []
    monkeypatch.setenv("STRONGROOM_KEYSVC_KEY_ID", KEY_ID)
    with pytest.raises(SystemExit, match="not the pinned"):
        run("operator", "unseal", "--share-file", str(share_file))
    assert [r["path"] for r in gw.requests] == ["/v1/custody/transport-key"]


@pytest.mark.parametrize(("command", "path", "purpose"), [("init", "/v1/custody/init", shares.INIT),
                                                          ("rekey", "/v1/custody/rekey", shares.REKEY)])
def test_new_shares_come_back_sealed_to_this_request_and_are_opened_here(gw, run, command, path, purpose):  # noqa: F811
    def answer(req):
        body = req["body"]
        delivery = shares.seal_delivery([SHARE, SHARE[::-1]], body["recipient_public_key"], purpose=purpose,
                                        root_fingerprint="fp_new", signing_key=KEYSVC)
        return 200, {"root_fingerprint": "fp_new" if purpose == shares.INIT else "fp_old", "new_fingerprint": "fp_new",
                     "threshold": body["threshold"], "expires_at": "2030-01-01T00:00:00+00:00", **delivery}

    gw.routes[("POST", path)] = answer
    code, out, _ = run("operator", command, "--shares", "2", "--threshold", "2", "--keysvc-key-id", KEY_ID)
    assert code == 0
    assert f"share 1: {SHARE}" in out and f"share 2: {SHARE[::-1]}" in out
    assert set(gw.last["body"]) == {"shares", "threshold", "recipient_public_key"}


def test_key_id_is_computed_from_the_signing_key_file(run, tmp_path):  # noqa: F811
    pem = tmp_path / "signing.pem"
    pem.write_bytes(KEYSVC.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    code, out, _ = run("operator", "key-id", "--key-file", str(pem), token=None)
    assert code == 0 and out.strip() == KEY_ID
