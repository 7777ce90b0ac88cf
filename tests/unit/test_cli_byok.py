"""`strongroom byok import`: the key material is wrapped on the operator's machine to the import key
the gateway hands out (HPKE to X25519 by default, or RSA-OAEP), bound to tenant, key id and token;
only the wrapping is sent."""

from __future__ import annotations

import base64
import secrets

import pytest

from shared.crypto import byok

from .test_cli import gw, run  # noqa: F401  (fixtures)


@pytest.mark.parametrize(("flag", "algorithm"), [("x25519", byok.X25519_HPKE), ("rsa", byok.RSA_OAEP)])
def test_byok_import_wraps_locally_and_sends_only_the_wrapping(gw, run, tmp_path, flag, algorithm):  # noqa: F811
    private = byok.new_import_key(algorithm)
    params = {"import_token": "imp_abc", "tenant_id": "ten_acme", "key_id": "key_123", "expires_at": "2030-01-01T00:00:00+00:00",
              **byok.public_params(algorithm, private)}
    gw.route("GET", "/v1/custody/import-params", 200, params)
    gw.route("POST", "/v1/keys/import", 201, {"key_id": "key_123", "name": "byok", "state": "active"})
    material = secrets.token_bytes(32)
    path = tmp_path / "key.bin"
    path.write_bytes(material)

    code, out, _ = run("byok", "import", "byok", "--material-file", str(path), "--wrapping", flag, "--volume", "vol-1")
    assert code == 0 and "key_123" in out
    asked, sent = gw.requests[-2], gw.last
    assert asked["query"] == {"wrapping_algorithm": algorithm}
    body = sent["body"]
    assert body["import_token"] == "imp_abc" and body["algorithm"] == "AES-256" and body["volume"] == "vol-1"
    assert material.hex() not in str(body) and base64.b64encode(material).decode() not in str(body)
    info = byok.import_info(tenant_id="ten_acme", key_id="key_123", import_token="imp_abc")
    assert byok.open_material(algorithm, private, base64.b64decode(body["wrapped_key_material"]), info=info) == material


def test_byok_import_refuses_a_file_that_is_not_a_raw_aes_key(gw, run, tmp_path):  # noqa: F811
    path = tmp_path / "key.txt"
    path.write_bytes(b"not a key")
    with pytest.raises(SystemExit, match="16, 24 or 32 bytes"):
        run("byok", "import", "byok", "--material-file", str(path))
    assert gw.requests == []
