"""Import wrapping (bring your own key): both wrappings round-trip; HPKE material opens only for the
tenant, key id and token it was wrapped for; tampered or foreign ciphertext is refused."""

from __future__ import annotations

import base64
import secrets

import pytest

from shared.crypto import byok

INFO = {"tenant_id": "t_1", "key_id": "key_1", "import_token": "imp_1"}


@pytest.mark.parametrize("algorithm", byok.WRAPPING_ALGORITHMS)
def test_material_round_trips(algorithm):
    private = byok.new_import_key(algorithm)
    params = byok.public_params(algorithm, private)
    assert params["wrapping_algorithm"] == algorithm
    material = secrets.token_bytes(32)
    info = byok.import_info(**INFO)
    wrapped = byok.wrap_material(algorithm, params["public_key"], material, info=info)
    assert byok.open_material(algorithm, private, base64.b64decode(wrapped), info=info) == material


def test_x25519_public_key_is_32_raw_bytes_and_each_import_key_is_new():
    a, b = (byok.new_import_key(byok.X25519_HPKE) for _ in range(2))
    assert len(a) == 32 and a != b
    assert len(base64.b64decode(byok.public_params(byok.X25519_HPKE, a)["public_key"])) == 32


@pytest.mark.parametrize("other", [{"tenant_id": "t_2"}, {"key_id": "key_2"}, {"import_token": "imp_2"}])
def test_hpke_material_bound_to_tenant_key_and_token(other):
    private = byok.new_import_key(byok.X25519_HPKE)
    public = byok.public_params(byok.X25519_HPKE, private)["public_key"]
    wrapped = byok.wrap_material(byok.X25519_HPKE, public, b"k" * 32, info=byok.import_info(**{**INFO, **other}))
    with pytest.raises(byok.ImportWrapError, match="wrapped_key_material"):
        byok.open_material(byok.X25519_HPKE, private, base64.b64decode(wrapped), info=byok.import_info(**INFO))


@pytest.mark.parametrize("algorithm", byok.WRAPPING_ALGORITHMS)
def test_tampered_truncated_or_foreign_ciphertext_refused(algorithm):
    private = byok.new_import_key(algorithm)
    info = byok.import_info(**INFO)
    wrapped = bytearray(base64.b64decode(
        byok.wrap_material(algorithm, byok.public_params(algorithm, private)["public_key"], b"k" * 32, info=info)))
    foreign = base64.b64decode(byok.wrap_material(
        algorithm, byok.public_params(algorithm, byok.new_import_key(algorithm))["public_key"], b"k" * 32, info=info))
    flipped = bytearray(wrapped)
    flipped[-1] ^= 1
    for bad in (bytes(flipped), bytes(wrapped[:-1]), b"", foreign):
        with pytest.raises(byok.ImportWrapError) as caught:
            byok.open_material(algorithm, private, bad, info=info)
        assert "k" * 32 not in str(caught.value)


def test_unknown_algorithm_and_nul_in_info_refused():
    with pytest.raises(ValueError, match="wrapping_algorithm"):
        byok.new_import_key("RSAES_PKCS1_V1_5")
    with pytest.raises(ValueError):
        byok.import_info(tenant_id="t\x00", key_id="k", import_token="i")
