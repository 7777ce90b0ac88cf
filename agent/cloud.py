"""Fetch this VM's cloud identity evidence from its metadata service, for the gateway to verify.

* AWS (IMDSv2): PUT a session token, then read the instance identity document and its
  `rsa2048` CMS signature with that token.
* GCP: the instance identity token (`format=full`) for an audience bound to the server's
  challenge and this agent's key.
* Azure: the attested document for a nonce bound to the same.

The evidence returned is plain JSON to send as is: ``{"kind": "aws", "document", "rsa2048"}``,
``{"kind": "gcp", "token"}`` or ``{"kind": "azure", "signature"}``. Base URLs are configurable
(tests run local metadata servers); timeouts are short since the service is link-local;
redirects are never followed and no proxy is used. Errors say what failed and how, never what
the metadata service answered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

import aiohttp

from shared.crypto.cloud_binding import azure_nonce, gcp_audience

Cloud = Literal["aws", "gcp", "azure"]
AWS_BASE_URL = "http://169.254.169.254"
GCP_BASE_URL = "http://metadata.google.internal"
AZURE_BASE_URL = "http://169.254.169.254"
DEFAULT_BASE_URLS: dict[str, str] = {"aws": AWS_BASE_URL, "gcp": GCP_BASE_URL, "azure": AZURE_BASE_URL}
DEFAULT_TIMEOUT_SECONDS = 3.0
IMDS_TOKEN_TTL_SECONDS = 60
AZURE_API_VERSION = "2021-02-01"
MAX_RESPONSE_BYTES = 64 * 1024

AWS_TOKEN_PATH = "/latest/api/token"
AWS_DOCUMENT_PATH = "/latest/dynamic/instance-identity/document"
AWS_RSA2048_PATH = "/latest/dynamic/instance-identity/rsa2048"
GCP_IDENTITY_PATH = "/computeMetadata/v1/instance/service-accounts/default/identity"
AZURE_ATTESTED_PATH = "/metadata/attested/document"


class CloudMetadataError(Exception):
    """The metadata service could not be reached or gave no usable evidence; says which and why."""


async def fetch_evidence(cloud: Cloud, *, challenge: str, public_key: bytes, base_url: str | None = None,
                         timeout: float = DEFAULT_TIMEOUT_SECONDS) -> dict[str, str]:
    """The evidence for `cloud`, bound (GCP, Azure) to the server's `challenge` and this agent's raw public key."""
    if cloud not in DEFAULT_BASE_URLS:
        raise ValueError("cloud must be aws, gcp or azure")
    base = (base_url or DEFAULT_BASE_URLS[cloud]).rstrip("/")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout, connect=min(1.0, timeout))) as session:
        if cloud == "aws":
            return await fetch_aws(session, base)
        if cloud == "gcp":
            return await fetch_gcp(session, base, audience=gcp_audience(challenge, public_key))
        return await fetch_azure(session, base, nonce=azure_nonce(challenge, public_key))


async def fetch_aws(session: aiohttp.ClientSession, base: str) -> dict[str, str]:
    """IMDSv2: a session token first, then the document and its `rsa2048` signature with it."""
    token = await _read(session, "PUT", base + AWS_TOKEN_PATH, "AWS IMDSv2 token",
                        headers={"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_SECONDS)})
    headers = {"X-aws-ec2-metadata-token": token.strip()}
    document = await _read(session, "GET", base + AWS_DOCUMENT_PATH, "AWS identity document", headers=headers)
    rsa2048 = await _read(session, "GET", base + AWS_RSA2048_PATH, "AWS identity signature", headers=headers)
    return {"kind": "aws", "document": document, "rsa2048": rsa2048.strip()}


async def fetch_gcp(session: aiohttp.ClientSession, base: str, *, audience: str) -> dict[str, str]:
    """The instance identity token for `audience`, with the instance's details (`format=full`)."""
    token = await _read(session, "GET", base + GCP_IDENTITY_PATH, "GCP identity token",
                        headers={"Metadata-Flavor": "Google"}, params={"audience": audience, "format": "full"},
                        expect_header=("Metadata-Flavor", "Google"))
    return {"kind": "gcp", "token": token.strip()}


async def fetch_azure(session: aiohttp.ClientSession, base: str, *, nonce: str) -> dict[str, str]:
    """The attested document for `nonce`: Azure's PKCS#7 signature over the VM's identity and the nonce."""
    body = await _read(session, "GET", base + AZURE_ATTESTED_PATH, "Azure attested document",
                       headers={"Metadata": "true"}, params={"api-version": AZURE_API_VERSION, "nonce": nonce})
    try:
        reply = json.loads(body)
    except ValueError:
        raise CloudMetadataError("Azure attested document: the reply is not JSON") from None
    signature = reply.get("signature") if isinstance(reply, dict) else None
    if not isinstance(signature, str) or reply.get("encoding") != "pkcs7":
        raise CloudMetadataError("Azure attested document: the reply holds no PKCS#7 signature")
    return {"kind": "azure", "signature": signature}


async def _read(session: aiohttp.ClientSession, method: str, url: str, what: str, *, headers: Mapping[str, str],
                params: Mapping[str, str] | None = None, expect_header: tuple[str, str] | None = None) -> str:
    try:
        async with session.request(method, url, headers=dict(headers), params=params, allow_redirects=False) as response:
            if response.status != 200:
                raise CloudMetadataError(f"{what}: the metadata service answered HTTP {response.status}")
            if expect_header and response.headers.get(expect_header[0]) != expect_header[1]:
                raise CloudMetadataError(f"{what}: the reply lacks {expect_header[0]}: {expect_header[1]}")
            body = await response.content.read(MAX_RESPONSE_BYTES + 1)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise CloudMetadataError(f"{what}: the metadata service is unreachable ({type(exc).__name__})") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise CloudMetadataError(f"{what}: the reply is larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CloudMetadataError(f"{what}: the reply is not UTF-8 text") from None
    if not text.strip():
        raise CloudMetadataError(f"{what}: the reply is empty")
    return text
