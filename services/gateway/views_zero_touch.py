"""Zero-touch enrolment: a VM of an account (AWS account, GCP project, Azure subscription) the
tenant named, and of an allowed image if it named any, enrols with its verified cloud identity
instead of an enrollment token.

The tenant opts in with ``zero_touch`` in its settings (a change waits for a second admin).
GCP and Azure evidence answers a challenge from ``POST /v1/agent/enroll/zero-touch/challenges``
(bound to the new device key); an AWS document enrols its instance once (trust on first use).
Anything short of that answers as a bad credential does (401), saying nothing of the tenant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import Field, field_validator

from shared import events
from shared.commands import NAME, Strict, base64_of, raw32_base64
from shared.rpc import ProblemError

from . import schemas
from .evidence.base import EvidenceContext, Verified
from .state import _gw, _now, body_as
from .views_agents import register_device
from .views_evidence import FirstUseRefused, issue_challenge, verify

HOLDER = "zero-touch"
TENANT_ID = r"^ten_[0-9a-f]{32}$"


class ZeroTouchChallengeBody(Strict):
    tenant_id: str = Field(pattern=TENANT_ID)


class ZeroTouchEnroll(Strict):
    tenant_id: str = Field(pattern=TENANT_ID)
    name: str = Field(pattern=NAME)
    public_key: str = Field(description="Ed25519 public key, base64 of the raw 32 bytes",
                            json_schema_extra=base64_of(32, exactly=True))
    evidence: schemas.Evidence
    challenge: schemas.Challenge | None = None

    @field_validator("public_key")
    @classmethod
    def _ed25519(cls, value: str) -> str:
        return raw32_base64(value, "public_key")


def admitted(rule: Mapping[str, Any], verified: Verified | None) -> bool:
    """Whether the verified identity is of an account (and image) the tenant's rule names."""
    identity = (verified.facts.get("identity") if verified is not None else None) or {}
    account = identity.get("account_id", identity.get("account"))
    if account is None or account not in rule.get("accounts", []):
        return False
    images = rule.get("image_ids") or []
    return not images or identity.get("image_id") in images


async def _rule(request: web.Request, tenant_id: str) -> dict[str, Any]:
    tenant = await _gw(request).operators.tenant(tenant_id)
    rule = ((tenant or {}).get("settings") or {}).get("zero_touch")
    if not rule or (tenant or {}).get("status", "active") != "active":
        raise ProblemError(401, "Unauthorized", "missing or invalid credentials")
    return rule


async def zero_touch_challenge(request: web.Request) -> web.Response:
    """Agent (no credential): a challenge for zero-touch enrolment evidence, where the tenant allows it."""
    body = await body_as(request, ZeroTouchChallengeBody)
    await _rule(request, body.tenant_id)
    return await issue_challenge(request, body.tenant_id, HOLDER)


async def zero_touch_enroll(request: web.Request) -> web.Response:
    """Agent (its cloud identity, no token): enrol a VM of an account the tenant allows."""
    body = await body_as(request, ZeroTouchEnroll)
    rule = await _rule(request, body.tenant_id)
    device_id = events.new_id("dev_")
    context = EvidenceContext(tenant_id=body.tenant_id, now=_now(), device_id=device_id, public_key=body.public_key,
                              challenge=body.challenge)
    try:
        verified, summary = await verify(request, body.evidence, context, holder=HOLDER,
                                         admit=lambda proved: admitted(rule, proved))
    except FirstUseRefused:
        raise ProblemError(403, "Forbidden", "the instance this evidence names is already enrolled", "evidence") from None
    if not summary.verified or not admitted(rule, verified):
        raise ProblemError(401, "Unauthorized", "missing or invalid credentials")
    enrollment = {"enrollment_id": HOLDER, "groups": rule.get("groups", [])}
    return await register_device(request, body.tenant_id, device_id, body.name, body.public_key, enrollment, summary,
                                 auth="zero_touch", verified=verified)
