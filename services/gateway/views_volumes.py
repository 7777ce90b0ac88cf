"""Volumes: what an agent registers and escrows, what a key request for a volume adds to its facts
and leaves in the volume's attachment history, and what operators list, show and recover.

The registry lives here because a volume is bound to where a device runs, which only the gateway
knows (enrolment evidence, the authenticated device). The recovery passphrase never does: the
agent seals it to keysvc, and keysvc releases it sealed to the requesting operator's one-time key
once policysvc's approval holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import Field

from shared import commands, events
from shared import commands_volumes as cv
from shared.events import Placement
from shared.rpc import NotFound, ProblemError

from . import volumes as domain
from .evidence.base import Merged
from .state import _call, _event_fields, _gw, _json, _now, _principal, _query, body_as


class VolumeQuery(commands.ListQuery):
    history: int = Field(default=50, ge=0, le=domain.MAX_HISTORY)


@dataclass(frozen=True)
class VolumeContext:
    """A key request's volume: what it named, the registry's record, and where the device runs."""

    ref: cv.VolumeRef
    record: dict[str, Any] | None
    here: Placement
    facts: dict[str, Any]


async def _device_placement(request: web.Request) -> Placement:
    principal = _principal(request)
    device = await _gw(request).store.device(principal.tenant_id, principal.id)
    if device is None:
        raise ProblemError(401, "Unauthorized", "missing or invalid credentials")
    return domain.placement(device)


async def _own_volume(request: web.Request) -> dict[str, Any]:
    """The volume in the path, bound to the calling device (another device's volumes do not exist for it)."""
    principal = _principal(request)
    record = await _gw(request).store.volumes.volume(principal.tenant_id, request.match_info["volume_id"])
    if record is None or record["bound"]["device_id"] != principal.id:
        raise NotFound("volume", "volume_id")
    return record


async def register(request: web.Request) -> web.Response:
    """Agent: register (or re-bind) a volume it formatted or bound; it is bound to this device's instance."""
    gw, principal = _gw(request), _principal(request)
    body = await body_as(request, cv.RegisterVolume)
    here = await _device_placement(request)
    volumes = gw.store.volumes
    volume_id = body.volume_id or events.new_id("vol_")
    existing = await volumes.volume(principal.tenant_id, volume_id) if body.volume_id else None
    same_uuid = await volumes.volume_with_uuid(principal.tenant_id, body.luks_uuid.lower())
    if same_uuid is not None and same_uuid["volume_id"] != volume_id:
        raise ProblemError(409, "Conflict", "another volume has this LUKS UUID", "luks_uuid")
    doc, refused = domain.registration(existing, volume_id=volume_id, body=body.model_dump(), here=here, at=_now())
    if refused:
        raise ProblemError(409, "Conflict", refused, "volume_id")
    await _call(request, "keysvc", "get_key", {"key_id": body.key_id})  # 404 naming key_id if there is none
    event = events.VolumeRegistered(
        **_event_fields(request), volume_id=volume_id, luks_uuid=doc["luks_uuid"], key_id=body.key_id,
        key_version=body.key_version, device_path=body.device, bound=here, rebound=existing is not None)
    if not await volumes.register(principal.tenant_id, doc, event, existing=existing is not None):
        raise ProblemError(409, "Conflict", "the volume changed concurrently or its LUKS UUID is taken", "volume_id")
    return _json(domain.public_view({**(existing or {}), **doc}), 201)


async def escrow_key(request: web.Request) -> web.Response:
    """Agent: keysvc's single-use key to seal this volume's recovery passphrase to."""
    record = await _own_volume(request)
    return _json(await _call(request, "keysvc", "volume_escrow_key",
                             {"volume_id": record["volume_id"], "device_id": _principal(request).id}), 201)


async def escrow(request: web.Request) -> web.Response:
    """Agent: the recovery passphrase, sealed to that key; keysvc opens it and keeps it under the tenant KEK."""
    record = await _own_volume(request)
    body = await body_as(request, cv.EscrowRecovery)
    principal = _principal(request)
    out = await _call(request, "keysvc", "volume_escrow", {**body.model_dump(), "volume_id": record["volume_id"],
                                                           "device_id": principal.id})
    await _gw(request).store.volumes.note_escrow(principal.tenant_id, record["volume_id"], _now())
    return _json(out, 201)


# --- key requests for a volume ------------------------------------------------------------


async def volume_context(request: web.Request, ref: cv.VolumeRef | None, key_id: str) -> VolumeContext | None:
    """What a key request naming `ref` adds to its facts; None when it names no volume."""
    if ref is None:
        return None
    record = await _gw(request).store.volumes.volume(_principal(request).tenant_id, ref.volume_id)
    here = await _device_placement(request)
    return VolumeContext(ref, record, here, domain.volume_facts(record, ref.volume_id, ref.luks_uuid, key_id, here))


def with_volume(merged: Merged, context: VolumeContext | None) -> Merged:
    """`merged` with the gateway's `volume.*` facts (observed), replacing anything the agent put there."""
    facts = {k: v for k, v in merged.facts.items() if k != domain.VOLUME_ROOT}
    provenance = {p: v for p, v in merged.provenance.items()
                  if p != domain.VOLUME_ROOT and not p.startswith((domain.VOLUME_ROOT + ".", domain.VOLUME_ROOT + "["))}
    if context is not None:
        facts[domain.VOLUME_ROOT] = context.facts
        provenance[domain.VOLUME_ROOT] = "observed"
    return Merged(facts, provenance, merged.contradicted)


async def record_attachment(request: web.Request, context: VolumeContext | None, *, request_id: str, key_id: str,
                            outcome: events.Event | None) -> None:
    """A registered volume's attachment, with `volume.attached` and, from another instance, the alert."""
    if context is None or context.record is None:
        return
    doc, raised = domain.attachment(context.record, request_id=request_id, key_id=key_id, here=context.here,
                                    outcome=domain.outcome_of(outcome), at=_now(), fields=_event_fields(request))
    await _gw(request).store.volumes.record_attachment(_principal(request).tenant_id, doc, *raised)


# --- operators ------------------------------------------------------------------------------


async def list_volumes(request: web.Request) -> web.Response:
    query = _query(request, commands.ListQuery)
    docs = await _gw(request).store.volumes.list_volumes(_principal(request).tenant_id, limit=query.limit,
                                                          after=query.after)
    more = len(docs) == query.limit
    return _json({"items": [domain.public_view(d) for d in docs], "next": docs[-1]["volume_id"] if more else None})


async def _volume(request: web.Request) -> dict[str, Any]:
    record = await _gw(request).store.volumes.volume(_principal(request).tenant_id, request.match_info["volume_id"])
    if record is None:
        raise NotFound("volume", "volume_id")
    return record


async def get_volume(request: web.Request) -> web.Response:
    """A volume with its binding, last unlock and attachment history, newest first."""
    query = _query(request, VolumeQuery)
    record = await _volume(request)
    history = await _gw(request).store.volumes.attachments_of(_principal(request).tenant_id, record["volume_id"],
                                                              limit=query.history)
    return _json({**domain.public_view(record), "attachments": [domain.attachment_view(a) for a in history]})


async def request_recovery(request: web.Request) -> web.Response:
    """Break-glass: ask for a volume's recovery passphrase; two other people must approve."""
    record = await _volume(request)
    body = await body_as(request, cv.RecoveryRequest)
    if not record.get("recovery_escrowed"):
        raise ProblemError(409, "Conflict", "no recovery passphrase is escrowed for this volume", "volume_id")
    approval = await _call(request, "policysvc", "open_recovery_approval", {
        "volume_id": record["volume_id"], "key_id": record["key_id"], "device_id": record["bound"]["device_id"],
        "public_key": body.public_key, "reason": body.reason})
    return _json(_recovery_view(approval, record["volume_id"]), 201)


def _recovery_view(approval: dict[str, Any], volume_id: str) -> dict[str, Any]:
    keys = ("request_id", "approval_id", "status", "approvals_required", "approvals_received", "expires_at")
    return {"volume_id": volume_id, **{k: approval[k] for k in keys}}


async def recovery_status(request: web.Request) -> web.Response:
    """The requester's view of their break-glass request: pending, approved, denied or expired."""
    record = await _volume(request)
    state = await _call(request, "policysvc", "recovery_approval",
                        {"volume_id": record["volume_id"], "request_id": request.match_info["request_id"]})
    if state["requested_by"] != _principal(request).id:
        raise NotFound("recovery request", "request_id")
    return _json(_recovery_view(state, record["volume_id"]))


async def collect_recovery(request: web.Request) -> web.Response:
    """Once approved, the requester collects the passphrase sealed to their one-time key (once)."""
    record = await _volume(request)
    return _json(await _call(request, "keysvc", "volume_recovery_release",
                             {"volume_id": record["volume_id"], "request_id": request.match_info["request_id"]}))
