"""TPM quote verification: a device's PCR values, signed by its attestation key over our nonce.

A release or heartbeat carries a fresh quote (`TPM2_Quote`) whose qualifying data is
`SHA-256(server nonce ‖ the request's one-time public key)`, so a quote cannot be replayed nor moved
to another request. `verify_quote` checks, with `cryptography` only:

1. the signature over the TPMS_ATTEST bytes, by the AK registered at enrolment (a restricted key,
   which the TPM never lets sign anything that starts with TPM_GENERATED_VALUE but its own quotes);
2. the magic and type of the TPMS_ATTEST, and that it holds nothing after its last field;
3. `extraData` equals the qualifying data above (constant-time);
4. the PCR selection is the SHA-256 bank, covers every PCR the caller requires, and matches the
   reported values exactly; `pcrDigest` is SHA-256 of those values in selection order.

It returns the PCR values and the TPM's reset and restart counts as attested facts. `boot_change`
tells a reboot from the counters, and `golden_mismatches` compares PCR values to golden ones.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .base import EvidenceError, Verified
from .tpm_wire import (
    ALG_ECDSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    ALG_SHA256,
    HASHES,
    QuoteAttest,
    Signature,
    TpmPublic,
    b64_field,
    parse_quote_attest,
    parse_signature,
)

NONCE_BYTES = 32   # the server's nonce has a fixed size, so nonce ‖ key splits one way only
PCR_BANK = ALG_SHA256
PCR_COUNT = 24
MAX_QUOTE_BYTES = 2048
MAX_SIGNATURE_BYTES = 1024


def qualifying_data(server_nonce: bytes, request_public_key: bytes) -> bytes:
    """What the agent passes to `TPM2_Quote` as qualifying data: SHA-256(nonce ‖ one-time public key)."""
    if len(server_nonce) != NONCE_BYTES:
        raise ValueError(f"the server nonce must be {NONCE_BYTES} bytes")
    return hashlib.sha256(server_nonce + request_public_key).digest()


def subject_of(ak: TpmPublic) -> str:
    return f"tpm:{ak.name.hex()}"


@dataclass(frozen=True)
class Quote:
    """What a device sends: the TPMS_ATTEST and TPMT_SIGNATURE as the TPM made them, and its PCR values."""

    attest: bytes
    signature: bytes
    pcrs: Mapping[int, bytes]   # SHA-256 bank: PCR index → 32-byte value


def _pcr_values(value: Any) -> dict[int, bytes]:
    if not isinstance(value, Mapping) or not 0 < len(value) <= PCR_COUNT:
        raise EvidenceError("tpm.pcrs must map PCR numbers to values")
    pcrs: dict[int, bytes] = {}
    for key, hex_value in value.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and key == str(int(key)) and int(key) < PCR_COUNT):
            raise EvidenceError("tpm.pcrs has a bad PCR number")
        if not isinstance(hex_value, str) or len(hex_value) != 64:
            raise EvidenceError("tpm.pcrs has a bad value")
        try:
            pcrs[int(key)] = bytes.fromhex(hex_value)
        except ValueError:
            raise EvidenceError("tpm.pcrs has a bad value") from None
    return pcrs


def quote_from_json(doc: Any) -> Quote:
    """`{"attest": b64, "signature": b64, "pcrs": {"0": hex, ...}}`, the agent's `Quote.to_json()`."""
    if not isinstance(doc, Mapping):
        raise EvidenceError("tpm must be an object")
    return Quote(b64_field(doc.get("attest"), "tpm.attest", MAX_QUOTE_BYTES),
                 b64_field(doc.get("signature"), "tpm.signature", MAX_SIGNATURE_BYTES),
                 _pcr_values(doc.get("pcrs")))


