"""A TPM quote as a key request or heartbeat carries it: ``{"kind": "tpm", "attest", "signature", "pcrs"}``.

The quote's qualifying data is SHA-256(server nonce ‖ the request's one-time public key): the
server nonce is the single-use challenge the device fetched (``POST /v1/agent/challenges``,
base64url of 32 bytes, decoded), the one-time key the request's ``ephemeral_public_key`` (a
heartbeat, which has none, uses the device's own public key). The AK is the one the device
registered by credential activation (``views_tpm.py``). Facts: ``integrity.pcr.<N>`` (hex),
``integrity.reset_count``, ``integrity.restart_count`` and, from the gateway's record of the last
quote, ``integrity.boot`` (``none``, ``rebooted``, ``resumed``); counters going back are refused.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .base import EvidenceContext, EvidenceError, Verified
from .tpm import boot_change, quote_from_json, verify_quote
from .tpm_enrol import attestation_key

NONCE_BYTES = 32


def challenge_nonce(challenge: str | None) -> bytes:
    """The 32 bytes a challenge string stands for; EvidenceError when there is none."""
    try:
        nonce = base64.urlsafe_b64decode((challenge or "") + "=" * (-len(challenge or "") % 4))
    except (binascii.Error, ValueError):
        nonce = b""
    if len(nonce) != NONCE_BYTES:
        raise EvidenceError("a TPM quote must answer a challenge")
    return nonce


def verify_tpm_evidence(evidence: Mapping[str, Any], context: EvidenceContext, *, ak_public: str,
                        counters: Mapping[str, Any] | None) -> Verified:
    """The quote verified against the device's AK, this request's nonce and the last boot counters."""
    if set(evidence) != {"kind", "attest", "signature", "pcrs"}:
        raise EvidenceError("tpm evidence must hold exactly: kind, attest, signature, pcrs")
    try:
        one_time = base64.b64decode(context.request_public_key or context.public_key or "", validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceError("the request has no one-time key to bind the quote to") from None
    quote = quote_from_json({k: v for k, v in evidence.items() if k != "kind"})
    verified = verify_quote(quote, ak=attestation_key(base64.b64decode(ak_public)),
                            server_nonce=challenge_nonce(context.challenge), request_public_key=one_time)
    integrity = verified.facts["integrity"]
    change = boot_change(counters, integrity)
    if change == "rolled_back":
        raise EvidenceError("TPM boot counters went back: restored TPM state or another TPM")
    return replace(verified, facts={"integrity": {**integrity, "boot": change}})
