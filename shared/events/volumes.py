"""Events of LUKS2 volumes: registration, attachments (and the alert when one is attached to another
instance than the one it was bound on), and the escrow and break-glass release of their recovery
passphrases. No event carries a passphrase, sealed or not."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from .base import Event


class Placement(BaseModel):
    """Where a device runs, as far as the gateway knows it: the instance and image its enrolment
    evidence proved (with that provenance), else only the device itself (observed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    device_id: str
    instance: str  # "aws:<account>/<instance>" and the like, or "device:<device id>"
    image: str | None = None
    provenance: Literal["attested", "cloud", "observed"] = "observed"


class VolumeRegistered(Event):
    """A device formatted or (re-)bound a volume under a key: it is bound to that device's instance."""

    type: Literal["volume.registered"] = "volume.registered"
    volume_id: str
    luks_uuid: str
    key_id: str
    key_version: int
    device_path: str
    bound: Placement
    rebound: bool = False


class VolumeAttached(Event):
    """A key request named this volume: where it was attached and how the request ended."""

    type: Literal["volume.attached"] = "volume.attached"
    volume_id: str
    key_id: str
    request_id: str
    attached: Placement
    attached_to_bound_instance: bool
    outcome: Literal["success", "denied", "pending", "failure"]


class VolumeAttachedElsewhere(Event):
    """Alert: a volume's key was asked for from another instance than the one it was bound on
    (a copied disk or snapshot attached to someone else's VM)."""

    type: Literal["volume.attached_elsewhere"] = "volume.attached_elsewhere"
    volume_id: str
    key_id: str
    request_id: str
    attached: Placement
    bound: Placement
    outcome: Literal["success", "denied", "pending", "failure"]


class VolumeRecoveryEscrowed(Event):
    """keysvc holds the volume's recovery passphrase, wrapped under the tenant KEK."""

    type: Literal["volume.recovery_escrowed"] = "volume.recovery_escrowed"
    volume_id: str
    device_id: str
    replaced: bool = False


class VolumeRecoveryReleased(Event):
    """Break-glass: after an approval, the passphrase went to the requester, sealed to their one-time key."""

    type: Literal["volume.recovery_released"] = "volume.recovery_released"
    volume_id: str
    request_id: str
    approval_id: str
    approvers: tuple[str, ...]
    recipient_fingerprint: str  # SHA-256 of the one-time public key
