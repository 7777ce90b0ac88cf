"""Verification cost per request for each cloud identity evidence kind, in microseconds on one
core: AWS (CMS SignedData, RSA-2048, pinned region certificate), GCP (RS256 JWT against a JWKS,
parsed once per distinct JWKS as in steady state) and Azure (PKCS#7 chained to a root through an
intermediate). The evidence is minted as the clouds mint it, with keys made here.

Run: python bench/identity_bench.py [verifications]   (default 2000 each; a few seconds in all)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.gateway.evidence.aws import verify_aws
from services.gateway.evidence.azure import azure_nonce, verify_azure
from services.gateway.evidence.gcp import gcp_audience, verify_gcp
from tests import cloud_fixtures as fx

CHALLENGE, KEY = "challenge-0123456789abcdef", bytes(range(32))


def _cases() -> dict[str, Callable[[], object]]:
    document = fx.aws_document()
    rsa2048, certs = fx.aws_sign(document), fx.aws_region_certs("eu-west-1", "us-east-1", "ap-south-1")
    audience = gcp_audience(CHALLENGE, KEY)
    token, jwks = fx.gcp_token(audience), fx.gcp_jwks("gcp-0", "gcp-1")
    nonce = azure_nonce(CHALLENGE, KEY)
    root, intermediate, _ = fx.azure_chain()
    signature, roots, mids = fx.azure_sign(fx.azure_document(nonce)), [fx.pem(root)], [fx.pem(intermediate)]
    return {
        "AWS CMS (rsa2048)": lambda: verify_aws(document, rsa2048, region_certs=certs, now=fx.NOW),
        "GCP JWT (RS256)": lambda: verify_gcp(token, jwks=jwks, audience=audience, now=fx.NOW),
        "Azure PKCS#7 + chain": lambda: verify_azure(signature, roots=roots, intermediates=mids, nonce=nonce, now=fx.NOW),
    }


def _measure(verify: Callable[[], object], n: int) -> tuple[float, float]:
    """(median of 5 rounds, best round), µs per verification."""
    for _ in range(max(10, n // 20)):
        verify()
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n // 5):
            verify()
        rounds.append((time.perf_counter() - start) / (n // 5) * 1e6)
    return statistics.median(rounds), min(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=2000)
    n = max(parser.parse_args().n, 5)
    print(f"Cloud identity verification, one core, {n} verifications each (µs per verification)")
    print(f"{'evidence':<24}{'median':>10}{'best':>10}{'per second':>12}")
    for name, verify in _cases().items():
        median, best = _measure(verify, n)
        print(f"{name:<24}{median:>10.0f}{best:>10.0f}{1e6 / median:>12,.0f}")


if __name__ == "__main__":
    main()
