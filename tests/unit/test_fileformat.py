"""Round trips and tamper detection for the SRV1 agent file format."""

import io
import os
import struct

import pytest

from agent.fileformat import (
    DEFAULT_CHUNK_SIZE,
    MAGIC,
    TAG_LEN,
    FileFormatError,
    decrypt_stream,
    encrypt_stream,
    read_header,
)

KEY_ID = "vol-data-key"
SMALL_CHUNK = 1024


def encrypt(plaintext: bytes, key: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(plaintext), out, key=key, key_id=KEY_ID, key_version=3, chunk_size=chunk_size)
    return out.getvalue()


def decrypt(ciphertext: bytes, key: bytes) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(ciphertext), out, key=key)
    return out.getvalue()


def split(ciphertext: bytes, chunk_size: int) -> tuple[bytes, list[bytes]]:
    """Cut a file into its header block and sealed chunks, as an attacker could."""
    (header_len,) = struct.unpack(">I", ciphertext[4:8])
    header_end = 8 + header_len
    body = ciphertext[header_end:]
    step = chunk_size + TAG_LEN
    return ciphertext[:header_end], [body[i : i + step] for i in range(0, len(body), step)]


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.mark.parametrize("key_len, alg", [(16, "AES-128-GCM"), (24, "AES-192-GCM"), (32, "AES-256-GCM")])
def test_round_trip_for_each_key_size(key_len: int, alg: str) -> None:
    key = os.urandom(key_len)
    plaintext = os.urandom(3 * SMALL_CHUNK + 17)
    ciphertext = encrypt(plaintext, key, SMALL_CHUNK)

    assert ciphertext.startswith(MAGIC)
    assert read_header(io.BytesIO(ciphertext)).alg == alg
    assert decrypt(ciphertext, key) == plaintext


def test_header_tells_the_agent_which_key_to_request(key: bytes) -> None:
    src = io.BytesIO(encrypt(b"secret", key, SMALL_CHUNK))

    header = read_header(src)
    out = io.BytesIO()
    decrypt_stream(src, out, key=key, header=header)

    assert (header.key_id, header.key_version, header.chunk_size) == (KEY_ID, 3, SMALL_CHUNK)
    assert len(header.salt) == 32
    assert out.getvalue() == b"secret"


def test_empty_file_round_trips_as_one_empty_final_chunk(key: bytes) -> None:
    ciphertext = encrypt(b"", key)

    header, chunks = split(ciphertext, DEFAULT_CHUNK_SIZE)
    assert [len(c) for c in chunks] == [TAG_LEN]
    assert decrypt(ciphertext, key) == b""


@pytest.mark.parametrize(
    "size, chunk_count",
    [
        (1, 1),
        (SMALL_CHUNK - 1, 1),
        (SMALL_CHUNK, 1),  # exactly one chunk: no trailing empty chunk
        (SMALL_CHUNK + 1, 2),
        (2 * SMALL_CHUNK, 2),
        (5 * SMALL_CHUNK + 100, 6),
    ],
)
def test_chunk_boundaries_round_trip(key: bytes, size: int, chunk_count: int) -> None:
    plaintext = os.urandom(size)
    ciphertext = encrypt(plaintext, key, SMALL_CHUNK)

    assert len(split(ciphertext, SMALL_CHUNK)[1]) == chunk_count
    assert decrypt(ciphertext, key) == plaintext


def test_five_megabyte_file_round_trips_with_default_chunks(key: bytes) -> None:
    plaintext = os.urandom(5 * 1024 * 1024 + 123)

    assert decrypt(encrypt(plaintext, key), key) == plaintext


def test_encryption_is_randomised_per_file(key: bytes) -> None:
    assert encrypt(b"same", key) != encrypt(b"same", key)


def test_tampered_header_byte_is_detected(key: bytes) -> None:
    ciphertext = bytearray(encrypt(b"x" * 3000, key, SMALL_CHUNK))
    salt_at = ciphertext.index(b'"salt":"') + len(b'"salt":"')
    ciphertext[salt_at] = ord("A") if ciphertext[salt_at] != ord("A") else ord("B")

    with pytest.raises(FileFormatError, match="authentication failed"):
        decrypt(bytes(ciphertext), key)


def test_tampered_key_version_in_header_is_detected(key: bytes) -> None:
    ciphertext = encrypt(b"x" * 3000, key, SMALL_CHUNK).replace(b'"key_version":3', b'"key_version":4')

    with pytest.raises(FileFormatError, match="authentication failed"):
        decrypt(ciphertext, key)


