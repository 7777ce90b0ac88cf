"""TPM attestation cost on the server, on one core: µs per quote verification (the request's JSON
quote decoded, TPMS_ATTEST and TPMT_SIGNATURE parsed, AK signature, nonce and PCR digest checked),
for an ECDSA P-256 and an RSASSA-2048 attestation key; and, for enrolment, µs per MakeCredential.

The quotes are the ones swtpm produced for the unit tests (tests/unit/tpm_fixtures.json: PCRs 0, 7
and 16); the work per quote does not depend on where it came from.

Run: python bench/tpm_bench.py [quotes]   (default 5000 per algorithm; a few seconds)
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.gateway.evidence.tpm import quote_from_json, verify_quote
from services.gateway.evidence.tpm_credential import make_credential
from services.gateway.evidence.tpm_enrol import attestation_key, endorsement_key

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = json.loads((ROOT / "tests" / "unit" / "tpm_fixtures.json").read_text())


def per_call_us(call, n: int) -> float:
    call()   # warm
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    nonce, request_key = bytes.fromhex(FIXTURES["server_nonce"]), bytes.fromhex(FIXTURES["request_public_key"])
    print(f"TPM quote verification, one core, {n} quotes per key (cryptography only):")
    for algorithm, label in (("ecc", "ECDSA P-256 AK"), ("rsa", "RSASSA-2048 AK")):
        sample = FIXTURES[algorithm]
        stored_ak, document = base64.b64decode(sample["ak_public"]), sample["quote"]
        ak = attestation_key(stored_ak)

        def verify(ak=ak, document=document) -> None:
            verified = verify_quote(quote_from_json(document), ak=ak, server_nonce=nonce, request_public_key=request_key,
                                    required_pcrs=(0, 7))
            assert verified.provenance == "attested"

        def verify_from_stored(stored_ak=stored_ak, document=document) -> None:
            verify(attestation_key(stored_ak), document)

        print(f"  {label:16s} {per_call_us(verify, n):8.1f} us/quote   "
              f"({per_call_us(verify_from_stored, n):.1f} us with the AK parsed from its stored TPM2B_PUBLIC)")
    ek = endorsement_key(base64.b64decode(FIXTURES["ecc"]["ek_public"]))
    ak = attestation_key(base64.b64decode(FIXTURES["ecc"]["ak_public"]))
    enrolments = max(n // 10, 100)
    per = per_call_us(lambda: make_credential(ek, ak.name, bytes(32)), enrolments)
    print(f"  MakeCredential (RSA-2048 EK, at enrolment) {per:8.1f} us")


if __name__ == "__main__":
    main()
