"""TPM structures for unit tests: ones captured from swtpm (tpm_fixtures.json, see
tests/capture_tpm_fixtures.py) and synthetic quotes signed by a software key, for the checks a real
TPM never lets one violate (another PCR bank, a selection that does not match its digest)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from services.gateway.evidence.tpm import Quote, qualifying_data, quote_from_json
from services.gateway.evidence.tpm_wire import (
    ALG_ECC,
    ALG_ECDSA,
    ALG_SHA256,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    TpmPublic,
    parse_public,
    tpm2b,
)

FIXTURES = json.loads((Path(__file__).parent / "tpm_fixtures.json").read_text())
SERVER_NONCE = bytes.fromhex(FIXTURES["server_nonce"])
REQUEST_PUBLIC_KEY = bytes.fromhex(FIXTURES["request_public_key"])


def captured(algorithm: str) -> tuple[TpmPublic, Quote]:
    """The AK and a quote over PCRs 0, 7, 16 captured from swtpm, for "ecc" or "rsa"."""
    sample = FIXTURES[algorithm]
    return parse_public(base64.b64decode(sample["ak_public"])), quote_from_json(sample["quote"])


def captured_public(algorithm: str, key: str) -> bytes:
    return base64.b64decode(FIXTURES[algorithm][key])


def altered(quote: Quote, **changes) -> Quote:
    return replace(quote, **changes)


def software_ak() -> tuple[ec.EllipticCurvePrivateKey, TpmPublic]:
    """A P-256 key standing in for an AK: what an attacker without the TPM could sign with."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = TpmPublic(ALG_ECC, ALG_SHA256, 0x00050072, private.public_key(), b"\x00\x0bsoftware", None, (ALG_ECDSA, ALG_SHA256))
    return private, public


def selection_bytes(selections: list[tuple[int, list[int]]]) -> bytes:
    out = struct.pack(">I", len(selections))
    for hash_alg, pcrs in selections:
        bitmap = bytearray(3)
        for pcr in pcrs:
            bitmap[pcr // 8] |= 1 << (pcr % 8)
        out += struct.pack(">HB", hash_alg, 3) + bytes(bitmap)
    return out


def attest_bytes(*, extra: bytes, selections: list[tuple[int, list[int]]], pcr_digest: bytes,
                 reset_count: int = 1, restart_count: int = 0, magic: int = TPM_GENERATED_VALUE,
                 kind: int = TPM_ST_ATTEST_QUOTE) -> bytes:
    return (struct.pack(">IH", magic, kind) + tpm2b(b"\x00\x0bsigner") + tpm2b(extra)
            + struct.pack(">QIIB", 1234, reset_count, restart_count, 1) + struct.pack(">Q", 0x20191023)
            + selection_bytes(selections) + tpm2b(pcr_digest))


def ecdsa_signature(private: ec.EllipticCurvePrivateKey, message: bytes, hash_alg: int = ALG_SHA256) -> bytes:
    r, s = decode_dss_signature(private.sign(message, ec.ECDSA(hashes.SHA256())))
    return struct.pack(">HH", ALG_ECDSA, hash_alg) + tpm2b(r.to_bytes(32, "big")) + tpm2b(s.to_bytes(32, "big"))


def synthetic_quote(private: ec.EllipticCurvePrivateKey, pcrs: dict[int, bytes], *,
                    selections: list[tuple[int, list[int]]] | None = None, digest_of: list[int] | None = None,
                    extra: bytes | None = None, **fields) -> Quote:
    """A quote as a TPM would build it (unless told otherwise), signed with `private`."""
    selections = selections if selections is not None else [(ALG_SHA256, sorted(pcrs))]
    digest_of = digest_of if digest_of is not None else sorted(pcrs)
    pcr_digest = hashlib.sha256(b"".join(pcrs[pcr] for pcr in digest_of)).digest()
    extra = extra if extra is not None else qualifying_data(SERVER_NONCE, REQUEST_PUBLIC_KEY)
    attest = attest_bytes(extra=extra, selections=selections, pcr_digest=pcr_digest, **fields)
    return Quote(attest, ecdsa_signature(private, attest), pcrs)
