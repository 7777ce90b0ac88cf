"""Captures the TPM structures the unit tests parse, from a real software TPM (swtpm + tpm2-tools).

    PYTHONPATH=. python tests/capture_tpm_fixtures.py > tests/unit/tpm_fixtures.json

For an ECC (ECDSA P-256) and an RSA (RSASSA 2048) attestation key: the EK and AK public areas
(TPM2B_PUBLIC), the AK name as tpm2-tools computed it, and a quote over PCRs 0, 7 and 16 (16 first
extended, so one value is not zero) whose qualifying data binds SERVER_NONCE and REQUEST_PUBLIC_KEY;
and an ECDSA P-256 device key in the TPM with the AK's certification of it.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path

from agent.tpm import Tpm, quote_nonce
from tests.swtpm import SoftwareTpm

SERVER_NONCE = bytes(range(32))
REQUEST_PUBLIC_KEY = bytes(range(100, 132))
PCRS = (0, 7, 16)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def capture(algorithm: str, state: Path) -> dict[str, object]:
    software = SoftwareTpm(state).start()
    try:
        tpm = Tpm(software.tcti)
        keys = tpm.ensure_keys(algorithm)  # type: ignore[arg-type]
        tpm.extend_pcr(16, b"strongroom fixture measurement")
        quote = tpm.quote(quote_nonce(SERVER_NONCE, REQUEST_PUBLIC_KEY), PCRS)
        device_key = tpm.ensure_device_key()
    finally:
        software.stop()
    return {"ek_public": _b64(keys.ek_public), "ak_public": _b64(keys.ak_public), "ak_name": keys.ak_name.hex(),
            "quote": quote.to_json(), "device_key": device_key.to_json()}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fixtures = {"server_nonce": SERVER_NONCE.hex(), "request_public_key": REQUEST_PUBLIC_KEY.hex(),
                    "ecc": capture("ecc", Path(tmp, "ecc")), "rsa": capture("rsa", Path(tmp, "rsa"))}
    json.dump(fixtures, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
