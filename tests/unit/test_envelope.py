"""Unit tests for envelope encryption (shared.crypto.envelope)."""

import base64

import pytest

from shared.crypto.envelope import (
    FORMAT_VERSION,
    NONCE_BYTES,
    SecretBytes,
    UnwrapError,
    aad_for,
    generate_key,
    unwrap,
    wrap,
)

KEK = generate_key(256)
DATA_KEY = generate_key(256)
AAD = aad_for("data-key", "tenant-a", "key-1", "3")


def leaked_forms(secret: bytes) -> list[str]:
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        repr(secret),
    ]


def test_round_trip():
    blob = wrap(KEK, DATA_KEY, aad=AAD)
    assert unwrap(KEK, blob, aad=AAD) == DATA_KEY


def test_blob_layout_and_randomised_nonce():
    a = wrap(KEK, DATA_KEY, aad=AAD)
    b = wrap(KEK, DATA_KEY, aad=AAD)
    assert a[0] == FORMAT_VERSION
    assert len(a) == 1 + NONCE_BYTES + len(DATA_KEY) + 16
    assert a[1 : 1 + NONCE_BYTES] != b[1 : 1 + NONCE_BYTES]
    assert a != b


def test_round_trip_empty_plaintext_and_secret_bytes_inputs():
    blob = wrap(SecretBytes(KEK), b"", aad=AAD)
    assert unwrap(SecretBytes(KEK), blob, aad=AAD) == b""
    blob = wrap(KEK, SecretBytes(DATA_KEY), aad=AAD)
    assert unwrap(KEK, blob, aad=AAD) == DATA_KEY


@pytest.mark.parametrize(
    "wrong_aad",
    [
        aad_for("data-key", "tenant-b", "key-1", "3"),  # other tenant
        aad_for("data-key", "tenant-a", "key-2", "3"),  # other key id
        aad_for("data-key", "tenant-a", "key-1", "4"),  # other version
        aad_for("kek", "tenant-a", "3"),  # other purpose
        b"",
    ],
    ids=["tenant", "key_id", "version", "purpose", "empty"],
)
def test_wrong_aad_fails(wrong_aad):
    blob = wrap(KEK, DATA_KEY, aad=AAD)
    with pytest.raises(UnwrapError):
        unwrap(KEK, blob, aad=wrong_aad)


def test_wrong_kek_fails_and_message_has_no_key_bytes():
    blob = wrap(KEK, DATA_KEY, aad=AAD)
    other = generate_key(256)
    with pytest.raises(UnwrapError) as info:
        unwrap(other, blob, aad=AAD)
    message = str(info.value) + repr(info.value)
    for secret in (KEK, other, DATA_KEY):
        for form in leaked_forms(secret):
            assert form not in message


@pytest.mark.parametrize("position", [0, 1, NONCE_BYTES, NONCE_BYTES + 1, -1, -17])
def test_tampered_blob_fails(position):
    blob = bytearray(wrap(KEK, DATA_KEY, aad=AAD))
    blob[position] ^= 0x01
    with pytest.raises(UnwrapError):
        unwrap(KEK, bytes(blob), aad=AAD)


@pytest.mark.parametrize("cut", [0, 1, 1 + NONCE_BYTES, 1 + NONCE_BYTES + 15])
def test_truncated_blob_fails(cut):
    blob = wrap(KEK, DATA_KEY, aad=AAD)
    with pytest.raises(UnwrapError):
        unwrap(KEK, blob[:cut], aad=AAD)


def test_appended_bytes_fail():
    blob = wrap(KEK, DATA_KEY, aad=AAD)
    with pytest.raises(UnwrapError):
        unwrap(KEK, blob + b"\x00", aad=AAD)


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33])
def test_kek_must_be_aes_256(size):
    bad = b"\x42" * size
    with pytest.raises(ValueError) as info:
        wrap(bad, DATA_KEY, aad=AAD)
    assert bad.hex() not in str(info.value) or size == 0


def test_aad_is_unambiguous():
    assert aad_for("ab", "c") != aad_for("a", "bc")
    assert aad_for("a", "") != aad_for("a")
    assert aad_for("", "a") != aad_for("a", "")
    assert aad_for("data-key", "t", "k", "1") == aad_for("data-key", "t", "k", "1")
    assert aad_for("é") != aad_for("e")


def test_aad_rejects_non_str_and_empty():
    with pytest.raises(TypeError):
        aad_for("data-key", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        aad_for()


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_generate_key_sizes(bits):
    key = generate_key(bits)
    assert len(key) == bits // 8
    assert key != generate_key(bits)


@pytest.mark.parametrize("bits", [0, 64, 127, 512, 255])
def test_generate_key_refuses_other_sizes(bits):
    with pytest.raises(ValueError):
        generate_key(bits)


def test_secret_bytes_never_shows_its_value():
    secret = SecretBytes(DATA_KEY)
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret]), repr({"k": secret})]
    for text in shown:
        for form in leaked_forms(DATA_KEY):
            assert form not in text
    assert secret.get_secret_value() == DATA_KEY
    assert len(secret) == 32
    assert "32 bytes" in repr(secret)


def test_secret_bytes_equality_and_unhashable():
    assert SecretBytes(DATA_KEY) == SecretBytes(DATA_KEY)
    assert SecretBytes(DATA_KEY) != SecretBytes(KEK)
    assert SecretBytes(DATA_KEY) != DATA_KEY
    with pytest.raises(TypeError):
        hash(SecretBytes(DATA_KEY))
    with pytest.raises(TypeError):
        SecretBytes("not bytes")  # type: ignore[arg-type]
