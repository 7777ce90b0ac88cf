"""TPM 2.0 structures on the wire (TCG TPM 2.0 Library, Part 2): the few this verifier reads.

TPMS_ATTEST of a quote or a certification, TPMT_SIGNATURE (ECDSA, RSASSA, RSAPSS) and TPM2B_PUBLIC (RSA and ECC keys),
all big-endian. Parsing is strict: lengths are bounded, every byte is consumed, unknown algorithms
are refused. Errors say what was malformed in generic words and never echo the input.
Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .base import EvidenceError

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ST_ATTEST_CERTIFY = 0x8017

ALG_RSA = 0x0001
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D
ALG_NULL = 0x0010
ALG_RSASSA = 0x0014
ALG_RSAPSS = 0x0016
ALG_ECDSA = 0x0018
ALG_ECC = 0x0023
ALG_AES = 0x0006
ALG_CFB = 0x0043

# TPMA_OBJECT bits (Part 2, §8.3).
ATTR_FIXED_TPM = 0x00000002
ATTR_FIXED_PARENT = 0x00000010
ATTR_SENSITIVE_DATA_ORIGIN = 0x00000020
ATTR_RESTRICTED = 0x00010000
ATTR_DECRYPT = 0x00020000
ATTR_SIGN = 0x00040000

# Hash algorithms a signature or a name may use, with their digest sizes. SHA-1 is not accepted.
HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    ALG_SHA256: hashes.SHA256,
    ALG_SHA384: hashes.SHA384,
    ALG_SHA512: hashes.SHA512,
}
_HASHLIB = {ALG_SHA256: "sha256", ALG_SHA384: "sha384", ALG_SHA512: "sha512"}
_CURVES: dict[int, type[ec.EllipticCurve]] = {0x0003: ec.SECP256R1, 0x0004: ec.SECP384R1, 0x0005: ec.SECP521R1}

MAX_TPM2B = 1024          # larger than any field of the structures read here
MAX_PCR_SELECTIONS = 4


def _malformed(what: str) -> EvidenceError:
    return EvidenceError(f"malformed {what}")


class _Reader:
    """Big-endian reads over bytes; any overrun or leftover is a malformed structure."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.at, self.what = bytes(data), 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise _malformed(self.what)
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def tpm2b(self) -> bytes:
        size = self.u16()
        if size > MAX_TPM2B:
            raise _malformed(self.what)
        return self.take(size)

    def end(self) -> None:
        if self.at != len(self.data):
            raise _malformed(self.what)


def tpm2b(data: bytes) -> bytes:
    """A TPM2B: the size as u16 then the bytes."""
    return struct.pack(">H", len(data)) + data


