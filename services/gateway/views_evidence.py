"""Evidence at the gateway: the single-use challenges agents answer, and verifying the evidence a
request carries against the gateway's verifiers and the tenant's own trust anchors.

A challenge is issued to one holder — a device (its signed request) or an enrollment (its token,
not spent by asking) — lives ``challenge_ttl_seconds`` and is consumed by the first request that
names it (a conditional delete). GCP and Azure evidence must be bound to it and to the device's
key. AWS identity documents carry no nonce, so an (account, instance) enrols once: a second
enrolment with the same document, or a document whose ``pendingTime`` went backwards, is refused
and recorded as an ``access.denied`` event (audited; the alerting rules see it).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from aiohttp import web
from pydantic import Field

from shared import events
from shared.commands import Strict
from shared.crypto import tokens
from shared.rpc import ProblemError

from . import evidence as proofs
from .evidence.aws import FirstUse, check_first_use
from .evidence.base import EvidenceContext, EvidenceError, Verified
from .evidence.cloud import CloudAnchors
from .evidence.cloud import verifiers as cloud_verifiers
from .evidence.tpm_request import verify_tpm_evidence
from .schemas import TOKEN_PATTERN
from .state import CORRELATION_ID, _gw, _json, _now, _principal, body_as

log = structlog.get_logger("strongroom.gateway")
CHALLENGE_BYTES = 32


class EnrollmentChallengeBody(Strict):
    enrollment_token: str = Field(min_length=10, max_length=200, pattern=TOKEN_PATTERN)


class FirstUseRefused(Exception):
    """An instance's identity document was presented again by someone else: refuse and alert."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def device_challenge(request: web.Request) -> web.Response:
    """Agent (signed): a single-use challenge bound to this device, for the evidence of its next request."""
    principal = _principal(request)
    return await issue_challenge(request, principal.tenant_id, principal.id)


async def enrollment_challenge(request: web.Request) -> web.Response:
    """Agent (enrollment token, not spent): a challenge bound to the enrollment, for enrolment evidence."""
    body = await body_as(request, EnrollmentChallengeBody)
    enrollment = await _gw(request).store.live_enrollment(tokens.digest(body.enrollment_token), _now())
    if enrollment is None:
        raise ProblemError(401, "Unauthorized", "missing or invalid credentials")
    return await issue_challenge(request, enrollment["tenant_id"], enrollment["enrollment_id"])


async def issue_challenge(request: web.Request, tenant_id: str, holder: str) -> web.Response:
    gw = _gw(request)
    challenge = base64.urlsafe_b64encode(secrets.token_bytes(CHALLENGE_BYTES)).decode("ascii").rstrip("=")
    expires_at = _now() + timedelta(seconds=gw.settings.challenge_ttl_seconds)
    await gw.store.evidence.insert_challenge(tenant_id, challenge, holder=holder, expires_at=expires_at)
    return _json({"challenge": challenge, "expires_at": expires_at}, 201)


async def verify(
    request: web.Request, evidence: dict[str, Any], context: EvidenceContext, *, holder: str,
    admit: Callable[[Verified], bool] | None = None,
) -> tuple[Verified | None, events.EvidenceSummary]:
    """What ``evidence`` proves for this request. A refused proof is not an error: the request goes
    on with claimed facts, and says why; only a replayed instance identity raises FirstUseRefused.
    ``admit`` refuses a proof before it is used (an instance's first use is not spent on it)."""
    gw = _gw(request)
    verifiers = await _verifiers(request, context.tenant_id)
    device = await gw.store.device(context.tenant_id, context.device_id) if evidence["kind"] == "tpm" else None
    tpm = (device or {}).get("tpm")
    if isinstance(tpm, dict):  # the AK it registered, and its last quote's boot counters
        verifiers["tpm"] = partial(verify_tpm_evidence, ak_public=tpm["ak_public"], counters=tpm.get("counters"))
    kind = evidence["kind"] if evidence["kind"] in verifiers else "unknown"  # never echo an unknown kind
    try:
        if context.challenge is not None and not await gw.store.evidence.take_challenge(
                context.tenant_id, context.challenge, holder=holder, now=context.now):
            raise EvidenceError("the challenge is unknown, used or expired")
        verified = proofs.check(evidence, verifiers, context)
        if admit is not None and not admit(verified):
            raise EvidenceError("the identity is not one the tenant admits")
        subject = verified.subject[:256] if verified.subject else None
        if subject is not None and "pending_time" in verified.facts.get("identity", {}):
            await _first_use(request, verified, context)  # an AWS document: the instance enrols once
        if subject is not None:
            bound = await gw.store.device_bound_to(context.tenant_id, subject)
            # SECURITY: trust on first use. An instance's evidence (an AWS identity document is not
            # bound to our key) proves nothing for a device other than the one it enrolled.
            if bound is not None and bound != context.device_id:
                raise EvidenceError("the instance is enrolled as another device")
        if kind == "tpm":
            integrity = verified.facts["integrity"]
            await gw.store.note_tpm_counters(context.tenant_id, context.device_id or "", {
                "reset_count": integrity["reset_count"], "restart_count": integrity["restart_count"]})
    except EvidenceError as exc:
        log.info("evidence_refused", kind=kind, reason=exc.reason, device_id=context.device_id)
        return None, events.EvidenceSummary(kind=kind, verified=False, reason=exc.reason)
    return verified, events.EvidenceSummary(kind=kind, verified=True, provenance=verified.provenance, subject=subject)


async def _verifiers(request: web.Request, tenant_id: str) -> dict[str, Any]:
    """The gateway's verifiers and the clouds whose trust anchors the tenant pinned in its settings."""
    gw = _gw(request)
    tenant = await gw.operators.tenant(tenant_id)  # cached; a settings change forgets it
    anchors = ((tenant or {}).get("settings") or {}).get("cloud_identity")
    found = dict(gw.evidence)
    if anchors:
        found.update(cloud_verifiers(CloudAnchors.model_validate(anchors)))
    return found


async def _first_use(request: web.Request, verified: Verified, context: EvidenceContext) -> None:
    """An AWS document enrols its instance once; afterwards only that device may present it."""
    store = _gw(request).store.evidence
    subject = verified.subject or ""
    kept = await store.first_use(context.tenant_id, subject)
    seen = FirstUse.from_dict(kept) if kept is not None else None
    decision = check_first_use(seen, verified, device_id=context.device_id)
    if decision.allowed and decision.record is not None:
        record = decision.record.as_dict()
        stored = (await store.claim_first_use(context.tenant_id, record) if seen is None
                  else await store.advance_first_use(context.tenant_id, record))
        if stored:
            return
        decision = check_first_use(FirstUse.from_dict(await store.first_use(context.tenant_id, subject) or record),
                                   verified, device_id=context.device_id)
        if decision.allowed:
            return
    if decision.alert:
        await _gw(request).store.record_event(context.tenant_id, events.AccessDenied(
            tenant_id=context.tenant_id, correlation_id=request[CORRELATION_ID], source_ip=request.remote,
            actor=events.Actor(kind="device", id=context.device_id or "unknown", auth="evidence"),
            route=request.path, reason=f"instance identity replayed: {decision.reason}", device_id=context.device_id))
        log.warning("instance_identity_replayed", reason=decision.reason, device_id=context.device_id)
        raise FirstUseRefused(decision.reason)
    raise EvidenceError(decision.reason)
