"""What a device calls to register its TPM: its EK and AK, then the answer to MakeCredential.

1. ``POST /v1/agent/tpm/enrol`` (signed): the EK and AK public areas (and the EK certificate, if
   any). The gateway checks the AK is a restricted signing key fixed to its TPM and the EK a
   restricted decryption key, seals a fresh secret to them and keeps only its digest, for
   ``challenge_ttl_seconds``, for this device.
2. ``POST /v1/agent/tpm/activate`` (signed): the secret ActivateCredential recovered. Right, and
   the AK is registered with the device (``device.tpm_registered``, audited); wrong or late, and
   the pending activation is gone all the same.

From then on the device's key requests and heartbeats may carry a quote (``evidence/tpm_request.py``).
"""

from __future__ import annotations

import base64
from datetime import timedelta

from aiohttp import web
from pydantic import Field

from shared import events
from shared.commands import Strict
from shared.rpc import ProblemError

from .evidence.base import EvidenceError
from .evidence.tpm import subject_of
from .evidence.tpm_enrol import activation_succeeded, attestation_key, begin_activation, endorsement_key
from .state import CORRELATION_ID, _gw, _json, _now, _principal, body_as

_B64 = r"^[A-Za-z0-9+/]*={0,2}$"


class TpmEnrolBody(Strict):
    ek_public: str = Field(min_length=4, max_length=2048, pattern=_B64, description="EK TPM2B_PUBLIC, base64")
    ak_public: str = Field(min_length=4, max_length=2048, pattern=_B64, description="AK TPM2B_PUBLIC, base64")
    ek_certificate: str | None = Field(default=None, max_length=8192, pattern=_B64, description="EK certificate, DER base64")


class TpmActivateBody(Strict):
    activation_id: str = Field(pattern=r"^act_[0-9a-f]{32}$")
    secret: str = Field(min_length=4, max_length=256, pattern=_B64, description="what ActivateCredential returned, base64")


def _bytes(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ProblemError(422, "Unprocessable Content", f"{field} must be base64", field) from None


async def tpm_enrol(request: web.Request) -> web.Response:
    """Agent (signed): begin registering its TPM; answers the credential to activate."""
    gw, principal = _gw(request), _principal(request)
    body = await body_as(request, TpmEnrolBody)
    ek, ak = _bytes(body.ek_public, "ek_public"), _bytes(body.ak_public, "ak_public")
    for name, public, check in (("ak_public", ak, attestation_key), ("ek_public", ek, endorsement_key)):
        try:
            check(public)
        except EvidenceError as exc:
            raise ProblemError(422, "Unprocessable Content", exc.reason, name) from None
        except Exception:  # a parser choking on hostile input: the key is unusable, never a 500
            raise ProblemError(422, "Unprocessable Content", "malformed TPM public area", name) from None
    activation = begin_activation(ek, ak)
    activation_id = events.new_id("act_")
    expires_at = _now() + timedelta(seconds=gw.settings.challenge_ttl_seconds)
    await gw.store.evidence.insert_activation(principal.tenant_id, {
        "activation_id": activation_id, "device_id": principal.id, "secret_digest": activation.secret_digest.hex(),
        "ak_public": body.ak_public, "ek_certified": activation.ek_certified, "expires_at": expires_at})
    return _json({"activation_id": activation_id, "credential": activation.credential.to_json(),
                  "expires_at": expires_at}, 201)


async def tpm_activate(request: web.Request) -> web.Response:
    """Agent (signed): the recovered secret; right, and the AK is the device's from now on."""
    gw, principal = _gw(request), _principal(request)
    body = await body_as(request, TpmActivateBody)
    pending = await gw.store.evidence.take_activation(principal.tenant_id, body.activation_id, device_id=principal.id,
                                                      now=_now())
    if pending is None:
        raise ProblemError(404, "Not Found", "no such pending TPM activation (used or expired)", "activation_id")
    if not activation_succeeded(bytes.fromhex(pending["secret_digest"]), _bytes(body.secret, "secret")):
        raise ProblemError(403, "Forbidden", "the credential was not activated by the TPM holding the EK", "secret")
    subject = subject_of(attestation_key(base64.b64decode(pending["ak_public"])))
    event = events.DeviceTpmRegistered(
        tenant_id=principal.tenant_id, actor=principal.actor, correlation_id=request[CORRELATION_ID],
        source_ip=request.remote, device_id=principal.id, ak_subject=subject, ek_certified=pending["ek_certified"])
    tpm = {"ak_public": pending["ak_public"], "subject": subject, "counters": None}
    if not await gw.store.register_tpm(principal.tenant_id, principal.id, tpm, event):
        raise ProblemError(409, "Conflict", "the device is not active", "activation_id")
    return _json({"device_id": principal.id, "ak_subject": subject})
