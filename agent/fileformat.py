"""SRV1: the agent's authenticated, chunked, streaming file encryption format.

Byte layout (integers are unsigned big-endian)::

    file         = header_block || chunk_0 || ... || chunk_n        (n >= 0)
    header_block = magic || header_len || header_json
    magic        = b"SRV1"
    header_len   = uint32, length of header_json, at most 65536
    header_json  = UTF-8 JSON object with exactly these members:
        "alg"          "AES-128-GCM" | "AES-192-GCM" | "AES-256-GCM" (data key size)
        "key_id"       non-empty string naming the data key in Strongroom
        "key_version"  integer >= 1, the version of that key
        "chunk_size"   integer in [1, 16 MiB], plaintext bytes per chunk (default 1 MiB; 64 KiB before)
        "salt"         standard base64 of 32 random bytes, fresh per file
    chunk_i      = AES-GCM(file_key, nonce_i, plaintext_i, aad) = ciphertext || 16-byte tag

Keys and nonces:

    file_key = HKDF-SHA256(ikm=data_key, salt=salt,
                           info=b"strongroom file v1" || header_block,
                           length=len(data_key))
    nonce_i  = uint88(i) || last_flag     (12 bytes; last_flag 0x01 on chunk_n, else 0x00)
    aad      = SHA-256(header_block)

Every chunk but the last holds exactly chunk_size plaintext bytes; the last holds 0 to
chunk_size bytes, so an empty file is one empty final chunk (16 bytes of tag) and a file
that is an exact multiple of chunk_size has no trailing empty chunk.

Why it is built this way: the random per-file salt gives each file its own key, so the
counter nonces of the STREAM construction (Hoang, Reyhanitabar, Rogaway and Vizár, 2015)
never repeat under one key. The counter detects reordered, dropped or duplicated chunks;
the last-chunk flag detects truncation at a chunk boundary and anything appended after the
end; binding the header block into both the key derivation and the AAD detects any change
to the header. AES-GCM does not commit to its key, so a wrong key and a corrupted file
produce the same authentication failure.

Decryption writes plaintext chunk by chunk, before the end of the file has been
authenticated: callers must treat the output as untrusted until `decrypt_stream` returns
(write to a temporary file and rename it into place on success).
"""

import base64
import binascii
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.chunkio import Filler, write_all

MAGIC = b"SRV1"
DEFAULT_CHUNK_SIZE = 1024 * 1024  # 64 KiB before: 16 times fewer per-chunk calls; files of either size read
MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_HEADER_LEN = 64 * 1024
SALT_LEN = 32
TAG_LEN = 16
HKDF_INFO_PREFIX = b"strongroom file v1"

_HEADER_LEN = struct.Struct(">I")
_COUNTER_LEN = 11
_ALG_BY_KEY_LEN = {16: "AES-128-GCM", 24: "AES-192-GCM", 32: "AES-256-GCM"}
_KEY_LEN_BY_ALG = {alg: key_len for key_len, alg in _ALG_BY_KEY_LEN.items()}
_HEADER_FIELDS = frozenset({"alg", "key_id", "key_version", "chunk_size", "salt"})


class FileFormatError(Exception):
    """The input is not an intact SRV1 file for this key; the message never contains key bytes."""


