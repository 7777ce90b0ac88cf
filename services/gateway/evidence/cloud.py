"""Cloud identity evidence as the agent sends it, verified for the device and challenge at hand.

The agent sends what `agent.cloud.fetch_evidence` returns, as is:

* ``{"kind": "aws", "document": "<the document text>", "rsa2048": "<base64>"}``
* ``{"kind": "gcp", "token": "<compact JWT>"}``
* ``{"kind": "azure", "signature": "<base64 PKCS#7>"}``

Each ``verify_<cloud>_evidence(evidence, context, *, <anchors>)`` checks the shape and calls the
cloud's verifier; ``verifiers(anchors)`` binds them to the trust anchors held in tenant settings
(`CloudAnchors`), leaving out a cloud with none. The context carries ``now``, the device's
Ed25519 public key (base64 of the raw key, as enrolment registers it) and the single-use
``challenge`` the gateway issued. GCP and Azure evidence must name both; AWS evidence cannot, so
the caller applies `aws.check_first_use` to what it proves.

Every cloud's facts sit under ``identity`` with the names policies test (``cloud`` and
``account_id`` being the aliases of ``cloud_provider`` and ``account``): ``account_id`` (AWS
account, GCP project id, Azure subscription), ``instance_id``, ``region`` and ``zone`` (AWS, GCP),
``image_id`` (AWS), and a few of each cloud's own.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.crypto.cloud_binding import azure_nonce, gcp_audience

from .aws import verify_aws
from .azure import verify_azure
from .base import EvidenceError, Verified
from .gcp import verify_gcp

ED25519_PUBLIC_KEY_BYTES = 32
MAX_ANCHORS = 64
REGION = "^[a-z0-9-]{1,40}$"
_JWK_MEMBER = "^[A-Za-z0-9_]{1,20}$"
_JWK = {"type": "object", "propertyNames": {"pattern": _JWK_MEMBER}, "additionalProperties": {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}


class Context(Protocol):
    """What a cloud verifier reads from the request: the gateway's `EvidenceContext` has these."""

    @property
    def now(self) -> datetime: ...
    @property
    def public_key(self) -> str | None: ...
    @property
    def challenge(self) -> str | None: ...


@dataclass(frozen=True)
class BindingContext:
    """A minimal `Context`, for callers and tests outside the gateway's request flow."""

    now: datetime
    public_key: str | None = None
    challenge: str | None = None


