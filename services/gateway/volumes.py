"""Volumes, pure: where a device runs (its placement), the facts a key request for a volume gives
policy, and what an attachment records and raises. No I/O.

A volume is bound to the placement of the device that registered it: the instance (and image) its
enrolment evidence proved, with that evidence's provenance, else the device itself. A later key
request for the volume compares the requesting device's placement with the bound one; a copied
disk or snapshot attached to another VM shows up as another instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared import events
from shared.events import Placement

# SECURITY: the `volume` fact root is the gateway's alone: whatever an agent claims under it is
# replaced, and everything the gateway puts there is observed.
VOLUME_ROOT = "volume"
MAX_HISTORY = 200  # attachments shown with a volume, newest first


def placement(device: Mapping[str, Any]) -> Placement:
    """Where this enrolled device runs, as its enrolment evidence proved it (else the device itself)."""
    device_id = device["device_id"]
    identity = device.get("identity") or {}
    subject = device.get("subject")
    provenance = identity.get("provenance") if identity.get("provenance") in ("attested", "cloud") else None
    if subject:
        return Placement(device_id=device_id, instance=subject, image=identity.get("image_id"),
                         provenance=provenance or "cloud")
    return Placement(device_id=device_id, instance=f"device:{device_id}", provenance="observed")


def volume_facts(record: Mapping[str, Any] | None, volume_id: str, luks_uuid: str | None, key_id: str,
                 here: Placement) -> dict[str, Any]:
    """The `volume.*` facts of a key request naming `volume_id`, as the gateway sees them."""
    facts: dict[str, Any] = {"id": volume_id, "registered": record is not None, "instance": here.instance}
    if here.image:
        facts["image"] = here.image
    if record is None:
        return facts
    bound = Placement.model_validate(record["bound"])
    facts.update({
        "key_id": record["key_id"], "key_matches": record["key_id"] == key_id,
        "bound_instance": bound.instance, "bound_device_id": bound.device_id,
        "binding_provenance": bound.provenance,
        "attached_to_bound_instance": bound.instance == here.instance,
    })
    if luks_uuid is not None:
        facts["luks_uuid_matches"] = record["luks_uuid"].lower() == luks_uuid.lower()
    if bound.image:
        facts["bound_image"] = bound.image
        if here.image:
            facts["attached_to_bound_image"] = bound.image == here.image
    return facts


def outcome_of(outcome: events.Event | None) -> str:
    """How a key request ended, in the audit log's words."""
    if isinstance(outcome, events.KeyReleased):
        return "success"
    if isinstance(outcome, events.KeyDecided):
        return {"require_approval": "pending", "deny": "denied"}.get(outcome.effect, "failure")
    return "failure"


def attachment(record: Mapping[str, Any], *, request_id: str, key_id: str, here: Placement, outcome: str, at: datetime,
               fields: dict[str, Any]) -> tuple[dict[str, Any], tuple[events.Event, ...]]:
    """The attachment document a key request for a registered volume leaves, and its events: always
    `volume.attached`, and the `volume.attached_elsewhere` alert when the instance is not the bound one."""
    bound = Placement.model_validate(record["bound"])
    at_home = bound.instance == here.instance
    attached = events.VolumeAttached(**fields, volume_id=record["volume_id"], key_id=key_id, request_id=request_id,
                                     attached=here, attached_to_bound_instance=at_home, outcome=outcome)
    raised: tuple[events.Event, ...] = (attached,)
    if not at_home:
        raised += (events.VolumeAttachedElsewhere(**fields, volume_id=record["volume_id"], key_id=key_id,
                                                  request_id=request_id, attached=here, bound=bound, outcome=outcome),)
    doc = {"volume_id": record["volume_id"], "request_id": request_id, "key_id": key_id, "at": at,
           "device_id": here.device_id, "instance": here.instance, "image": here.image,
           "provenance": here.provenance, "attached_to_bound_instance": at_home, "outcome": outcome}
    return doc, raised


def registration(existing: Mapping[str, Any] | None, *, volume_id: str, body: Mapping[str, Any], here: Placement,
                 at: datetime) -> tuple[dict[str, Any], str | None]:
    """The volume document a registration writes, or the reason it is refused (a 409)."""
    if existing is not None and existing["bound"]["device_id"] != here.device_id:
        return {}, "this volume is bound to another device; only that device may re-bind it"
    doc = {"volume_id": volume_id, "luks_uuid": body["luks_uuid"].lower(), "key_id": body["key_id"],
           "key_version": body["key_version"], "device_path": body["device"], "bound": here.model_dump(),
           "registered_at": existing["registered_at"] if existing else at, "bound_at": at}
    return doc, None


def public_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A volume as operators and its agent see it (store fields dropped)."""
    keys = ("volume_id", "luks_uuid", "key_id", "key_version", "device_path", "bound", "registered_at", "bound_at",
            "last_unlock", "recovery_escrowed")
    return {k: doc[k] for k in keys if doc.get(k) is not None}


def attachment_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("request_id", "key_id", "at", "device_id", "instance", "image", "provenance", "attached_to_bound_instance",
            "outcome")
    return {k: doc[k] for k in keys if doc.get(k) is not None}