def b64_field(value: Any, field: str, limit: int) -> bytes:
    """A base64 field of a request document, 1..`limit` bytes once decoded; the error names the field."""
    if not isinstance(value, str) or len(value) > (limit + 2) // 3 * 4:
        raise EvidenceError(f"{field} must be base64 of at most {limit} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceError(f"{field} must be base64 of at most {limit} bytes") from None
    if not raw:
        raise EvidenceError(f"{field} must not be empty")
    return raw


def digest(hash_alg: int, data: bytes) -> bytes:
    if hash_alg not in _HASHLIB:
        raise EvidenceError("unsupported hash algorithm")
    return hashlib.new(_HASHLIB[hash_alg], data).digest()


# --- TPMS_ATTEST (quote) ----------------------------------------------------------------


@dataclass(frozen=True)
class PcrSelection:
    hash_alg: int
    pcrs: tuple[int, ...]   # ascending: the order the TPM hashes the values in


@dataclass(frozen=True)
class QuoteAttest:
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    selections: tuple[PcrSelection, ...]
    pcr_digest: bytes


def _pcr_selection(reader: _Reader) -> PcrSelection:
    hash_alg = reader.u16()
    size = reader.u8()
    if size > 8:
        raise _malformed(reader.what)
    bitmap = reader.take(size)
    pcrs = tuple(byte * 8 + bit for byte, bits in enumerate(bitmap) for bit in range(8) if bits >> bit & 1)
    return PcrSelection(hash_alg, pcrs)


def _attest_header(data: bytes, kind: int, what: str) -> tuple[_Reader, tuple[bytes, bytes, int, int, int, bool, int]]:
    """magic, type, qualifiedSigner, extraData, clockInfo and firmwareVersion: what every TPMS_ATTEST starts with."""
    reader = _Reader(data, what)
    if reader.u32() != TPM_GENERATED_VALUE:
        raise EvidenceError(f"{what} not generated by a TPM")
    if reader.u16() != kind:
        raise EvidenceError(f"attestation is not a {what}")
    signer, extra = reader.tpm2b(), reader.tpm2b()
    clock, reset_count, restart_count, safe = reader.u64(), reader.u32(), reader.u32(), reader.u8()
    return reader, (signer, extra, clock, reset_count, restart_count, bool(safe), reader.u64())


def parse_quote_attest(data: bytes) -> QuoteAttest:
    """A TPMS_ATTEST of type quote, refused if it is anything else (magic, type, trailing bytes)."""
    reader, header = _attest_header(data, TPM_ST_ATTEST_QUOTE, "quote")
    count = reader.u32()
    if count > MAX_PCR_SELECTIONS:
        raise _malformed("quote")
    selections = tuple(_pcr_selection(reader) for _ in range(count))
    pcr_digest = reader.tpm2b()
    reader.end()
    return QuoteAttest(*header, selections, pcr_digest)


@dataclass(frozen=True)
class CertifyAttest:
    """A TPMS_ATTEST of type certify: the signing key vouches that an object of this name is in its TPM."""

    qualified_signer: bytes
    extra_data: bytes
    name: bytes
    qualified_name: bytes


def parse_certify_attest(data: bytes) -> CertifyAttest:
    reader, (signer, extra, *_) = _attest_header(data, TPM_ST_ATTEST_CERTIFY, "certification")
    name, qualified_name = reader.tpm2b(), reader.tpm2b()
    reader.end()
    return CertifyAttest(signer, extra, name, qualified_name)


# --- TPMT_SIGNATURE ---------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    alg: int          # ALG_ECDSA, ALG_RSASSA or ALG_RSAPSS
    hash_alg: int
    value: bytes      # DER (r, s) for ECDSA, the raw signature for RSA


def parse_signature(data: bytes) -> Signature:
    reader = _Reader(data, "signature")
    alg, hash_alg = reader.u16(), reader.u16()
    if hash_alg not in HASHES:
        raise EvidenceError("unsupported signature hash")
    if alg == ALG_ECDSA:
        r, s = reader.tpm2b(), reader.tpm2b()
        value = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    elif alg in (ALG_RSASSA, ALG_RSAPSS):
        value = reader.tpm2b()
    else:
        raise EvidenceError("unsupported signature algorithm")
    reader.end()
    return Signature(alg, hash_alg, value)


# --- TPM2B_PUBLIC -----------------------------------------------------------------------


@dataclass(frozen=True)
class TpmPublic:
    """A key's public area: its algorithm, attributes, key and name (nameAlg ‖ H(TPMT_PUBLIC))."""

    type: int
    name_alg: int
    attributes: int
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    name: bytes
    symmetric: tuple[int, int, int] | None   # (algorithm, key bits, mode) of a storage key, else None
    scheme: tuple[int, int] | None           # (signing scheme, hash) when the key fixes one

    def has(self, attributes: int) -> bool:
        return self.attributes & attributes == attributes


def _symmetric(reader: _Reader) -> tuple[int, int, int] | None:
    alg = reader.u16()
    if alg == ALG_NULL:
        return None
    return alg, reader.u16(), reader.u16()


def _scheme(reader: _Reader) -> tuple[int, int] | None:
    alg = reader.u16()
    if alg == ALG_NULL:
        return None
    return alg, reader.u16()


def _rsa_key(reader: _Reader) -> rsa.RSAPublicKey:
    key_bits, exponent = reader.u16(), reader.u32()
    modulus = reader.tpm2b()
    if key_bits not in (2048, 3072, 4096) or len(modulus) * 8 != key_bits:
        raise EvidenceError("unsupported RSA key")
    try:
        return rsa.RSAPublicNumbers(exponent or 65537, int.from_bytes(modulus, "big")).public_key()
    except ValueError:   # an even exponent or modulus, an exponent out of range
        raise EvidenceError("invalid RSA public key") from None


def _ecc_key(reader: _Reader) -> ec.EllipticCurvePublicKey:
    curve_id = reader.u16()
    if _scheme(reader) is not None:   # the KDF: none on the keys read here
        raise EvidenceError("unsupported ECC key")
    x, y = reader.tpm2b(), reader.tpm2b()
    if curve_id not in _CURVES:
        raise EvidenceError("unsupported ECC curve")
    try:
        return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), _CURVES[curve_id]()).public_key()
    except ValueError:
        raise EvidenceError("invalid ECC public key") from None


def parse_public(data: bytes) -> TpmPublic:
    """A TPM2B_PUBLIC (what `tpm2_readpublic -o` and `tpm2_createak -u` write) of an RSA or ECC key."""
    outer = _Reader(data, "public key")
    area = outer.tpm2b()
    outer.end()
    reader = _Reader(area, "public key")
    key_type, name_alg, attributes = reader.u16(), reader.u16(), reader.u32()
    if name_alg not in HASHES:
        raise EvidenceError("unsupported name algorithm")
    reader.tpm2b()   # authPolicy
    symmetric, scheme = _symmetric(reader), _scheme(reader)
    if key_type == ALG_RSA:
        key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = _rsa_key(reader)
    elif key_type == ALG_ECC:
        key = _ecc_key(reader)
    else:
        raise EvidenceError("unsupported key type")
    reader.end()
    name = struct.pack(">H", name_alg) + digest(name_alg, area)
    return TpmPublic(key_type, name_alg, attributes, key, name, symmetric, scheme)