class CloudAnchors(BaseModel):
    """Trust anchors for cloud identity, held in tenant settings. A cloud left empty is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aws_region_certs: dict[str, str] = Field(default_factory=dict, description="AWS region → pinned rsa2048 certificate (PEM)",
                                             json_schema_extra={"propertyNames": {"pattern": REGION}})
    gcp_jwks: dict[str, Any] = Field(default_factory=dict, description="Google's JWKS for identity tokens",
                                     json_schema_extra={"properties": {"keys": {"type": "array", "items": _JWK}},
                                                        "additionalProperties": False})
    azure_roots: tuple[str, ...] = Field(default=(), description="Root certificates (PEM) for Azure's attested data")
    azure_intermediates: tuple[str, ...] = Field(default=(), description="Intermediate certificates (PEM), if not carried")

    @field_validator("aws_region_certs")
    @classmethod
    def _region_certs(cls, certs: dict[str, str]) -> dict[str, str]:
        if (len(certs) > MAX_ANCHORS or not all(re.fullmatch(REGION, r) for r in certs)
                or not all(_is_certificate(pem) for pem in certs.values())):
            raise ValueError(f"each region (such as eu-west-1) needs one PEM certificate (at most {MAX_ANCHORS} regions)")
        return certs

    @field_validator("azure_roots", "azure_intermediates")
    @classmethod
    def _certificates(cls, pems: tuple[str, ...]) -> tuple[str, ...]:
        if len(pems) > MAX_ANCHORS or not all(_is_certificate(pem) for pem in pems):
            raise ValueError(f"each entry must be a PEM certificate (at most {MAX_ANCHORS})")
        return pems

    @field_validator("gcp_jwks")
    @classmethod
    def _jwks(cls, jwks: dict[str, Any]) -> dict[str, Any]:
        keys = jwks.get("keys") if jwks else []
        if (set(jwks) - {"keys"} or not isinstance(keys, list) or len(keys) > MAX_ANCHORS
                or not all(isinstance(k, dict) and all(re.fullmatch(_JWK_MEMBER, m) for m in k) for k in keys)):
            raise ValueError(f"must be a JWKS: {{\"keys\": [...]}} with at most {MAX_ANCHORS} keys")
        return jwks


def _is_certificate(pem: Any) -> bool:
    try:
        x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, TypeError, AttributeError, UnicodeEncodeError):
        return False
    return True


Verifier = Callable[[Mapping[str, Any], Context], Verified]


def verifiers(anchors: CloudAnchors) -> dict[str, Verifier]:
    """A verifier per cloud whose anchors are configured, bound to them."""
    found: dict[str, Verifier] = {}
    if anchors.aws_region_certs:
        found["aws"] = partial(verify_aws_evidence, region_certs=anchors.aws_region_certs)
    if anchors.gcp_jwks:
        found["gcp"] = partial(verify_gcp_evidence, jwks=anchors.gcp_jwks)
    if anchors.azure_roots:
        found["azure"] = partial(verify_azure_evidence, roots=anchors.azure_roots, intermediates=anchors.azure_intermediates)
    return found


def verify_cloud_evidence(evidence: Mapping[str, Any], context: Context, *, anchors: CloudAnchors) -> Verified:
    """Whichever cloud's evidence this is, verified against that cloud's anchors."""
    kind = evidence.get("kind") if isinstance(evidence, Mapping) else None
    verifier = verifiers(anchors).get(kind) if isinstance(kind, str) else None
    if verifier is None:
        raise EvidenceError("no trust anchors configured for this kind of evidence")
    return verifier(evidence, context)


def verify_aws_evidence(evidence: Mapping[str, Any], context: Context, *, region_certs: Mapping[str, str]) -> Verified:
    fields = _fields(evidence, "aws", "document", "rsa2048")
    return verify_aws(fields["document"].encode("utf-8"), fields["rsa2048"], region_certs=region_certs, now=context.now)


def verify_gcp_evidence(evidence: Mapping[str, Any], context: Context, *, jwks: Mapping[str, Any]) -> Verified:
    token = _fields(evidence, "gcp", "token")["token"]
    return verify_gcp(token, jwks=jwks, audience=gcp_audience(*_binding(context)), now=context.now)


def verify_azure_evidence(evidence: Mapping[str, Any], context: Context, *, roots: tuple[str, ...],
                          intermediates: tuple[str, ...] = ()) -> Verified:
    signature = _fields(evidence, "azure", "signature")["signature"]
    return verify_azure(signature, roots=roots, intermediates=intermediates, nonce=azure_nonce(*_binding(context)),
                        now=context.now)


def _fields(evidence: Mapping[str, Any], kind: str, *names: str) -> dict[str, str]:
    if (not isinstance(evidence, Mapping) or evidence.get("kind") != kind or set(evidence) != {"kind", *names}
            or not all(isinstance(evidence[n], str) for n in names)):
        raise EvidenceError(f"{kind} evidence must hold exactly: kind, {', '.join(names)}")
    return {n: evidence[n] for n in names}


def _binding(context: Context) -> tuple[str, bytes]:
    """(challenge, raw public key) the evidence must be bound to; refused when either is missing."""
    try:
        raw = base64.b64decode(context.public_key or "", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not context.challenge or len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise EvidenceError("evidence must answer a challenge for the device's key")
    try:
        gcp_audience(context.challenge, raw)
    except ValueError:
        raise EvidenceError("evidence must answer a challenge for the device's key") from None
    return context.challenge, raw