def check_ak_signature(ak: TpmPublic, signature: Signature, message: bytes) -> None:
    """The TPMT_SIGNATURE over `message` is the AK's own, by the scheme that matches its key type."""
    hash_alg = HASHES[signature.hash_alg]()
    key = ak.public_key
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and signature.alg == ALG_ECDSA:
            key.verify(signature.value, message, ec.ECDSA(hash_alg))
        elif isinstance(key, rsa.RSAPublicKey) and signature.alg == ALG_RSASSA:
            key.verify(signature.value, message, padding.PKCS1v15(), hash_alg)
        elif isinstance(key, rsa.RSAPublicKey) and signature.alg == ALG_RSAPSS:
            key.verify(signature.value, message, padding.PSS(padding.MGF1(hash_alg), padding.PSS.AUTO), hash_alg)
        else:
            raise EvidenceError("signature does not match the attestation key")
    except InvalidSignature:
        raise EvidenceError("signature invalid") from None


def _selected_pcrs(attest: QuoteAttest) -> list[int]:
    if not attest.selections or any(s.hash_alg != PCR_BANK for s in attest.selections):
        raise EvidenceError("quote must select the SHA-256 PCR bank only")
    pcrs = [pcr for selection in attest.selections for pcr in selection.pcrs]
    if len(set(pcrs)) != len(pcrs) or not pcrs:
        raise EvidenceError("quote PCR selection invalid")
    return pcrs


def verify_quote(quote: Quote, *, ak: TpmPublic, server_nonce: bytes, request_public_key: bytes,
                 required_pcrs: Iterable[int] = ()) -> Verified:
    """The quote's PCR values and boot counters as attested facts, or EvidenceError saying which check failed."""
    if len(quote.attest) > MAX_QUOTE_BYTES or len(quote.signature) > MAX_SIGNATURE_BYTES:
        raise EvidenceError("quote too large")
    check_ak_signature(ak, parse_signature(quote.signature), quote.attest)
    attest = parse_quote_attest(quote.attest)
    if not hmac.compare_digest(attest.extra_data, qualifying_data(server_nonce, request_public_key)):
        raise EvidenceError("quote not bound to this request's nonce")
    selected = _selected_pcrs(attest)
    if not set(required_pcrs) <= set(selected):
        raise EvidenceError("quote does not cover the required PCRs")
    if set(quote.pcrs) != set(selected):
        raise EvidenceError("reported PCRs differ from the quoted selection")
    computed = hashlib.sha256(b"".join(quote.pcrs[pcr] for pcr in selected)).digest()
    if not hmac.compare_digest(computed, attest.pcr_digest):
        raise EvidenceError("PCR values do not match the quoted digest")
    facts = {"integrity": {
        "pcr": {str(pcr): quote.pcrs[pcr].hex() for pcr in sorted(selected)},
        "reset_count": attest.reset_count,
        "restart_count": attest.restart_count,
    }}
    return Verified(facts=facts, provenance="attested", subject=subject_of(ak))


BootChange = Literal["none", "rebooted", "resumed", "rolled_back"]


def boot_change(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> BootChange:
    """How the TPM's boot counters moved since the last accepted quote (`integrity` facts of each).

    resetCount grows on every TPM Reset (a reboot); restartCount on a TPM Restart or Resume
    (hibernation) within one boot. A counter going back means the TPM's state was rolled back or
    the TPM is not the same one: never innocent.
    """
    if previous is None:
        return "none"
    reset_before, reset_now = int(previous["reset_count"]), int(current["reset_count"])
    if reset_now > reset_before:
        return "rebooted"
    if reset_now < reset_before:
        return "rolled_back"
    restart_before, restart_now = int(previous["restart_count"]), int(current["restart_count"])
    if restart_now > restart_before:
        return "resumed"
    return "rolled_back" if restart_now < restart_before else "none"


def golden_mismatches(pcrs: Mapping[str, str], golden: Mapping[str, str | Iterable[str]]) -> list[str]:
    """Reasons, one per PCR, where the attested values (`integrity.pcr`) differ from the golden ones.

    `golden` maps a PCR number ("7") to the one allowed hex value or a list of allowed values.
    An empty list means the device matches.
    """
    reasons = []
    for pcr in sorted(golden, key=int):
        allowed = golden[pcr]
        allowed_values = {allowed.lower()} if isinstance(allowed, str) else {value.lower() for value in allowed}
        value = pcrs.get(str(int(pcr)))
        if value is None:
            reasons.append(f"PCR {int(pcr)} was not quoted")
        elif value.lower() not in allowed_values:
            reasons.append(f"PCR {int(pcr)} differs from its golden value")
    return reasons
