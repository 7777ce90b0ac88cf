"""One entry point for cloud identity evidence: check its shape, pick the verifier, bind it.

The agent sends what `agent.cloud.fetch_evidence` returns, as is:

* ``{"kind": "aws", "document": "<the document text>", "rsa2048": "<base64>"}``
* ``{"kind": "gcp", "token": "<compact JWT>"}``
* ``{"kind": "azure", "signature": "<base64 PKCS#7>"}``

The anchors come from tenant settings (`CloudAnchors`); `challenge` is the single-use challenge
the gateway issued to this agent and `public_key` the raw enrolment public key it presents. GCP
and Azure evidence must name both; AWS evidence cannot, so the caller applies
`aws.check_first_use` to what this returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.crypto.cloud_binding import azure_nonce, gcp_audience

from .aws import verify_aws
from .azure import verify_azure
from .base import EvidenceError, Verified
from .gcp import verify_gcp

_FIELDS = {"aws": {"kind", "document", "rsa2048"}, "gcp": {"kind", "token"}, "azure": {"kind", "signature"}}


class CloudAnchors(BaseModel):
    """Trust anchors for cloud identity, held in tenant settings. A cloud left empty is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aws_region_certs: dict[str, str] = Field(default_factory=dict, description="AWS region → pinned rsa2048 certificate (PEM)")
    gcp_jwks: dict[str, Any] = Field(default_factory=dict, description="Google's JWKS for identity tokens")
    azure_roots: tuple[str, ...] = Field(default=(), description="Root certificates (PEM) for Azure's attested data")
    azure_intermediates: tuple[str, ...] = Field(default=(), description="Intermediate certificates (PEM), if not carried")


def verify_cloud_evidence(evidence: Mapping[str, Any], *, anchors: CloudAnchors, challenge: str, public_key: bytes,
                          now: datetime) -> Verified:
    """Verify one piece of cloud identity evidence for an agent holding `public_key`, answering `challenge`."""
    kind = evidence.get("kind") if isinstance(evidence, Mapping) else None
    if kind not in _FIELDS or set(evidence) != _FIELDS[kind] or not all(isinstance(v, str) for v in evidence.values()):
        raise EvidenceError("evidence must be one of: aws {document, rsa2048}, gcp {token}, azure {signature}")
    try:
        audience, nonce = gcp_audience(challenge, public_key), azure_nonce(challenge, public_key)
    except ValueError:
        raise EvidenceError("no valid challenge or public key to bind the evidence to") from None
    if kind == "aws":
        if not anchors.aws_region_certs:
            raise EvidenceError("no AWS region certificates configured")
        return verify_aws(evidence["document"].encode("utf-8"), evidence["rsa2048"],
                          region_certs=anchors.aws_region_certs, now=now)
    if kind == "gcp":
        if not anchors.gcp_jwks:
            raise EvidenceError("no GCP JWKS configured")
        return verify_gcp(evidence["token"], jwks=anchors.gcp_jwks, audience=audience, now=now)
    return verify_azure(evidence["signature"], roots=anchors.azure_roots, intermediates=anchors.azure_intermediates,
                        nonce=nonce, now=now)