@dataclass(frozen=True)
class FileHeader:
    """What a reader learns before decrypting: which key version to ask Strongroom for."""

    alg: str
    key_id: str
    key_version: int
    chunk_size: int
    salt: bytes
    # The exact bytes read or written, because the AAD and key derivation bind them verbatim.
    raw: bytes = field(repr=False, compare=False)


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    *,
    key: bytes,
    key_id: str,
    key_version: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Encrypt `src` to `dst` in SRV1 format, holding one chunk (and its sealed form) in memory."""
    header = new_header(key=key, key_id=key_id, key_version=key_version, chunk_size=chunk_size)
    write_all(dst, memoryview(header.raw))

    aead = AESGCM(_derive_file_key(key, header))
    aad = hashlib.sha256(header.raw).digest()
    # One buffer of chunk_size + 1 bytes: the extra byte is the lookahead that tells whether this
    # chunk is the last, and it moves to the front of the buffer for the next chunk.
    chunk = memoryview(bytearray(chunk_size + 1))
    sealed = memoryview(bytearray(chunk_size + TAG_LEN))
    filler = Filler(src)
    filled, counter = filler.fill(chunk), 0
    while True:
        last = filled <= chunk_size
        size = min(filled, chunk_size)
        aead.encrypt_into(_nonce(counter, last), chunk[:size], aad, sealed[: size + TAG_LEN])
        write_all(dst, sealed[: size + TAG_LEN])
        if last:
            return
        chunk[0] = chunk[chunk_size]
        filled, counter = 1 + filler.fill(chunk[1:]), counter + 1


def new_header(*, key: bytes, key_id: str, key_version: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> FileHeader:
    """A header for a new file under this key, with a fresh random salt (so a fresh file key)."""
    alg = _ALG_BY_KEY_LEN.get(len(key)) if isinstance(key, bytes) else None
    if alg is None:
        raise ValueError("data key must be 16, 24 or 32 bytes")
    if not isinstance(key_id, str) or not key_id:
        raise ValueError("key_id must be a non-empty string")
    if not _is_int(key_version) or key_version < 1:
        raise ValueError("key_version must be an integer >= 1")
    if not _is_int(chunk_size) or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE}")

    salt = os.urandom(SALT_LEN)
    header_json = json.dumps(
        {
            "alg": alg,
            "key_id": key_id,
            "key_version": key_version,
            "chunk_size": chunk_size,
            "salt": base64.b64encode(salt).decode("ascii"),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode("utf-8")
    if len(header_json) > MAX_HEADER_LEN:
        raise ValueError("key_id is too long for the file header")
    raw = MAGIC + _HEADER_LEN.pack(len(header_json)) + header_json
    return FileHeader(alg=alg, key_id=key_id, key_version=key_version, chunk_size=chunk_size, salt=salt, raw=raw)


class ChunkSealer:
    """Encryption as a writable stream, for data that is pushed rather than pulled (re-encrypting
    what `decrypt_stream` writes, when a file is rotated to a new key version).

    `write` buffers up to one chunk and seals a full chunk only once more data arrives, because only
    then is it known not to be the last; `finish` seals the final chunk. Output is byte-for-byte
    what `encrypt_stream` writes for the same header and plaintext."""

    def __init__(self, dst: BinaryIO, *, key: bytes, key_id: str, key_version: int,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.header = new_header(key=key, key_id=key_id, key_version=key_version, chunk_size=chunk_size)
        self._dst, self._size = dst, chunk_size
        self._aead = AESGCM(_derive_file_key(key, self.header))
        self._aad = hashlib.sha256(self.header.raw).digest()
        self._chunk = memoryview(bytearray(chunk_size))
        self._sealed = memoryview(bytearray(chunk_size + TAG_LEN))
        self._held, self._counter, self._finished = 0, 0, False
        write_all(dst, memoryview(self.header.raw))

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        if self._finished:
            raise ValueError("write after finish")
        while view:
            if self._held == self._size:
                self._seal(last=False)
            take = min(len(view), self._size - self._held)
            self._chunk[self._held : self._held + take] = view[:take]
            self._held += take
            view = view[take:]
        return len(data)

    def finish(self) -> None:
        """Seal the final chunk (an empty one if nothing was written)."""
        if not self._finished:
            self._seal(last=True)
            self._finished = True

    def _seal(self, *, last: bool) -> None:
        out = self._sealed[: self._held + TAG_LEN]
        self._aead.encrypt_into(_nonce(self._counter, last), self._chunk[: self._held], self._aad, out)
        write_all(self._dst, out)
        self._held, self._counter = 0, self._counter + 1


def read_header(src: BinaryIO) -> FileHeader:
    """Read and validate the header, leaving `src` at the first chunk."""
    prefix = _read_exact(src, len(MAGIC) + _HEADER_LEN.size)
    if prefix[: len(MAGIC)] != MAGIC:
        raise FileFormatError("not a Strongroom encrypted file (bad magic)")
    if len(prefix) < len(MAGIC) + _HEADER_LEN.size:
        raise FileFormatError("file is truncated inside the header")
    (header_len,) = _HEADER_LEN.unpack(prefix[len(MAGIC) :])
    if header_len > MAX_HEADER_LEN:
        raise FileFormatError(f"header length {header_len} exceeds the limit of {MAX_HEADER_LEN} bytes")
    header_json = _read_exact(src, header_len)
    if len(header_json) < header_len:
        raise FileFormatError("file is truncated inside the header")
    return _parse_header_json(prefix + header_json, header_json)


def decrypt_stream(src: BinaryIO, dst: BinaryIO, *, key: bytes, header: FileHeader | None = None) -> None:
    """Decrypt an SRV1 file from `src` to `dst`, raising FileFormatError if anything is wrong.

    Pass `header` if `read_header` was already called on `src`; the stream must then still be
    positioned at the first chunk. Output written before an error is unauthenticated.
    """
    if header is None:
        header = read_header(src)
    expected_key_len = _KEY_LEN_BY_ALG[header.alg]
    if not isinstance(key, bytes) or len(key) != expected_key_len:
        raise FileFormatError(
            f"wrong key: the file was encrypted with {header.alg}, which needs a {expected_key_len}-byte key"
        )

    aead = AESGCM(_derive_file_key(key, header))
    aad = hashlib.sha256(header.raw).digest()
    sealed_len = header.chunk_size + TAG_LEN
    sealed = memoryview(bytearray(sealed_len + 1))
    opened = memoryview(bytearray(header.chunk_size))
    filler = Filler(src)
    filled, counter = filler.fill(sealed), 0
    while True:
        last = filled <= sealed_len
        size = min(filled, sealed_len)
        if size < TAG_LEN:
            raise FileFormatError("file is truncated: the final chunk is missing or incomplete")
        _open_chunk(aead, counter, last, sealed[:size], aad, opened[: size - TAG_LEN])
        write_all(dst, opened[: size - TAG_LEN])
        if last:
            return
        sealed[0] = sealed[sealed_len]
        filled, counter = 1 + filler.fill(sealed[1:]), counter + 1


def _open_chunk(aead: AESGCM, counter: int, last: bool, sealed: memoryview, aad: bytes, out: memoryview) -> None:
    try:
        aead.decrypt_into(_nonce(counter, last), sealed, aad, out)
        return
    except InvalidTag:
        pass
    # Retrying with the other flag costs nothing on success and turns the failure into a diagnosis.
    try:
        aead.decrypt(_nonce(counter, not last), sealed, aad)
    except InvalidTag:
        if counter == 0:
            raise FileFormatError("authentication failed: wrong key, or the file is corrupt or tampered with") from None
        raise FileFormatError(
            f"authentication failed at chunk {counter}: the file is corrupt, reordered or tampered with"
        ) from None
    if last:
        raise FileFormatError(f"file is truncated: it ends after chunk {counter}, which is not the final chunk")
    raise FileFormatError(f"unexpected data after the final chunk (chunk {counter})")


def _derive_file_key(data_key: bytes, header: FileHeader) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=len(data_key),
        salt=header.salt,
        info=HKDF_INFO_PREFIX + header.raw,
    )
    return hkdf.derive(data_key)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(_COUNTER_LEN, "big") + (b"\x01" if last else b"\x00")


def _parse_header_json(raw: bytes, header_json: bytes) -> FileHeader:
    try:
        fields = json.loads(header_json.decode("utf-8"), object_pairs_hook=_reject_duplicate_members)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FileFormatError(f"header is not valid JSON: {exc}") from None
    if not isinstance(fields, dict) or set(fields) != _HEADER_FIELDS:
        raise FileFormatError(f"header must have exactly the members {sorted(_HEADER_FIELDS)}")
    alg, key_id, key_version = fields["alg"], fields["key_id"], fields["key_version"]
    chunk_size, salt_b64 = fields["chunk_size"], fields["salt"]
    if alg not in _KEY_LEN_BY_ALG:
        raise FileFormatError(f"unsupported algorithm {alg!r}")
    if not isinstance(key_id, str) or not key_id:
        raise FileFormatError("header key_id must be a non-empty string")
    if not _is_int(key_version) or key_version < 1:
        raise FileFormatError("header key_version must be an integer >= 1")
    if not _is_int(chunk_size) or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise FileFormatError(f"header chunk_size must be between 1 and {MAX_CHUNK_SIZE}")
    try:
        salt = base64.b64decode(salt_b64, validate=True) if isinstance(salt_b64, str) else b""
    except binascii.Error:
        salt = b""
    if len(salt) != SALT_LEN:
        raise FileFormatError(f"header salt must be base64 of {SALT_LEN} bytes")
    return FileHeader(alg=alg, key_id=key_id, key_version=key_version, chunk_size=chunk_size, salt=salt, raw=raw)


def _reject_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The header is authenticated as bytes; duplicate members could be read differently elsewhere.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member in header")
    return result


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_exact(src: BinaryIO, size: int) -> bytes:
    """Read `size` bytes, or fewer only at end of stream, because raw streams may return short reads."""
    parts = []
    remaining = size
    while remaining > 0:
        part = src.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def open_source(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a file to read without Python's buffer: chunks are read straight into reused buffers."""
    return open(path, "rb", buffering=0)


def open_sink(path: str | os.PathLike[str]) -> BinaryIO:
    """Open (create or truncate, 0600) a file to write without Python's buffer; chunks go out whole."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb", buffering=0)