def test_tampered_chunk_byte_is_detected(key: bytes) -> None:
    ciphertext = bytearray(encrypt(os.urandom(3000), key, SMALL_CHUNK))
    header, _ = split(bytes(ciphertext), SMALL_CHUNK)
    ciphertext[len(header) + SMALL_CHUNK + TAG_LEN + 5] ^= 0x01

    with pytest.raises(FileFormatError, match="chunk 1"):
        decrypt(bytes(ciphertext), key)


def test_swapped_chunks_are_detected(key: bytes) -> None:
    header, chunks = split(encrypt(os.urandom(3000), key, SMALL_CHUNK), SMALL_CHUNK)

    with pytest.raises(FileFormatError):
        decrypt(header + chunks[1] + chunks[0] + chunks[2], key)


def test_dropping_the_last_chunk_is_detected_as_truncation(key: bytes) -> None:
    header, chunks = split(encrypt(os.urandom(3000), key, SMALL_CHUNK), SMALL_CHUNK)

    with pytest.raises(FileFormatError, match="truncated"):
        decrypt(header + b"".join(chunks[:-1]), key)


def test_cutting_into_the_last_chunk_is_detected(key: bytes) -> None:
    ciphertext = encrypt(os.urandom(3000), key, SMALL_CHUNK)

    with pytest.raises(FileFormatError):
        decrypt(ciphertext[:-1], key)


def test_file_with_no_chunks_is_truncated(key: bytes) -> None:
    header, _ = split(encrypt(b"abc", key, SMALL_CHUNK), SMALL_CHUNK)

    with pytest.raises(FileFormatError, match="truncated"):
        decrypt(header, key)


@pytest.mark.parametrize("size", [3000, 3 * SMALL_CHUNK])
@pytest.mark.parametrize("garbage", [b"\x00", os.urandom(SMALL_CHUNK + TAG_LEN)])
def test_appended_garbage_is_detected(key: bytes, size: int, garbage: bytes) -> None:
    ciphertext = encrypt(os.urandom(size), key, SMALL_CHUNK)

    with pytest.raises(FileFormatError):
        decrypt(ciphertext + garbage, key)


def test_data_after_a_full_final_chunk_is_named_as_such(key: bytes) -> None:
    ciphertext = encrypt(os.urandom(2 * SMALL_CHUNK), key, SMALL_CHUNK)

    with pytest.raises(FileFormatError, match="after the final chunk"):
        decrypt(ciphertext + b"more", key)


def test_wrong_key_of_the_right_size_is_rejected(key: bytes) -> None:
    ciphertext = encrypt(b"secret", key)

    with pytest.raises(FileFormatError, match="wrong key"):
        decrypt(ciphertext, os.urandom(32))


def test_wrong_key_size_is_rejected_without_leaking_the_key(key: bytes) -> None:
    ciphertext = encrypt(b"secret", key)
    wrong = os.urandom(16)

    with pytest.raises(FileFormatError, match="wrong key") as excinfo:
        decrypt(ciphertext, wrong)
    assert wrong.hex() not in str(excinfo.value)
    assert repr(wrong) not in str(excinfo.value)


@pytest.mark.parametrize("data", [b"", b"SRV", b"SRV2" + b"\x00" * 40, b"PK\x03\x04 not ours"])
def test_bad_magic_is_rejected(key: bytes, data: bytes) -> None:
    with pytest.raises(FileFormatError, match="bad magic"):
        decrypt(data, key)


def test_malformed_header_is_rejected(key: bytes) -> None:
    header_json = b'{"alg":"AES-256-GCM"}'
    data = MAGIC + struct.pack(">I", len(header_json)) + header_json

    with pytest.raises(FileFormatError, match="exactly the members"):
        read_header(io.BytesIO(data))


def test_oversized_header_length_is_rejected_before_reading(key: bytes) -> None:
    with pytest.raises(FileFormatError, match="exceeds"):
        read_header(io.BytesIO(MAGIC + struct.pack(">I", 2**31)))


def test_invalid_data_key_size_is_refused_when_encrypting() -> None:
    with pytest.raises(ValueError, match="16, 24 or 32"):
        encrypt(b"x", os.urandom(20))


class TrickleReader(io.RawIOBase):
    """A raw stream that returns at most 7 bytes per read, as pipes and sockets may."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 7) if size >= 0 else 7)


def test_short_reads_are_handled(key: bytes) -> None:
    plaintext = os.urandom(2 * SMALL_CHUNK + 5)
    encrypted = io.BytesIO()
    encrypt_stream(TrickleReader(plaintext), encrypted, key=key, key_id=KEY_ID, key_version=1, chunk_size=SMALL_CHUNK)
    decrypted = io.BytesIO()
    decrypt_stream(TrickleReader(encrypted.getvalue()), decrypted, key=key)

    assert decrypted.getvalue() == plaintext
